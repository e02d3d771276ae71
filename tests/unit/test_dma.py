"""nic.dma: group_by_queue against a plain reference; generate with two interleaved sources
(every frame built, steered, in arrival order, counted); warm leaves no trace."""

import numpy as np
import pytest

from emu.counters import SRC_SENT0, N, nic_block
from emu.skb import SKB
from nic.dma import generate, group_by_queue, warm

from .harness import Host

LINK_100G = ["ethtool.speed=100000"]      # 1 Mpps of 1514-byte frames needs more than 10 Gb/s
UDP_CONST = {"name": "u", "pattern": "constant", "proto": "udp", "rate_pps": 1_000_000.0,
             "flows": 8, "dst_ports": [9000, 9001], "frame_len": 128}
UDP_POISSON = {"name": "p", "pattern": "poisson", "proto": "udp", "rate_pps": 1_000_000.0,
               "flows": 16, "dst_ports": [9002], "frame_len": 200}
TCP_POISSON = {"name": "t", "pattern": "poisson", "proto": "tcp", "rate_pps": 1_000_000.0,
               "flows": 4, "dst_ports": [5201], "frame_len": 1514}


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


# -- generate ---------------------------------------------------------------------------------

def _expect(twin: Host, t_from, t_to, seq):
    """Every frame of a twin host's identical sources in (t_from, t_to], in arrival order
    (ties: the earlier source first), and the next seq."""
    recs = []
    for s in twin.sources:
        ts, flow = s.arrivals(t_from, t_to)
        if len(ts):
            recs.append(s.make_batch(ts, flow, seq))
            seq += len(ts)
    if not recs:
        return np.zeros(0, dtype=SKB), seq
    allf = np.concatenate(recs)
    return allf[np.argsort(allf["ts"], kind="stable")], seq


def _check_interval(h, twin, c, t_from, t_to, seq):
    nqueues = h.cfg.nqueues
    c0 = c.copy()
    allf, want_seq = _expect(twin, t_from, t_to, seq)
    out, got_seq = generate(h.sources, t_from, t_to, seq, nqueues, c)
    assert got_seq == want_seq
    d = c.astype(np.int64) - c0.astype(np.int64)
    assert d[N.GENERATED] == len(allf)
    for s in h.sources:
        mine = allf["src"] == s.index
        assert d[SRC_SENT0 + s.index] == int(mine.sum())
    assert d[N.GENERATED_BYTES] == sum(int((allf["src"] == s.index).sum()) * s.frame_len
                                       for s in h.sources)
    total = 0
    for q in range(nqueues):
        want = allf[allf["queue"] == q]
        got = out[q]
        if not len(want):
            assert got is None
            continue
        total += len(got)
        assert np.all(np.diff(got["ts"].astype(np.int64)) >= 0)
        assert (got.view(np.uint8) == want.view(np.uint8)).all()      # byte for byte
    assert total == len(allf)
    return allf, got_seq


@pytest.mark.parametrize("second", [UDP_POISSON, TCP_POISSON])
def test_two_interleaved_sources_steered_in_arrival_order(second):
    h = Host(LINK_100G, ncpus=2, sources=[UDP_CONST, second])
    twin = Host(LINK_100G, ncpus=2, sources=[UDP_CONST, second])
    assert h.cfg.nqueues == 4
    c = nic_block()
    allf, seq = _check_interval(h, twin, c, 0, 200_000, 7)
    s0 = allf["ts"][allf["src"] == 0]
    s1 = allf["ts"][allf["src"] == 1]
    assert len(s0) > 100 and len(s1) > 100
    assert s0.min() < s1.max() and s1.min() < s0.max()     # they really interleave
    _check_interval(h, twin, c, 200_000, 500_000, seq)       # state carried over
    for a, b in zip(h.sources, twin.sources):
        assert a.flows.state.next_id.tolist() == b.flows.state.next_id.tolist()
        assert a.flows.state.next_seq.tolist() == b.flows.state.next_seq.tolist()


def test_one_active_source_of_two_and_no_traffic():
    late = dict(UDP_POISSON, start_ms=1.0)
    h = Host(LINK_100G, ncpus=2, sources=[UDP_CONST, late])
    twin = Host(LINK_100G, ncpus=2, sources=[UDP_CONST, late])
    c = nic_block()
    allf, seq = _check_interval(h, twin, c, 0, 300_000, 0)
    assert (allf["src"] == 0).all()
    assert c[SRC_SENT0 + 1] == 0
    snap = c.copy()
    out, nxt = generate(h.sources, 300_000, 300_000, seq, 4, c)
    assert nxt == seq and all(b is None for b in out) and (c == snap).all()


def test_one_queue_takes_everything_in_time_order():
    h = Host(LINK_100G + ["ethtool.rx_queues=1"], ncpus=1, sources=[UDP_CONST, UDP_POISSON])
    c = nic_block()
    out, seq = generate(h.sources, 0, 100_000, 0, 1, c)
    assert len(out) == 1 and len(out[0]) == seq == c[N.GENERATED] > 0
    assert np.all(np.diff(out[0]["ts"].astype(np.int64)) >= 0)


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
    # and the next frames are exactly what an un-warmed twin makes
    ca, cb = nic_block(), nic_block()
    oa, sa = generate(h.sources, 0, 150_000, 0, 4, ca)
    ob, sb = generate(twin.sources, 0, 150_000, 0, 4, cb)
    assert sa == sb and (ca == cb).all() and ca[N.GENERATED] > 0
    for x, y in zip(oa, ob):
        assert (x is None) == (y is None)
        if x is not None:
            assert (x.view(np.uint8) == y.view(np.uint8)).all()
