"""nic.dma: admit and group_by_queue against plain references; dma_arrivals with two
interleaved sources and filling rings; warm leaves no trace."""

import numpy as np
import pytest

from emu.counters import (SRC_RING_DROP0, SRC_SENT0, N, Q_BYTES, Q_DROPS, Q_PACKETS, nic_block,
                          nq)
from emu.ring import Ring
from emu.skb import SKB
from nic.dma import admit, dma_arrivals, group_by_queue, warm

from .harness import Host

RING = 64
LINK_100G = ["ethtool.speed=100000"]      # 1 Mpps of 1514-byte frames needs more than 10 Gb/s
UDP_CONST = {"name": "u", "pattern": "constant", "proto": "udp", "rate_pps": 1_000_000.0,
             "flows": 8, "dst_ports": [9000, 9001], "frame_len": 128}
UDP_POISSON = {"name": "p", "pattern": "poisson", "proto": "udp", "rate_pps": 1_000_000.0,
               "flows": 16, "dst_ports": [9002], "frame_len": 200}
TCP_POISSON = {"name": "t", "pattern": "poisson", "proto": "tcp", "rate_pps": 1_000_000.0,
               "flows": 4, "dst_ports": [5201], "frame_len": 1514}


# -- admit --------------------------------------------------------------------------------

def ref_admit(queue, free, drops):
    free, drops = [int(x) for x in free], [int(x) for x in drops]
    keep = []
    for q in queue:
        q = int(q)
        if free[q] > 0:
            free[q] -= 1
            keep.append(True)
        else:
            drops[q] += 1
            keep.append(False)
    return keep, free, drops


@pytest.mark.parametrize("qdtype", [np.uint8, np.int64])
@pytest.mark.parametrize("trial", range(8))
def test_admit_matches_reference(qdtype, trial):
    rng = np.random.default_rng([trial, np.dtype(qdtype).itemsize])
    nqueues = int(rng.integers(1, 9))
    n = int(rng.integers(0, 400))
    queue = rng.integers(0, nqueues, n).astype(qdtype)
    free = rng.integers(0, 80, nqueues).astype(np.int64)
    free[rng.random(nqueues) < 0.25] = 0                 # some rings already full
    drops = rng.integers(0, 5, nqueues).astype(np.int64)  # added to, not reset
    want_keep, want_free, want_drops = ref_admit(queue, free, drops)
    d0 = drops.copy()
    keep = admit(queue, free, drops)
    assert keep.dtype == np.bool_ and keep.shape == (n,)
    assert keep.tolist() == want_keep
    assert free.tolist() == want_free
    assert drops.tolist() == want_drops
    # conservation per queue: every frame either took a slot or was counted as a drop
    per_q = np.bincount(queue.astype(np.int64), minlength=nqueues)
    kept_q = np.bincount(queue[keep].astype(np.int64), minlength=nqueues)
    assert ((drops - d0) + kept_q == per_q).all()


def test_admit_earliest_frames_win():
    queue = np.array([0, 1, 0, 0, 1, 0, 2], dtype=np.uint8)
    free = np.array([2, 1, 0], dtype=np.int64)
    drops = np.zeros(3, dtype=np.int64)
    keep = admit(queue, free, drops)
    assert keep.tolist() == [True, True, True, False, False, False, False]
    assert free.tolist() == [0, 0, 0]
    assert drops.tolist() == [2, 1, 1]


# -- group_by_queue -------------------------------------------------------------------------

@pytest.mark.parametrize("trial", range(8))
def test_group_by_queue_is_a_stable_counting_sort(trial):
    rng = np.random.default_rng(100 + trial)
    nqueues = int(rng.integers(1, 17))
    n = int(rng.integers(0, 500))
    queue = rng.integers(0, nqueues, n).astype(np.uint8)
    if nqueues > 2:
        queue[queue == 1] = 0                            # a queue with no frames
    perm, counts = group_by_queue(queue, nqueues)
    assert perm.tolist() == np.argsort(queue, kind="stable").tolist()
    assert counts.tolist() == np.bincount(queue, minlength=nqueues).tolist()
    assert sorted(perm.tolist()) == list(range(n))


def test_group_by_queue_empty_and_single_queue():
    perm, counts = group_by_queue(np.zeros(0, dtype=np.uint8), 4)
    assert perm.shape == (0,) and counts.tolist() == [0, 0, 0, 0]
    perm, counts = group_by_queue(np.zeros(5, dtype=np.uint8), 1)
    assert perm.tolist() == [0, 1, 2, 3, 4] and counts.tolist() == [5]


