"""Traffic sources: arrival counts and times per pattern, flow choice, SKB batches."""

import numpy as np
import pytest

from emu.skb import SKB
from nic.rss import Rss
from nic.traffic import Source

MS = 1_000_000


def _rss(nq=4):
    return Rss(bytes(range(3, 55)), [i % nq for i in range(128)], "sdfn", "sdfn")


def _src(index=0, seed=1, **kw):
    cfg = {"name": "s", "pattern": "constant", "proto": "udp", "rate_pps": 100000.0, "flows": 8,
           "dst_ports": [9000], "frame_len": 128, "queue": -1, "start_ms": 0.0, "stop_ms": -1.0,
           "on_ms": 0.0, "off_ms": 0.0, "src_net": "10.0.0.0", "dst_ip": "192.168.0.1", "weights": []}
    cfg.update(kw)
    return Source(cfg, index, _rss(), seed)


def _collect(src, edges):
    ts, fl = zip(*(src.arrivals(a, b) for a, b in zip(edges[:-1], edges[1:])))
    return np.concatenate(ts), np.concatenate(fl)


@pytest.mark.parametrize("rate", [100000.0, 333333.0, 1500000.0, 7.5, 123456.789])
def test_constant_split_intervals_are_exact(rate):
    whole = _src(rate_pps=rate).arrivals(0, 20 * MS)[0]
    rng = np.random.default_rng(1)
    edges = np.unique(np.r_[0, rng.integers(1, 20 * MS, 500), 20 * MS])
    parts = _collect(_src(rate_pps=rate), edges)[0]
    assert len(parts) == len(whole) == int(rate * 20 * MS // 1e9)
    assert (parts == whole).all()
    assert whole.dtype == np.uint64


def test_constant_evenly_spaced_and_in_interval():
    ts = _src(rate_pps=300000.0).arrivals(5, 10 * MS)[0]
    d = np.diff(ts.astype(np.int64))
    assert set(d.tolist()) <= {3333, 3334}
    assert ts[0] > 5 and ts[-1] <= 10 * MS
    # arrival k at ceil(k / rate): the first one at 3334 ns
    assert ts[0] == 3334


def test_constant_empty_and_degenerate_intervals():
    s = _src()
    assert len(s.arrivals(100, 100)[0]) == 0
    assert len(s.arrivals(200, 100)[0]) == 0
    assert len(_src(rate_pps=0.0).arrivals(0, 10 * MS)[0]) == 0


@pytest.mark.parametrize("pattern", ["constant", "poisson"])
def test_start_and_stop_respected(pattern):
    s = _src(pattern=pattern, rate_pps=1_000_000.0, start_ms=10.0, stop_ms=20.0)
    ts, _ = _collect(s, list(range(0, 40 * MS + 1, 3 * MS + 7)))
    assert ts.min() > 10 * MS and ts.max() <= 20 * MS
    if pattern == "constant":
        assert len(ts) == 10_000
    else:
        assert abs(len(ts) - 10_000) < 5 * 100


def test_poisson_mean_and_order():
    s = _src(pattern="poisson", rate_pps=200_000.0, seed=4)
    counts = [len(s.arrivals(t, t + MS)[0]) for t in range(0, 500 * MS, MS)]
    assert abs(np.mean(counts) - 200.0) < 2.0      # sd of the mean ~0.63
    assert abs(np.var(counts) - 200.0) < 40.0      # Poisson: variance = mean
    ts = s.arrivals(500 * MS, 501 * MS)[0]
    assert (np.diff(ts.astype(np.int64)) >= 0).all() and ts.min() > 500 * MS and ts.max() <= 501 * MS


def test_poisson_deterministic_in_seed():
    a = _src(pattern="poisson", seed=3).arrivals(0, 5 * MS)
    b = _src(pattern="poisson", seed=3).arrivals(0, 5 * MS)
    c = _src(pattern="poisson", seed=4).arrivals(0, 5 * MS)
    assert (a[0] == b[0]).all() and (a[1] == b[1]).all()
    assert len(a[0]) != len(c[0]) or (a[0] != c[0]).any()


def test_onoff_gaps():
    s = _src(pattern="onoff", rate_pps=1_000_000.0, on_ms=1.0, off_ms=2.0, start_ms=1.0)
    ts, _ = _collect(s, list(range(0, 10 * MS + 1, 250_007)) + [10 * MS])
    t = ts.astype(np.int64) - 1 * MS
    phase = (t - 1) % (3 * MS)
    assert (phase < 1 * MS).all()                  # nothing during the off phases
    assert len(ts) == 3000                         # 3 full on phases in (1ms, 10ms]
    gaps = np.diff(ts.astype(np.int64))
    assert (gaps > 2 * MS).sum() == 2
    assert set(gaps[gaps < MS].tolist()) == {1000}
    whole = _src(pattern="onoff", rate_pps=1_000_000.0, on_ms=1.0, off_ms=2.0, start_ms=1.0)
    assert (whole.arrivals(0, 10 * MS)[0] == ts).all()


def test_uniform_flow_choice():
    _, fl = _src(rate_pps=1e6, flows=8).arrivals(0, 100 * MS)
    counts = np.bincount(fl, minlength=8)
    assert fl.min() >= 0 and fl.max() < 8
    assert (abs(counts - 12500) < 600).all()


def test_weights_skew_flow_choice():
    _, fl = _src(rate_pps=1e6, flows=4, weights=[8.0, 1.0, 0.0, 1.0]).arrivals(0, 100 * MS)
    share = np.bincount(fl, minlength=4) / len(fl)
    assert abs(share[0] - 0.8) < 0.01 and share[2] == 0
    assert abs(share[1] - 0.1) < 0.01 and abs(share[3] - 0.1) < 0.01


def test_make_batch_fills_the_skb():
    s = _src(index=2, proto="tcp", frame_len=1514, flows=4, rate_pps=1e6)
    ts, fl = s.arrivals(0, 100_000)
    b = s.make_batch(ts, fl, 1000)
    assert b.dtype == SKB and len(b) == len(ts) == 100
    assert b["seq"].tolist() == list(range(1000, 1100))
    assert (b["ts"] == ts).all() and (b["len"] == 1514).all() and (b["segs"] == 1).all()
    assert (b["src"] == 2).all() and (b["l4_hash"] == 1).all() and (b["sw_hash"] == 0).all()
    h, _ = s.rss.hash_heads(b["head"])
    assert (b["hash"] == h).all() and (b["queue"] == h % 4).all()
    sport = b["head"][:, 34:36].copy().view(">u2").ravel()
    assert (sport == s.flows.src_port[fl]).all()


def test_pinned_source_batch_is_on_its_queue():
    s = _src(flows=8, queue=2, rate_pps=1e6)
    ts, fl = s.arrivals(0, MS)
    b = s.make_batch(ts, fl, 0)
    assert (b["queue"] == 2).all() and len(b) == 1000
