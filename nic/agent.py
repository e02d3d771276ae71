"""The NIC as an agent of the time synchronization: it writes frames ahead, and raises each
RX queue's interrupt at the time coalescing gives it.

Arrivals do not depend on the CPUs, so the NIC generates them ahead of the CPUs' time, in
fixed steps of emulated time from 0 (a Poisson source draws per step, so the same steps give
the same frames however the processes are scheduled), and writes them, stamped, into the
RX rings' slots; each ring's frontier says up to when its frames are all there. Frames that
do not fit wait in the NIC until the driver frees slots. Whether a frame finds a free
descriptor is the driver's call at the frame's time (cpus.driver.rx_take).

What the NIC does depend on is the driver's unmask of a queue (EIMS after
napi_complete_done, in the ring header). Each unmask arms the vector; the NIC computes when
it fires from the queue's arrivals (emu.coalesce.irq_time), sends the interrupt stamped
with the time it takes effect (that plus lat_msi), and meanwhile raises the queue's bound in
the sync block as far as the frames generated so far allow, so the CPU is held back no more
than it must be. When the frames that decide it are already written, the CPU that unmasks
evaluates the same rule on them itself and the NIC has nothing to do (cpus.agent).

Pure logic over rings, the sync block and a Sync: nic/process.py binds it to a process.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

import numpy as np

from emu.coalesce import check, irq_time
from emu.counters import N
from emu.ring import (CONS, PROD, RX_FRONTIER, RX_IRQS, RX_NIC_WAITS, RX_READ_AT, RX_SETTLED,
                      RX_UNMASK_AT, RX_UNMASK_GEN, USER0, rx_written_by)
from emu.syncblock import TRAFFIC_END
from emu.timesync import (FINISHED, FRAMES_Q, INF, IRQ, PUB, STATE, THRESH, VIA, Stopped,
                          busy, full_fence, idle, nic_bound, waiting_for)

from .dma import generate

STEP_NS = 50_000            # emulated ns of arrivals generated at a time
AHEAD_NS = 2_000_000        # generate no further ahead of the furthest busy CPU than this


def _noop() -> None:
    return None


class NicAgent:
    def __init__(self, sources, rings, sync, counters: np.ndarray, qtarget, rx_usecs: int,
                 rx_frames: int, rx_ring: int, lat_mmio: int, lat_msi: int, end_ns: int,
                 step_ns: int = STEP_NS):
        check(rx_usecs, rx_frames)
        self.sources = sources
        self.rings = rings
        self.sync = sync
        self.sb = sync.sb
        self.c = counters
        self.qtarget = [int(x) for x in qtarget]
        self.rx_usecs, self.rx_frames, self.rx_ring = int(rx_usecs), int(rx_frames), int(rx_ring)
        self.lat_mmio, self.lat_msi = int(lat_mmio), int(lat_msi)
        self.end = int(end_ns)
        self.step_ns = int(step_ns)
        nq_ = len(rings)
        self.buf = [deque() for _ in range(nq_)]      # generated, not yet in the slots
        self.nbuf = [0] * nq_
        self.arr = [np.zeros(0, dtype=np.uint64) for _ in range(nq_)]
        self.armed: list = [(0, 0)] * nq_              # (seen at, read_at); None: masked
        self.seen = [0] * nq_
        self.G = 0                                     # every arrival <= G is generated
        self.seq = 0
        self.buf_limit = max(4096, 2 * self.rx_ring * nq_)
        self.tick: Callable[[], None] = _noop          # the shell's hook, once per turn

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        """Until every CPU has finished (or the run is stopped at once)."""
        try:
            while not self.cpus_finished():
                if self.sync.stopped:
                    raise Stopped()
                self.tick()
                if not self.step():
                    self.sync.block(self.sb.nic, 0, self.G, 0, self.has_work)
                    for ring in self.rings:
                        ring.hdr[USER0 + RX_NIC_WAITS] = 0
        except Stopped:
            pass
        self.sync.finish()

    def cpus_finished(self) -> bool:
        return bool(np.all(self.sb.agents[:self.sb.ncpus, STATE] == FINISHED))

    def step(self) -> bool:
        """One turn: read unmasks, write what fits, settle interrupts, generate; True if
        anything moved."""
        moved = False
        for q, ring in enumerate(self.rings):
            hdr = ring.hdr
            gen = int(hdr[USER0 + RX_UNMASK_GEN])
            if gen != self.seen[q]:
                self.seen[q] = gen
                read_at = int(hdr[USER0 + RX_READ_AT])
                a = self.arr[q]
                self.arr[q] = a[a > read_at]
                # The driver's CPU may have settled this one itself, from the frames written.
                # A later one it settled means this one too: the driver could not have
                # unmasked again without this one's interrupt, which the NIC never sent.
                settled = int(hdr[USER0 + RX_SETTLED]) >= gen
                self.armed[q] = (None if settled else
                                 (int(hdr[USER0 + RX_UNMASK_AT]) + self.lat_mmio, read_at))
                moved = True
            if self.nbuf[q]:
                moved |= self._write(q)
        for q in range(len(self.rings)):
            if self.armed[q] is not None:
                moved |= self._settle(q)
        if self.G < INF and self._need_more():
            self._generate()
            moved = True
            for q in range(len(self.rings)):
                if self.nbuf[q]:
                    self._write(q)
                if self.armed[q] is not None:
                    self._settle(q)
        for q, ring in enumerate(self.rings):
            fr = self.G if not self.nbuf[q] else int(self.buf[q][0]["ts"][0]) - 1
            if fr > INF:
                fr = INF
            if int(ring.hdr[USER0 + RX_FRONTIER]) != fr:
                ring.hdr[USER0 + RX_FRONTIER] = fr
        self._wake_waiters()
        # Observers read the NIC's PUB (its generation frontier; idle once it has nothing
        # left to do); no CPU waits on it (they wait on the NIC's frontiers and bounds).
        done = self.G >= INF and not any(self.nbuf) and all(a is None for a in self.armed)
        self.sb.agents[self.sb.nic, PUB] = idle(INF) if done else busy(min(self.G, INF))
        self.c[N.NOW] = min(self.G, INF)
        self.c[N.LOOPS] += 1
        return moved

    # -- frames ----------------------------------------------------------------------------
    def _generate(self) -> None:
        # Ctrl-C may end the traffic early (TRAFFIC_END); what is generated stays generated.
        end = min(self.end, int(self.sb.glob[TRAFFIC_END]))
        if self.G >= end:
            self.G = INF
            return
        t_to = min(self.G + self.step_ns, end)
        out, self.seq = generate(self.sources, self.G, t_to, self.seq, len(self.rings), self.c)
        for q, b in enumerate(out):
            if b is None:
                continue
            self.buf[q].append(b)
            self.nbuf[q] += len(b)
            self.arr[q] = np.concatenate((self.arr[q], b["ts"]))
        self.G = t_to if t_to < end else INF
        self.c[N.BUFFERED] = sum(self.nbuf)

    def _write(self, q: int) -> bool:
        ring = self.rings[q]
        buf = self.buf[q]
        wrote = 0
        while buf:
            b = buf[0]
            n = ring.push(b)
            wrote += n
            if n < len(b):
                if n:
                    buf[0] = b[n:]
                break
            buf.popleft()
        if wrote:
            self.nbuf[q] -= wrote
            self.c[N.BUFFERED] = sum(self.nbuf)
        return wrote > 0

    def _need_more(self) -> bool:
        """Generate further: the slots can take more, an armed queue's interrupt needs later
        arrivals to be settled, or a CPU waits for frames not generated yet."""
        if self._room_ahead():
            return True
        if any(a is not None for a in self.armed):
            return True
        return self._cpu_needs_frames()

    def _room_ahead(self) -> bool:
        """Generate on its own: the buffer has room and generation is less than AHEAD_NS
        past the furthest busy CPU. That keeps the frames written ahead (and the drain
        after a Ctrl-C) short; a CPU that gets to the frontier wakes the NIC, which then
        generates AHEAD_NS further at once."""
        if sum(self.nbuf) >= self.buf_limit:
            return False
        pub = self.sb.agents[:self.sb.ncpus, PUB]
        busy_t = [int(v) >> 1 for v in pub if not int(v) & 1]
        return not busy_t or self.G < max(busy_t) + AHEAD_NS

    def _cpu_needs_frames(self) -> bool:
        mask = waiting_for(self.sb.agents, self.sb.nic)
        w = 0
        while mask:
            if mask & 1 and w < self.sb.ncpus:
                a = self.sb.agents[w]
                if int(a[FRAMES_Q]) and int(a[THRESH]) > self.G:
                    return True
            mask >>= 1
            w += 1
        return False

    # -- interrupts ------------------------------------------------------------------------
    def _settle(self, q: int) -> bool:
        """Send queue q's interrupt if its time is settled, else raise its bound."""
        armed_at, read_at = self.armed[q]
        T, lb = irq_time(armed_at, read_at, self.arr[q], self.G, self.rx_usecs,
                         self.rx_frames, self.rx_ring)
        qbound = self.sb.qbound
        if T is None:
            if self.G >= INF:                   # no frame will ever come: no interrupt
                qbound[q] = INF
                self.armed[q] = None
                return True
            b = min(lb + self.lat_msi, INF)
            if b > int(qbound[q]):
                qbound[q] = b
            return False
        te = T + self.lat_msi
        qbound[q] = te
        self.armed[q] = None
        self.rings[q].hdr[USER0 + RX_IRQS] += 1
        self.sync.send(self.qtarget[q], IRQ, te, q)
        return True

    # -- waking and waiting ----------------------------------------------------------------
    def _wake_waiters(self) -> None:
        """Wake each CPU waiting for the NIC whose condition now holds."""
        sb = self.sb
        mask = waiting_for(sb.agents, sb.nic)
        w = 0
        while mask:
            if mask & 1 and w < sb.ncpus:
                a = sb.agents[w]
                fq = int(a[FRAMES_Q])
                need = int(a[THRESH])
                if fq:
                    ok = rx_written_by(self.rings[fq - 1], need)
                else:
                    via = int(a[VIA]) - 1
                    ok = int(nic_bound(sb.qbound, sb.qtarget, via if via >= 0 else w)) >= need
                if ok:
                    self.sync.port.wake(w)
            mask >>= 1
            w += 1

    def has_work(self) -> bool:
        """Checked after registering as waiting: anything a turn would move."""
        for q, ring in enumerate(self.rings):
            hdr = ring.hdr
            if int(hdr[USER0 + RX_UNMASK_GEN]) != self.seen[q]:
                return True
            if self.nbuf[q]:
                hdr[USER0 + RX_NIC_WAITS] = 1
            else:
                hdr[USER0 + RX_NIC_WAITS] = 0
        full_fence()                         # the flags, then the CPUs' consumer indexes
        for q, ring in enumerate(self.rings):
            if self.nbuf[q] and int(ring.hdr[PROD]) - int(ring.hdr[CONS]) < ring.capacity:
                return True
        if self.G < INF and (self._room_ahead() or self._cpu_needs_frames()):
            return True
        if self.cpus_finished():
            return True
        sb = self.sb
        mask = waiting_for(sb.agents, sb.nic)
        w = 0
        while mask:
            if mask & 1 and w < sb.ncpus and not int(sb.agents[w, FRAMES_Q]):
                # a CPU held back by a queue's bound: settle it if the arrivals allow
                via = int(sb.agents[w, VIA]) - 1
                c = via if via >= 0 else w
                if any(self.armed[q] is not None and self.qtarget[q] == c
                       for q in range(len(self.rings))) and self.G < INF:
                    return True
            mask >>= 1
            w += 1
        return False