# -- dma_arrivals ---------------------------------------------------------------------------

def _rings(nqueues, prefill):
    rings = [Ring.local(SKB, RING) for _ in range(nqueues)]
    for q, k in enumerate(prefill):
        old = np.zeros(k, dtype=SKB)
        old["seq"] = 10**12 + 1000 * q + np.arange(k)     # recognisable leftovers
        old["queue"] = q
        assert rings[q].push(old) == k
    return rings


def _expect(twin: Host, t_from, t_to, seq, free):
    """What dma_arrivals should do, from a twin host's identical sources.

    Returns (all frames in arrival order as full records, kept mask over them, per-source
    (sent, kept), next seq)."""
    recs, srcs = [], []
    for s in twin.sources:
        ts, flow = s.arrivals(t_from, t_to)
        if len(ts):
            recs.append(s.make_batch(ts, flow, seq))    # built whole: every frame uses ids
            srcs.append(np.full(len(ts), s.index))
            seq += len(ts)
    if not recs:
        return np.zeros(0, dtype=SKB), np.zeros(0, dtype=bool), {}, seq
    allf = np.concatenate(recs)
    src = np.concatenate(srcs)
    order = np.argsort(allf["ts"], kind="stable")   # ties: the earlier source first
    allf, src = allf[order], src[order]
    free = list(free)
    keep = np.zeros(len(allf), dtype=bool)
    for i, q in enumerate(allf["queue"].tolist()):
        if free[q] > 0:
            free[q] -= 1
            keep[i] = True
    per_src = {int(i): (int((src == i).sum()), int(keep[src == i].sum())) for i in np.unique(src)}
    return allf, keep, per_src, seq


def _ring_contents(ring):
    return ring.pop(ring.capacity)


def _check_interval(h, twin, rings, c, t_from, t_to, seq):
    nqueues = len(rings)
    free = [r.free() for r in rings]
    before_len = [len(r) for r in rings]
    c0 = c.copy()
    allf, keep, per_src, want_seq = _expect(twin, t_from, t_to, seq, free)
    got_seq = dma_arrivals(h.sources, t_from, t_to, seq, rings, c)
    assert got_seq == want_seq
    d = c.astype(np.int64) - c0.astype(np.int64)
    total = len(allf)
    assert d[N.GENERATED] == total
    assert d[N.GENERATED_BYTES] == sum(per_src[i][0] * h.sources[i].frame_len for i in per_src)
    for s in h.sources:
        sent, kept = per_src.get(s.index, (0, 0))
        assert d[SRC_SENT0 + s.index] == sent
        assert d[SRC_RING_DROP0 + s.index] == sent - kept
    in_rings = 0
    dropped = 0
    for q in range(nqueues):
        mine = allf["queue"] == q
        kept_q = allf[mine & keep]
        # the earliest arrivals of the queue, across both sources, are what fits
        assert len(kept_q) == min(free[q], int(mine.sum()))
        assert (keep[mine][:len(kept_q)]).all() and not keep[mine][len(kept_q):].any()
        if len(kept_q) and len(kept_q) < mine.sum():
            assert kept_q["ts"].max() <= allf[mine & ~keep]["ts"].min()
        assert d[nq(q, Q_PACKETS)] == len(kept_q)
        assert d[nq(q, Q_BYTES)] == int(kept_q["len"].astype(np.int64).sum())
        assert d[nq(q, Q_DROPS)] == int(mine.sum()) - len(kept_q)
        in_rings += len(kept_q)
        dropped += int(d[nq(q, Q_DROPS)])
        # ring contents: leftovers, then the new frames in timestamp order, byte for byte
        got = _ring_contents(rings[q])
        assert len(got) == before_len[q] + len(kept_q)
        new = got[before_len[q]:]
        assert np.all(np.diff(new["ts"].astype(np.int64)) >= 0)
        assert (new["queue"] == q).all()
        assert (new.view(np.uint8) == kept_q.view(np.uint8)).all()
        assert not np.isin(got["seq"][:before_len[q]], allf["seq"]).any()
    assert in_rings + dropped == total == d[N.GENERATED]
    assert dropped == sum(int(d[SRC_RING_DROP0 + s.index]) for s in h.sources)
    return allf, keep, got_seq


