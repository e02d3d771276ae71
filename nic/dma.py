"""The frames that reach the NIC, steered to their queues: what the NIC DMAs into each RX
ring, in arrival order, each stamped with its arrival time.

Whether a frame finds a free descriptor is the driver's call when its time comes (see
emu.ring and cpus.driver.rx_take): the NIC writes every frame ahead of the CPUs' time, so
which frames a full ring drops cannot depend on how far the processes have got.
"""

from __future__ import annotations

import numpy as np

from emu.counters import SRC_SENT0, N
from emu.jit import kernel
from emu.skb import SKB, empty

_V_SKB = np.dtype((np.void, SKB.itemsize))


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


def generate(sources, t_from: int, t_to: int, seq: int, nqueues: int,
             c: np.ndarray) -> tuple[list, int]:
    """The frames of every source that arrive in (t_from, t_to], built and steered: one
    SKB array per queue (arrival order; None for a queue with none), and the next seq.

    c is the NIC counter block: frames and bytes sent per source and in all are counted here.
    """
    batches = []
    for src in sources:
        ts, flow = src.arrivals(t_from, t_to)
        n = len(ts)
        if not n:
            continue
        batches.append(src.make_batch(ts, flow, seq))
        seq += n
        c[SRC_SENT0 + src.index] += n
        c[N.GENERATED] += n
        c[N.GENERATED_BYTES] += n * src.frame_len
    out = [None] * nqueues
    if not batches:
        return out, seq
    batch = batches[0] if len(batches) == 1 else np.concatenate(batches)
    if len(batches) > 1:
        batch = batch[np.argsort(batch["ts"], kind="stable")]
    if nqueues == 1:
        out[0] = batch
        return out, seq
    perm, counts = group_by_queue(np.ascontiguousarray(batch["queue"]), nqueues)
    batch = batch.view(_V_SKB)[perm].view(SKB)   # raw records: a structured take is slow
    at = 0
    for q in range(nqueues):
        k = int(counts[q])
        if k:
            out[q] = batch[at:at + k]
            at += k
    return out, seq


def warm(sources, nqueues: int) -> None:
    """Run every compiled kernel of the DMA path once on a tiny input, with the argument
    types a run uses, so a NIC process pays numba's first-call cost before traffic starts."""
    for src in sources:
        saved = src.flows.state.copy()          # the warm-up frames must not use an id
        src.make_batch(np.zeros(1, dtype=np.uint64), np.zeros(1, dtype=np.int64), 0)
        src.flows.state = saved
    # contiguous, as generate passes it: a kernel meeting a new array layout compiles
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

