"""One CPU as an agent of the time synchronization (emu.timesync): its scheduler loop, and
the hooks through which its kernel reaches the other agents.

The loop is the one a CPU runs: take the interrupts that are due, run the next task for a
slice, and when nothing is runnable, idle until the next interrupt. Every step happens at
the CPU's own emulated time (cpus.kernel.Cpu charges the cost table) and only once the
synchronization allows it: before the kernel reads or writes state another agent shares
(a backlog, a socket, an RX ring, another CPU's flags) it calls ``sd.sync()``, which
returns once no effect of another agent can still reach this CPU at that time.

What crosses to another agent carries the time it takes effect: an RPS or reschedule IPI
takes effect lat_ipi after it is sent, the driver's unmask of a queue reaches the NIC
lat_mmio after the write and the NIC's interrupt lat_msi after it fires, a backlog or
socket entry is seen by another CPU lat_cacheline after it is queued (cpus.backlog,
cpus.sock stamp them).

Pure logic: the Sync's port decides whether this runs in a process of its own
(cpus/process.py) or as one of several agents in one process (emu.inproc).
"""

from __future__ import annotations

import heapq
from typing import Callable

from emu.coalesce import irq_time_ring
from emu.counters import C
from emu.ring import (CONS, PROD, RX_FRONTIER, RX_IRQS, RX_NIC_WAITS, RX_READ_AT, RX_SETTLED,
                      RX_UNMASK_AT, RX_UNMASK_GEN, USER0, rx_written_by)
from emu.skb import SKB
from emu.timesync import INF, IPI_RES, IPI_RPS, IRQ, WAIT_ON, Stopped, full_fence

from .kernel import Cpu

_NOW = int(C.NOW)
_LOOPS = int(C.LOOPS)
_LATE_MSGS = int(C.LATE_MSGS)

_SKB_TS = SKB.fields["ts"][1]        # byte offset of an RX slot's arrival stamp


def _noop() -> None:
    return None


