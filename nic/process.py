"""The NIC process: traffic sources, RSS, DMA into the RX rings, coalescing, MSI-X.

Each loop turn takes the arrivals of every source up to the clock's now, steers each frame
to a queue by RSS, writes what fits into that queue's ring (a full ring drops at the NIC,
counted per queue as rx_queue_N_drops and in rx_fifo_errors), then lets each queue's
coalescer decide whether to raise its vector. Raising masks the vector (a write to the
ring header, the emulated EIMC) and sends one IRQ message to the CPU the vector's affinity
resolves to; the driver unmasks it after napi_complete_done.

Deviation: per-queue packet and byte counts are the NIC's own (hardware) counters, kept at
DMA time rather than by the driver at clean time.
"""

from __future__ import annotations

import time
import traceback

import numpy as np
import zmq

from cpus.kernel import RX_IRQ_MASKED
from emu.child import Control, Orphaned, bootstrap, report_crash
from emu.clock import DilatedClock
from emu.config import Config
from emu.counters import SRC_RING_DROP0, SRC_SENT0, N, Q_BYTES, Q_DROPS, Q_IRQS, Q_PACKETS, nq
from emu.protocol import Msg, endpoint, pack
from emu.shm import Layout, Segment, Views

from .affinity import effective_cpus
from .coalesce import Coalescer
from .rss import Rss
from .traffic import Source

STEP_NS = 10_000          # emulated ns between loop turns when nothing is due sooner
MIN_SLEEP_S = 50e-6


def main(cfg_dict: dict, run_id: str, shm_name: str, parent_pid: int) -> None:
    ctl = None
    try:
        bootstrap("emu nic/eth0", parent_pid)
        cfg = Config(cfg_dict)
        ctx = zmq.Context()
        seg = Segment.attach(shm_name)
        views = Views(cfg, Layout(cfg), seg.buf)
        rss = Rss.from_ethtool(cfg["ethtool"])
        seed = cfg["run.seed"]
        sources = [Source(s, i, rss, seed) for i, s in enumerate(cfg["traffic.sources"])]
        nqueues = cfg.nqueues
        coal = [Coalescer(cfg["ethtool.rx_usecs"], cfg["ethtool.rx_frames"]) for _ in range(nqueues)]
        target = effective_cpus([cfg.irq_affinity(q) for q in range(nqueues)], (1 << cfg.ncpus) - 1)
        pushes = {}
        for c in sorted(set(target)):
            s = ctx.socket(zmq.PUSH)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(endpoint(run_id, f"cpu{c}"))
            pushes[c] = s
        irq_msg = [pack(run_id, Msg.IRQ, q) for q in range(nqueues)]
        ctl = Control(ctx, run_id, "nic", parent_pid)
        clock = DilatedClock(ctl.handshake(), cfg["run.tdf"], time.monotonic_ns)
        _run(clock, views, sources, coal, target, pushes, irq_msg, ctl)
        ctl.finish(clock.now())
    except Orphaned:
        return
    except SystemExit:
        raise
    except BaseException as e:
        traceback.print_exc()
        report_crash(ctl, "nic", e)
        raise SystemExit(70)


def _run(clock, views, sources, coal, target, pushes, irq_msg, ctl) -> None:
    c = views.nic
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
            seq = _arrive(sources, t_prev, now, seq, rings, c)
        if now > t_prev:
            t_prev = now
        deadline = now + STEP_NS
        for q in range(nqueues):
            ring = rings[q]
            if coal[q].update(now, len(ring), bool(ring.user(RX_IRQ_MASKED))):
                ring.set_user(RX_IRQ_MASKED, 1)
                c[nq(q, Q_IRQS)] += 1
                pushes[target[q]].send(irq_msg[q])
            d = coal[q].next_deadline()
            if d is not None and d < deadline:
                deadline = d
        c[N.NOW] = now
        c[N.LOOPS] += 1
        wait = (deadline - clock.now()) * clock.tdf / 1e9
        time.sleep(max(MIN_SLEEP_S, wait))


def _arrive(sources, t_from: int, t_to: int, seq: int, rings, c: np.ndarray) -> int:
    """DMA the frames of every source that arrive in (t_from, t_to]; return the next seq.

    Which frames a full ring drops is decided before any frame is built (a flow's queue is
    fixed), so an overloaded NIC spends no time building frames it then throws away.
    """
    parts = []
    for src in sources:
        ts, flow = src.arrivals(t_from, t_to)
        if len(ts):
            parts.append((src, ts, flow, seq))
            seq += len(ts)
    if not parts:
        return seq
    ts_all = np.concatenate([p[1] for p in parts])
    q_all = np.concatenate([p[0].flow_queue[p[2]] for p in parts]).astype(np.intp)
    order = np.argsort(ts_all, kind="stable")
    q_sorted = q_all[order]
    rank = np.empty(len(order), dtype=np.int64)      # place of each frame in its queue's line
    by_q = np.argsort(q_sorted, kind="stable")
    sq = q_sorted[by_q]
    starts = np.r_[0, np.nonzero(np.diff(sq))[0] + 1]
    rank[by_q] = np.arange(len(sq)) - np.repeat(starts, np.diff(np.r_[starts, len(sq)]))
    free = np.array([r.free() for r in rings], dtype=np.int64)
    keep = np.empty(len(order), dtype=bool)
    keep[order] = rank < free[q_sorted]
    batches = []
    off = 0
    for src, ts, flow, seq0 in parts:
        n = len(ts)
        k = keep[off:off + n]
        off += n
        c[SRC_SENT0 + src.index] += n
        c[N.GENERATED] += n
        c[N.GENERATED_BYTES] += n * src.frame_len
        lost = n - int(k.sum())
        if lost:
            c[SRC_RING_DROP0 + src.index] += lost
            lost_q = np.bincount(src.flow_queue[flow[~k]], minlength=len(rings))
            for q in np.nonzero(lost_q)[0]:
                c[nq(int(q), Q_DROPS)] += int(lost_q[q])
        batches.append(src.make_batch(ts, flow, seq0, keep=k if lost else None))
    batch = batches[0] if len(batches) == 1 else np.concatenate(batches)
    if len(batches) > 1:
        batch = batch[np.argsort(batch["ts"], kind="stable")]
    qs = batch["queue"]
    for q in np.unique(qs):
        q = int(q)
        sub = batch[qs == q]
        written = rings[q].push(sub)      # fits: only the NIC produces into its rings
        c[nq(q, Q_PACKETS)] += written
        c[nq(q, Q_BYTES)] += int(sub["len"].sum())
    return seq