@pytest.mark.parametrize("second", [UDP_POISSON, TCP_POISSON])
def test_two_interleaved_sources_fill_rings_in_arrival_order(second):
    h = Host(LINK_100G, ncpus=2, sources=[UDP_CONST, second])
    twin = Host(LINK_100G, ncpus=2, sources=[UDP_CONST, second])
    nqueues = h.cfg.nqueues
    assert nqueues == 4
    prefill = [50, RING, 0, 10]                 # ring 1 already full, ring 2 empty
    rings = _rings(nqueues, prefill)
    c = nic_block()
    seq = 7
    allf, keep, seq = _check_interval(h, twin, rings, c, 0, 200_000, seq)
    # the sources really interleave in time, and the rings really filled
    s0 = allf["ts"][allf["src"] == 0]
    s1 = allf["ts"][allf["src"] == 1]
    assert len(s0) > 100 and len(s1) > 100
    assert s0.min() < s1.max() and s1.min() < s0.max()
    assert keep.any() and not keep.all()
    assert not keep[allf["queue"] == 1].any()
    # a second interval: drained rings partly refilled, state carried from the first
    for q, r in enumerate(rings):
        filler = np.zeros(q * 20, dtype=SKB)
        filler["queue"] = q
        r.push(filler)
    _check_interval(h, twin, rings, c, 200_000, 500_000, seq)
    for a, b in zip(h.sources, twin.sources):
        # every frame, dropped ones included, used its flow's id and sequence space
        assert a.flows.state.next_id.tolist() == b.flows.state.next_id.tolist()
        assert a.flows.state.next_seq.tolist() == b.flows.state.next_seq.tolist()


def test_one_active_source_of_two_and_no_traffic():
    late = dict(UDP_POISSON, start_ms=1.0)
    h = Host(LINK_100G, ncpus=2, sources=[UDP_CONST, late])
    twin = Host(LINK_100G, ncpus=2, sources=[UDP_CONST, late])
    rings = _rings(h.cfg.nqueues, [0, 30, 60, 0])
    c = nic_block()
    allf, keep, seq = _check_interval(h, twin, rings, c, 0, 300_000, 0)
    assert (allf["src"] == 0).all() and not keep.all()
    assert c[SRC_SENT0 + 1] == 0
    snap = c.copy()
    assert dma_arrivals(h.sources, 300_000, 300_000, seq, rings, c) == seq
    assert (c == snap).all()
    assert all(len(r) == 0 for r in rings)


def test_ring_without_room_receives_nothing_and_counts_every_frame_once():
    h = Host(LINK_100G, ncpus=2, sources=[UDP_CONST, UDP_POISSON])
    rings = _rings(h.cfg.nqueues, [RING] * 4)
    c = nic_block()
    seq = dma_arrivals(h.sources, 0, 100_000, 0, rings, c)
    assert seq == c[N.GENERATED] > 0
    assert sum(int(c[nq(q, Q_DROPS)]) for q in range(4)) == seq
    assert all(int(c[nq(q, Q_PACKETS)]) == 0 and int(c[nq(q, Q_BYTES)]) == 0 for q in range(4))
    assert c[SRC_RING_DROP0] + c[SRC_RING_DROP0 + 1] == seq
    assert c[SRC_SENT0] == c[SRC_RING_DROP0] and c[SRC_SENT0 + 1] == c[SRC_RING_DROP0 + 1]


# -- warm -------------------------------------------------------------------------------------

@pytest.mark.parametrize("second", [UDP_POISSON, TCP_POISSON])
def test_warm_leaves_flow_state_rng_and_counters_alone(second):
    h = Host(LINK_100G, ncpus=2, sources=[UDP_CONST, second])
    twin = Host(LINK_100G, ncpus=2, sources=[UDP_CONST, second])
    cpu_before = [c.copy() for c in h.counters]
    ids = [s.flows.state.next_id.copy() for s in h.sources]
    seqs = [s.flows.state.next_seq.copy() for s in h.sources]
    warm(h.sources, h.cfg.nqueues)
    for s, i0, q0 in zip(h.sources, ids, seqs):
        assert s.flows.state.next_id.tolist() == i0.tolist()
        assert s.flows.state.next_seq.tolist() == q0.tolist()
    assert all((a == b).all() for a, b in zip(h.counters, cpu_before))
    # and the next DMA is exactly what an un-warmed twin does: same frames, same counters
    ra, rb = _rings(4, [0, 10, 20, 30]), _rings(4, [0, 10, 20, 30])
    ca, cb = nic_block(), nic_block()
    assert dma_arrivals(h.sources, 0, 150_000, 0, ra, ca) == \
        dma_arrivals(twin.sources, 0, 150_000, 0, rb, cb)
    assert (ca == cb).all() and ca[N.GENERATED] > 0
    for a, b in zip(ra, rb):
        x, y = a.pop(RING), b.pop(RING)
        assert len(x) == len(y)
        assert (x.view(np.uint8) == y.view(np.uint8)).all()