class CpuAgent:
    def __init__(self, cpu: Cpu, sync, rings, rx_usecs: int, rx_frames: int):
        self.cpu = cpu
        self.time = cpu.time
        self.counters = cpu.counters
        self.sync = sync
        self.rings = rings
        costs = cpu.net.costs
        self.lat_ipi = costs.lat_ipi
        self.lat_mmio, self.lat_msi = costs.lat_mmio, costs.lat_msi
        self.rx_usecs, self.rx_frames = int(rx_usecs), int(rx_frames)
        self.rx_ring = cpu.net.knobs.rx_ring
        sd = cpu.sd
        sd.sync = self.sync_now
        sd.sync_readers = self.sync_readers
        # The user task's reads and its run state are data this CPU owns: other CPUs touch
        # them only from NET_RX (enqueue, try_to_wake_up). With RFS on, its recvmsg also
        # writes the flow table every CPU shares.
        cpu.app.sync = self.sync_now if cpu.net.rfs else self.sync_owned
        sd.frames_ready = self.frames_ready
        sd.rx_consumed = self.rx_consumed
        sd.unmask_irq = self.unmask_irq
        sd.send_ipi = self.send_ipi
        cpu.tasks.wake_remote = self.wake_remote
        cpu.tasks.sync = self.sync_owned
        cpu.tasks.sync_readers = self.sync_readers
        cpu.set_irq_point(self.irq_point)
        sync.frames_check = self.frames_check
        # A CPU sends messages (RPS IPIs, remote wake-ups) only from NET_RX: with no softirq
        # pending or running it sends none before it takes an interrupt or IPI, and then
        # not before that handler's cost and the softirq entry are charged.
        softirq = cpu.softirq
        sync.quiet = lambda: not (softirq.pending or softirq.serving or self.time.in_hardirq
                                  or sd.rps_ipi_list)
        sync.react = min(costs.hardirq, costs.ipi) + costs.softirq_entry
        self.tick: Callable[[], None] = _noop          # the shell's hook, once per turn

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        """Run until the run's end (STOP_AT), or until the run is stopped at once."""
        sync, time, cpu, counters = self.sync, self.time, self.cpu, self.counters
        try:
            while True:
                stop_at = sync.stop_at()
                if time.t >= stop_at:
                    break
                if sync.stopped:
                    raise Stopped()
                self.tick()
                sync.pace(time.t)
                self.irq_point()
                ran = cpu.schedule()
                counters[_NOW] = time.t
                counters[_LOOPS] += 1
                if not ran:
                    t = sync.wait_idle(stop_at)
                    sync.pace(t)        # idle time too: paced, emulated time never runs ahead
                    time.idle_until(t)
        except Stopped:
            stopped = True              # at once: each CPU ends where it got to
        else:
            stopped = False
        end = sync.stop_at()
        if not stopped and time.t < end < INF:
            try:
                sync.pace(end)
            except Stopped:
                pass
            time.idle_until(end)
        counters[_NOW] = time.t
        counters[_LATE_MSGS] = sync.late_msgs
        sync.finish()

    def sync_readers(self, mask: int) -> None:
        if mask:
            self.sync.until_readers(self.time.t, mask)
        else:                   # data every CPU touches only from NET_RX: the owner's horizon
            self.sync.until_owned(self.time.t)

    def sync_owned(self) -> None:
        self.sync.until_owned(self.time.t)

    def sync_now(self) -> None:
        self.sync.until(self.time.t)

    def irq_point(self) -> None:
        """Take the interrupts due now (interrupts are enabled here)."""
        sync, time, cpu = self.sync, self.time, self.cpu
        sync.until_msgs(time.t)
        heap = sync.heap
        while heap and heap[0][0] <= time.t:
            _te, _seq, kind, arg, _src = heapq.heappop(heap)
            if kind == IRQ:
                cpu.hardirq(arg)
            elif kind == IPI_RPS:
                cpu.ipi_rps()
            elif kind == IPI_RES:
                cpu.ipi_resched()
            sync.until_msgs(time.t)

    # -- to other CPUs ---------------------------------------------------------------------
    def send_ipi(self, target: int) -> None:
        """The RPS IPI (smp_call_function_single_async), taken lat_ipi later."""
        self.sync.send(target, IPI_RPS, self.time.t + self.lat_ipi, self.cpu.id)

    def wake_remote(self, target: int) -> None:
        """The reschedule IPI of a remote try_to_wake_up."""
        self.sync.send(target, IPI_RES, self.time.t + self.lat_ipi, self.cpu.id)

    # -- the RX rings and the NIC ----------------------------------------------------------
    def frames_check(self, q: int, t: int) -> bool:
        return rx_written_by(self.rings[q], t)

    def frames_ready(self, q: int, t: int) -> bool:
        """True once every frame of queue q arriving by t is in the slots; False if the
        slots are full first (the driver then frees some)."""
        hdr = self.rings[q].hdr
        if int(hdr[USER0 + RX_FRONTIER]) >= t:
            return True
        self.sync.wait_frames(q, t)
        return int(hdr[USER0 + RX_FRONTIER]) >= t

    def rx_consumed(self, q: int) -> None:
        """The driver released slots of queue q: wake the NIC if it waits for room."""
        hdr = self.rings[q].hdr
        full_fence()                         # the consumer index, then the NIC's flag
        if hdr[USER0 + RX_NIC_WAITS]:
            sb = self.sync.sb
            self.sync.port.wake(sb.nic)

    def unmask_irq(self, q: int, read_at: int) -> None:
        """EIMS after napi_complete_done: the NIC may interrupt again. The NIC sees the
        write lat_mmio later, and its interrupt takes effect lat_msi after it fires.

        When the frames that decide the interrupt already in the slots (the NIC writes
        ahead), this CPU applies the NIC's moderation rule to them itself (emu.coalesce):
        the interrupt goes straight into its own event heap, and the NIC, seeing the unmask
        settled, sends nothing. Otherwise the NIC settles it when its frames exist, and
        until then the queue's bound in the sync block says how early it could come."""
        ring = self.rings[q]
        hdr = ring.hdr
        u = self.time.t
        gen = int(hdr[USER0 + RX_UNMASK_GEN]) + 1
        hdr[USER0 + RX_UNMASK_AT] = u
        hdr[USER0 + RX_READ_AT] = read_at
        T = self._settle(ring, u + self.lat_mmio, read_at)
        if T is not None:
            hdr[USER0 + RX_SETTLED] = gen
            hdr[USER0 + RX_IRQS] += 1
            self.sync.expect_own(T + self.lat_msi, IRQ, q)
            hdr[USER0 + RX_UNMASK_GEN] = gen
            return
        self.sync.expect_irq(q, u + self.lat_mmio + self.lat_msi)
        hdr[USER0 + RX_UNMASK_GEN] = gen
        full_fence()
        sb = self.sync.sb
        if sb.agents[sb.nic, WAIT_ON]:
            self.sync.port.wake(sb.nic)

    def _settle(self, ring, armed_at: int, read_at: int):
        """The interrupt's time from the frames already written, or None."""
        hdr = ring.hdr
        # The frontier first, then the producer index: the NIC writes the slots, then PROD,
        # then the frontier, so every arrival up to this frontier is in the slots read next.
        frontier = int(hdr[USER0 + RX_FRONTIER])
        full_fence()
        cons, prod = int(hdr[CONS]), int(hdr[PROD])
        # Every written slot: the first ones may be frames judged and dropped before the
        # read time (kept until compaction), so a prefix could miss the arrivals that
        # decide it while the frontier claims they are known.
        ok, T, _lb = irq_time_ring(ring.raw, cons, prod, _SKB_TS, armed_at, read_at, frontier,
                                   self.rx_usecs, self.rx_frames, self.rx_ring)
        return T if ok else None
