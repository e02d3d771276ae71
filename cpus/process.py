"""The CPU process: binds one cpus.kernel.Cpu to shared memory, ZeroMQ and real time.

Startup steps after emu.child.entry (which named the process and opened the control
channel), in order: load the kernels, attach the segment, bind the inbox and connect the
peers, say READY and wait for START (which carries t0), build the Cpu on the dilated clock,
run the scheduler loop until STOP, say STOPPED, wait for EXIT.
"""

from __future__ import annotations

import os
import time

import zmq
from setproctitle import setproctitle

from emu import atomic, jit
from emu.child import Control
from emu.clock import CpuTime, DilatedClock
from emu.config import Config
from emu.counters import T0, C
from emu.protocol import Msg, endpoint, pack, unpack
from emu.shm import Layout, Segment, Views

from .host import attach
from .kernel import Cpu

IDLE_POLL_MS = 2          # how long an idle CPU blocks on its inbox before re-checking
SLACK_REAL_NS = 300_000   # how far (real ns) a CPU may run ahead of the clock before sleeping
CTL_EVERY_NS = 20_000_000  # real ns between looks at the control channel while busy


def _sleep_until(clock: DilatedClock):
    def wait(t_emulated: int) -> None:
        real = clock.real_ns(t_emulated - clock.now())
        if real > 0:
            time.sleep(real / 1e9)
    return wait


def main(ctl: Control, index: int, cfg_dict: dict, run_id: str, shm_name: str) -> None:
    """Steps after emu.child.entry: load the kernels, attach, handshake, run, report."""
    role = f"cpu{index}"
    title = f"emu cpu/{index}"
    ctl.step("cache load")
    jit.warm_all()
    ctl.step("attach")
    cfg = Config(cfg_dict)
    ctx = ctl.ctx
    seg = Segment.attach(shm_name)
    views = Views(cfg, Layout(cfg), seg.buf)
    counters = views.cpu[index]
    net = attach(cfg, views, counters)
    inbox = ctx.socket(zmq.PULL)
    inbox.setsockopt(zmq.LINGER, 0)
    inbox.bind(endpoint(run_id, role))
    peers = {}
    for j in range(cfg.ncpus):
        if j != index:
            s = ctx.socket(zmq.PUSH)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(endpoint(run_id, f"cpu{j}"))
            peers[j] = s
    clock = DilatedClock(ctl.handshake(), cfg["run.tdf"], time.monotonic_ns)
    cputime = CpuTime(clock, counters[T0:T0 + 7], wait=_sleep_until(clock),
                      slack=int(SLACK_REAL_NS / cfg["run.tdf"]))
    cpu = Cpu(index, net, cputime, counters, views.rx)
    seqs: list = []
    if cfg["run.record_seqs"]:
        cpu.app.on_read = lambda entries: seqs.append(entries["seq"].copy())
    _run(cpu, cputime, inbox, peers, ctl, run_id, title)
    if cfg["run.record_seqs"]:
        import numpy as np
        np.save(os.path.join(cfg["run.run_dir"], f"seqs-cpu{index}.npy"),
                np.concatenate(seqs) if seqs else np.zeros(0, dtype=np.uint64))
    ctl.finish(cputime.now())


def _run(cpu: Cpu, cputime: CpuTime, inbox, peers: dict, ctl: Control, run_id: str,
         title: str) -> None:
    counters = cpu.counters
    rid = run_id
    ipi_rps = pack(rid, Msg.IPI_RPS, cpu.id)
    ipi_res = pack(rid, Msg.IPI_RES, cpu.id)

    inbox_opt = inbox.getsockopt
    EVENTS, POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)     # plain ints: enum ops are slow
    SENT = int(C.INBOX_SENT)
    taken = 0                          # messages taken from the inbox
    next_ctl = 0

    def stop_asked() -> bool:
        msg = ctl.poll(0)
        return msg is not None and msg[0] in (Msg.STOP, Msg.EXIT)

    def irq_point() -> None:
        nonlocal taken, next_ctl
        # STOP is looked for here too, every CTL_EVERY_NS of real time: one turn of the
        # loop below can last long (a slow reader's batch is many long sleeps), and every
        # irq_point is a safe point (the work before it is counted).
        t_real = time.monotonic_ns()
        if t_real >= next_ctl:
            next_ctl = t_real + CTL_EVERY_NS
            if stop_asked():
                raise _Stopped
        # Every sender counts its message in INBOX_SENT before sending it: while the count
        # equals what was taken nothing is waiting, and one shared-memory read (60 ns) stands
        # in for a ZeroMQ EVENTS query (1.3 us). A counted message still on its way keeps
        # the count ahead, so the inbox is looked at until it arrives.
        if int(counters[SENT]) == taken:
            return
        # Checking EVENTS first: a NOBLOCK recv on an empty inbox raises, which costs more.
        while inbox_opt(EVENTS) & POLLIN:
            msg = inbox.recv()
            taken += 1
            kind, body = unpack(msg, rid)
            if kind == Msg.IRQ:
                cpu.hardirq(body)
            elif kind == Msg.IPI_RPS:
                cpu.ipi_rps()
            elif kind == Msg.IPI_RES:
                cpu.ipi_resched()

    others = cpu.net.cpu_counters

    def send_ipi(t: int) -> None:
        atomic.fetch_add(others[t], SENT)
        peers[t].send(ipi_rps)

    def wake_remote(t: int) -> None:
        atomic.fetch_add(others[t], SENT)
        peers[t].send(ipi_res)

    cpu.set_irq_point(irq_point)
    cpu.sd.send_ipi = send_ipi
    cpu.tasks.wake_remote = wake_remote

    poller = zmq.Poller()
    poller.register(inbox, zmq.POLLIN)
    poller.register(ctl.sock, zmq.POLLIN)
    try:
        _loop(cpu, cputime, counters, title, poller, irq_point, stop_asked)
    except _Stopped:
        pass
    cputime.sync(busy=False)
    counters[C.NOW] = cputime.now()


class _Stopped(Exception):
    """STOP arrived at a safe point inside the kernel's work."""


def _loop(cpu, cputime, counters, title, poller, irq_point, stop_asked) -> None:
    shown = ""
    while True:
        if cpu.tasks.sched.current is None and stop_asked():
            return
        before = cputime.now()
        irq_point()
        ran = cpu.schedule()
        # Interrupt work with no task after it still made the CPU busy: a lag is steal.
        cputime.sync(busy=ran or cputime.now() != before)
        counters[C.NOW] = cputime.now()
        counters[C.LOOPS] += 1
        if cputime.worst_lag > counters[C.WORST_LAG]:
            counters[C.WORST_LAG] = cputime.worst_lag
        want = title + (" [ksoftirqd]" if cpu.tasks.ksoftirqd.runnable else "")
        if want != shown:
            setproctitle(want)
            shown = want
        if not ran:
            poller.poll(IDLE_POLL_MS)
            cputime.sync(busy=False)         # the wait was idle time, whatever woke us
