"""The NIC process: traffic sources, RSS, DMA into the RX rings, coalescing, MSI-X.

Each loop turn takes the arrivals of every source up to the clock's now, steers each frame
to a queue by RSS, writes what fits into that queue's ring (nic.dma; a full ring drops at
the NIC, counted per queue as rx_queue_N_drops and in rx_fifo_errors), then lets each queue's
coalescer decide whether to raise its vector. Raising masks the vector (a write to the
ring header, the emulated EIMC) and sends one IRQ message to the CPU the vector's affinity
resolves to; the driver unmasks it after napi_complete_done.
"""

from __future__ import annotations

import time

import zmq

from emu import atomic, jit
from emu.child import Control
from emu.clock import DilatedClock
from emu.config import Config
from emu.counters import C, N, Q_IRQS, nq
from emu.protocol import Msg, endpoint, pack
from emu.ring import RX_IRQ_MASKED
from emu.shm import Layout, Segment, Views

from .coalesce import Coalescer
from .dma import dma_arrivals, warm
from .rss import Rss
from .traffic import Source

STEP_NS = 10_000          # emulated ns between loop turns when nothing is due sooner
MIN_SLEEP_S = 50e-6


def main(ctl: Control, index: int, cfg_dict: dict, run_id: str, shm_name: str) -> None:
    """Steps after emu.child.entry: load the kernels, attach, handshake, run, report."""
    cfg = Config(cfg_dict)
    rss = Rss.from_ethtool(cfg["ethtool"])
    seed = cfg["run.seed"]
    sources = [Source(s, i, rss, seed) for i, s in enumerate(cfg["traffic.sources"])]
    nqueues = cfg.nqueues
    ctl.step("cache load")
    jit.warm_all()
    warm(sources, nqueues)
    ctl.step("attach")
    ctx = ctl.ctx
    seg = Segment.attach(shm_name)
    views = Views(cfg, Layout(cfg), seg.buf)
    coal = [Coalescer(cfg["ethtool.rx_usecs"], cfg["ethtool.rx_frames"]) for _ in range(nqueues)]
    target = cfg.effective_cpu
    pushes = {}
    for c in sorted(set(target)):
        s = ctx.socket(zmq.PUSH)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(endpoint(run_id, f"cpu{c}"))
        pushes[c] = s
    irq_msg = [pack(run_id, Msg.IRQ, q) for q in range(nqueues)]
    clock = DilatedClock(ctl.handshake(), cfg["run.tdf"], time.monotonic_ns)
    _run(clock, views, sources, coal, target, pushes, irq_msg, ctl)
    ctl.finish(clock.now())


def _run(clock, views, sources, coal, target, pushes, irq_msg, ctl) -> None:
    c = views.nic
    cpu_blocks = views.cpu
    sent = int(C.INBOX_SENT)
    rings = views.rx
    nqueues = len(rings)
    generating = True
    t_prev = max(0, clock.now())
    seq = 0
    while True:
        msg = ctl.poll(0)
        if msg is not None:
            if msg[0] == Msg.STOP_TRAFFIC:
                generating = False
                c[N.STOPPED] = 1
            elif msg[0] in (Msg.STOP, Msg.EXIT):
                break
        now = clock.now()
        if generating and now > t_prev:
            seq = dma_arrivals(sources, t_prev, now, seq, rings, c)
        if now > t_prev:
            t_prev = now
        deadline = now + STEP_NS
        for q in range(nqueues):
            ring = rings[q]
            if coal[q].update(now, len(ring), bool(ring.user(RX_IRQ_MASKED))):
                ring.set_user(RX_IRQ_MASKED, 1)
                c[nq(q, Q_IRQS)] += 1
                atomic.fetch_add(cpu_blocks[target[q]], sent)   # counted before it is sent
                pushes[target[q]].send(irq_msg[q])
            d = coal[q].next_deadline()
            if d is not None and d < deadline:
                deadline = d
        c[N.NOW] = now
        c[N.LOOPS] += 1
        wait = (deadline - clock.now()) * clock.tdf / 1e9
        time.sleep(max(MIN_SLEEP_S, wait))
