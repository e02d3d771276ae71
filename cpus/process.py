"""The CPU process: binds one cpus.agent.CpuAgent to shared memory, ZeroMQ and a futex.

Startup steps after emu.child.entry (which named the process and opened the control
channel), in order: load the kernels, attach the segment, bind the inbox (the NIC's
interrupts), say READY and wait for START, then run the agent's loop until the run's end
(STOP_AT in the sync block) or a STOP, say STOPPED, wait for EXIT.
"""

from __future__ import annotations

import os

import zmq
from setproctitle import setproctitle

from emu import jit
from emu.child import Control
from emu.clock import CpuTime
from emu.config import Config
from emu.counters import T0, C
from emu.protocol import endpoint
from emu.shm import Layout, Segment, Views
from emu.syncwait import ProcPort
from emu.timesync import Sync

from .agent import CpuAgent
from .host import attach
from .kernel import Cpu

CTL_EVERY_NS = 20_000_000  # real ns between looks at the control channel while busy


def main(ctl: Control, index: int, cfg_dict: dict, run_id: str, shm_name: str) -> None:
    """Steps after emu.child.entry: load the kernels, attach, handshake, run, report."""
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
    inbox.bind(endpoint(run_id, f"cpu{index}"))
    # the NIC's interrupts come over ZeroMQ; IPIs to and from other CPUs go through the
    # mailboxes in the sync block (emu.syncwait)
    port = ProcPort(views.sync, index, inbox, {}, run_id, ctl.stop_requested)
    ctl.handshake()
    cputime = CpuTime(counters[T0:T0 + 7])
    cpu = Cpu(index, net, cputime, counters, views.rx)
    sync = Sync(views.sync, index, net.costs.lat_ipi, net.costs.lat_cacheline, port)
    agent = CpuAgent(cpu, sync, views.rx, cfg["ethtool.rx_usecs"], cfg["ethtool.rx_frames"])
    seqs: list = []
    if cfg["run.record_seqs"]:
        cpu.app.on_read = lambda entries: seqs.append(entries["seq"].copy())
    agent.tick = ctl.ticker(CTL_EVERY_NS, _title(agent, title))
    agent.run()
    counters[C.NOW] = cputime.now()
    if cfg["run.record_seqs"]:
        import numpy as np
        np.save(os.path.join(cfg["run.run_dir"], f"seqs-cpu{index}.npy"),
                np.concatenate(seqs) if seqs else np.zeros(0, dtype=np.uint64))
    ctl.finish(cputime.now())


def _title(agent: CpuAgent, title: str):
    """Show in the process title whether ksoftirqd is runnable."""
    shown = [""]
    ksoftirqd = agent.cpu.tasks.ksoftirqd

    def show() -> None:
        want = title + (" [ksoftirqd]" if ksoftirqd.runnable else "")
        if want != shown[0]:
            setproctitle(want)
            shown[0] = want
    return show
