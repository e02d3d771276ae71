"""DMA of arriving frames into the RX rings: what fits is written, a full ring drops.

Which frames a full ring drops is decided before any frame is built (a flow's queue is
fixed), so an overloaded NIC spends no time building frames it then throws away. Frames
claim ring slots in arrival order, across sources, so the earliest frames of a burst win.
Per-queue packet and byte counts are the NIC's own (hardware) counters, kept at DMA time.
"""

from __future__ import annotations

import numpy as np

from emu.counters import SRC_RING_DROP0, SRC_SENT0, N, Q_BYTES, Q_DROPS, Q_PACKETS, nq
from emu.jit import kernel
from emu.skb import SKB, empty

_V_SKB = np.dtype((np.void, SKB.itemsize))


@kernel
def admit(queue, free, drops):
    """Frames in arrival order claim a slot of their queue's ring while one is free.

    queue: each frame's queue; free: free slots per queue (consumed here); drops: per-queue
    drop counts (added to). Returns the keep mask.
    """
    keep = np.empty(queue.shape[0], dtype=np.bool_)
    for i in range(queue.shape[0]):
        q = queue[i]
        if free[q] > 0:
            free[q] -= 1
            keep[i] = True
        else:
            drops[q] += 1
            keep[i] = False
    return keep


@kernel
def group_by_queue(queue, nqueues):
    """A stable permutation that puts frames queue by queue, and each queue's count."""
    counts = np.zeros(nqueues, dtype=np.int64)
    for i in range(queue.shape[0]):
        counts[queue[i]] += 1
    at = np.zeros(nqueues, dtype=np.int64)
    for q in range(1, nqueues):
        at[q] = at[q - 1] + counts[q - 1]
    perm = np.empty(queue.shape[0], dtype=np.int64)
    for i in range(queue.shape[0]):
        q = queue[i]
        perm[at[q]] = i
        at[q] += 1
    return perm, counts


def dma_arrivals(sources, t_from: int, t_to: int, seq: int, rings, c: np.ndarray) -> int:
    """DMA the frames of every source that arrive in (t_from, t_to]; return the next seq.

    c is the NIC counter block (emu.counters N slots and per-queue / per-source slots).
    """
    parts = []
    for src in sources:
        ts, flow = src.arrivals(t_from, t_to)
        if len(ts):
            parts.append((src, ts, flow, seq))
            seq += len(ts)
    if not parts:
        return seq
    nqueues = len(rings)
    free = np.array([r.free() for r in rings], dtype=np.int64)
    drops = np.zeros(nqueues, dtype=np.int64)
    if len(parts) == 1:
        src, ts, flow, _ = parts[0]
        keeps = [admit(src.flow_queue[flow], free, drops)]
    else:
        ts_all = np.concatenate([p[1] for p in parts])
        q_all = np.concatenate([p[0].flow_queue[p[2]] for p in parts])
        order = np.argsort(ts_all, kind="stable")
        keep = np.empty(len(order), dtype=bool)
        keep[order] = admit(q_all[order], free, drops)
        bounds = np.cumsum([0] + [len(p[1]) for p in parts])
        keeps = [keep[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    for q in np.flatnonzero(drops):
        c[nq(int(q), Q_DROPS)] += int(drops[q])
    batches = []
    for (src, ts, flow, seq0), k in zip(parts, keeps):
        n = len(ts)
        kept = int(np.count_nonzero(k))
        c[SRC_SENT0 + src.index] += n
        c[N.GENERATED] += n
        c[N.GENERATED_BYTES] += n * src.frame_len
        if kept < n:
            c[SRC_RING_DROP0 + src.index] += n - kept
        if kept:
            batches.append(src.make_batch(ts, flow, seq0, keep=k if kept < n else None))
    if not batches:
        return seq
    batch = batches[0] if len(batches) == 1 else np.concatenate(batches)
    if len(batches) > 1:
        batch = batch[np.argsort(batch["ts"], kind="stable")]
    if nqueues > 1:
        perm, counts = group_by_queue(np.ascontiguousarray(batch["queue"]), nqueues)
        batch = batch.view(_V_SKB)[perm].view(SKB)   # raw records: a structured take is slow
    else:
        counts = np.array([len(batch)])
    at = 0
    for q in range(nqueues):
        k = int(counts[q])
        if not k:
            continue
        sub = batch[at:at + k]
        at += k
        written = rings[q].push(sub)      # fits: only the NIC produces into its rings
        c[nq(q, Q_PACKETS)] += written
        c[nq(q, Q_BYTES)] += int(sub["len"].sum())
    return seq


def warm(sources, nqueues: int) -> None:
    """Run every compiled kernel of the DMA path once on a tiny input, with the argument
    types a run uses, so a NIC process pays numba's first-call cost before traffic starts."""
    for src in sources:
        saved = src.flows.state.copy()          # the warm-up frames must not use an id
        src.make_batch(np.zeros(1, dtype=np.uint64), np.zeros(1, dtype=np.int64), 0)
        src.make_batch(np.zeros(1, dtype=np.uint64), np.zeros(1, dtype=np.int64), 0,
                       keep=np.ones(1, dtype=bool))
        src.flows.state = saved
        q = src.flow_queue[np.zeros(1, dtype=np.int64)]
        admit(q, np.zeros(nqueues, dtype=np.int64), np.zeros(nqueues, dtype=np.int64))
    # contiguous, as dma_arrivals passes it: a kernel meeting a new array layout compiles
    # then, inside traffic (a field view is contiguous only when it has one record)
    group_by_queue(np.ascontiguousarray(empty(2)["queue"]), nqueues)


def warm_default() -> None:
    """warm() for the default config's sources: the same kernels and argument types as any
    run (a source's pattern, protocol or size changes no type)."""
    from emu.config import resolve

    from .rss import Rss
    from .traffic import Source
    cfg = resolve(None, [])
    rss = Rss.from_ethtool(cfg["ethtool"])
    warm([Source(s, i, rss, cfg["run.seed"]) for i, s in enumerate(cfg["traffic.sources"])],
         cfg.nqueues)

