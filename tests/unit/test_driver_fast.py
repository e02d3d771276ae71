"""The compiled driver poll (cpus.driver) against the general path it short-cuts.

Two hosts get the same frames; one has the compiled paths (UDP delivery, RPS steering by
the map) switched off on every queue. Every
counter of every CPU, every socket's queue and header, and what each reader read must be
identical, for UDP-only traffic (fast path taken), for mixed and malformed batches (fast
path refused), with receive-buffer drops, NoPorts and jumbo frames.
"""

import numpy as np
import pytest

import cpus.driver as driver
from cpus.driver import rx_take, udp_entries
from emu.counters import C
from emu.ring import Ring
from emu.skb import SKB

from .harness import Host

UDP = {"name": "u", "proto": "udp", "rate_pps": 1000.0, "flows": 64,
       "dst_ports": [9000, 9001, 9002, 9003, 9009], "frame_len": 128}
TCP = {"name": "t", "proto": "tcp", "rate_pps": 1000.0, "flows": 8,
       "dst_ports": [80], "frame_len": 600}
JUMBO = dict(UDP, name="j", frame_len=3000)


def make(sources, sets=(), fast=True):
    h = Host(ncpus=2, sets=["ethtool.rx_queues=2", "net.core.rmem_default=65536", *sets],
             sources=sources)
    h.read = {c: [] for c in range(2)}
    for c, cpu in enumerate(h.cpus):
        cpu.app.on_read = lambda e, c=c: h.read[c].append(e.copy())
        if not fast:
            cpu.driver.udp_fast = [False] * len(cpu.driver.udp_fast)
            cpu.driver.rps_map_only = [False] * len(cpu.driver.rps_map_only)
    return h


def drive(h, batches, corrupt=None):
    for b in batches:
        b = b.copy()
        if corrupt is not None:
            corrupt(b)
        h.dma(b)
        for q in np.unique(b["queue"]):
            h.raise_irq(int(q), int(q) % 2)
        h.run_all()


def same(a, b):
    for c in range(2):
        assert np.array_equal(a.counters[c], b.counters[c]), f"cpu{c} counters differ"
        ra = np.concatenate(a.read[c]) if a.read[c] else np.zeros(0)
        rb = np.concatenate(b.read[c]) if b.read[c] else np.zeros(0)
        assert np.array_equal(ra, rb), f"cpu{c} read different datagrams"
    for sa, sb in zip(a.sockets, b.sockets):
        assert np.array_equal(sa.ring.hdr, sb.ring.hdr)
        assert np.array_equal(sa.ring.slots, sb.ring.slots)
    for ra, rb in zip(a.rx, b.rx):
        assert np.array_equal(ra.hdr, rb.hdr)


def run_pair(sources, nbatches, per_batch, sets=(), corrupt=None, monkeypatch=None):
    calls = {"fast": 0}
    if monkeypatch is not None:
        real = driver.udp_entries

        def counting(*args):
            calls["fast"] += 1
            return real(*args)
        monkeypatch.setattr(driver, "udp_entries", counting)
    fast, slow = make(sources, sets), make(sources, sets, fast=False)
    for h in (fast, slow):
        batches = [np.concatenate([h.frames(i, per_batch, t0=k * 10**6)
                                   for i in range(len(sources))])
                   for k in range(nbatches)]
        batches = [b[np.argsort(b["ts"], kind="stable")] for b in batches]
        drive(h, batches, corrupt)
    same(fast, slow)
    return fast, calls


def test_udp_only_takes_the_fast_path_and_matches(monkeypatch):
    h, calls = run_pair([UDP], 12, 300, monkeypatch=monkeypatch)
    c = h.counters[0] + h.counters[1]
    assert calls["fast"] > 0
    assert c[C.PROCESSED] == 12 * 300
    assert c[C.UDP_NO_PORTS] > 0                      # port 9009 has no socket
    assert c[C.UDP_RCVBUF_ERRORS] > 0                 # 64 KiB buffers overflow
    assert c[C.USER_DATAGRAMS] > 0


def test_udp_with_gro_off_matches():
    run_pair([UDP], 6, 200, sets=["sys.class.net.eth0.gro=false"])


def test_mixed_tcp_batches_fall_back_and_match():
    h, _ = run_pair([UDP, TCP], 6, 150)
    c = h.counters[0] + h.counters[1]
    assert c[C.TCP_IN_SEGS] > 0 and c[C.IP_IN_DELIVERS] > 0


def test_jumbo_frames_match():
    h, _ = run_pair([JUMBO], 4, 100)
    c = h.counters[0] + h.counters[1]
    assert c[C.UDP_RCVBUF_ERRORS] > 0


def test_a_bad_checksum_falls_back_and_is_dropped_the_same_way():
    def corrupt(b):
        b["head"][5, 24] ^= 0xFF                      # IPv4 header checksum byte
    h, _ = run_pair([UDP], 4, 200, corrupt=corrupt)
    c = h.counters[0] + h.counters[1]
    assert c[C.IP_IN_HDR_ERRORS] == 4


def test_rps_disables_the_fast_path_on_its_queue():
    h = make([UDP], ["sys.class.net.eth0.queues.rx-0.rps_cpus=3"])
    assert h.cpus[0].driver.udp_fast == [False, True]


def test_rx_take_wraps_around_the_ring():
    ring = Ring.local(SKB, 8)
    b = np.zeros(8, dtype=SKB)
    b["seq"] = np.arange(8)
    ring.push(b[:6])
    ring.hdr[8] = 6                                   # consumer at 6: the next 5 slots wrap
    ring.hdr[16 + 6] = 6                              # ... and everything before it judged
    b["seq"] = np.arange(100, 108)
    assert ring.push(b[:5]) == 5
    out = np.zeros((5, SKB.itemsize), dtype=np.uint8)
    drops = np.zeros(16, dtype=np.uint64)
    taken, cons, late, early = rx_take(ring.raw, ring.hdr, 0, 5, 512, out, drops)
    assert (taken, cons, late, early) == (5, 11, 0, 0)
    assert out.view(SKB).reshape(5)["seq"].tolist() == [100, 101, 102, 103, 104]


def test_udp_entries_refuses_a_tcp_frame():
    h = make([UDP, TCP])
    b = np.concatenate([h.frames(0, 3), h.frames(1, 1)])
    raw = b.view(np.uint8).reshape(4, SKB.itemsize)
    ent = np.zeros((4, 32), dtype=np.uint8)
    socks = h.cpus[0].net.socks
    delays = socks.delays(0, 100)
    ok, counts = udp_entries(raw, socks.port_map, len(socks), ent, delays, 0)
    assert not ok
    ok, counts = udp_entries(raw[:3], socks.port_map, len(socks), ent[:3], delays, 0)
    assert ok and counts.sum() == 3


@pytest.mark.parametrize("budget", [64, 200])
def test_a_poll_budget_above_the_weight_grows_the_scratch(budget):
    h = make([UDP])
    cpu = h.cpus[0]
    b = h.frames(0, 300)
    h.dma(b[b["queue"] == 0])
    cpu.time.idle_until(h.last_ts[0])               # every frame has arrived
    n = cpu.driver.napis[0]
    n.state = 1                                       # scheduled, as napi_poll requires
    work = cpu.driver.poll(n, budget)
    assert work == min(budget, int((b["queue"] == 0).sum()))
    assert cpu.counters[C.PROCESSED] == work


# -- RPS by the map alone (cpus.driver.rps_group) ------------------------------------------

RPS = ["sys.class.net.eth0.queues.rx-0.rps_cpus=3", "sys.class.net.eth0.queues.rx-1.rps_cpus=3"]


def counting_rps(monkeypatch):
    calls = {"taken": 0, "refused": 0}
    real = driver.rps_group

    def wrapper(*args):
        taken, counts = real(*args)
        calls["taken" if taken else "refused"] += 1
        return taken, counts
    monkeypatch.setattr(driver, "rps_group", wrapper)
    return calls


def test_rps_map_steering_takes_the_compiled_path_and_matches(monkeypatch):
    calls = counting_rps(monkeypatch)
    h, _ = run_pair([UDP], 10, 300, sets=RPS)
    c = h.counters[0] + h.counters[1]
    assert calls["taken"] > 0 and calls["refused"] == 0
    assert c[C.RECEIVED_RPS] > 0 and c[C.BACKLOG_ENQUEUED] > 0
    assert c[C.PROCESSED] == 10 * 300


def test_rps_with_backlog_and_flow_limit_drops_matches(monkeypatch):
    calls = counting_rps(monkeypatch)
    h, _ = run_pair([UDP], 6, 400, sets=RPS + ["net.core.netdev_max_backlog=40",
                                                "net.core.flow_limit_cpu_bitmap=3"])
    c = h.counters[0] + h.counters[1]
    assert calls["taken"] > 0
    assert c[C.BACKLOG_DROP_QLEN] + c[C.BACKLOG_DROP_FLOW_LIMIT] > 0


def test_rps_with_tcp_and_gro_falls_back_and_matches(monkeypatch):
    calls = counting_rps(monkeypatch)
    run_pair([UDP, TCP], 4, 150, sets=RPS)
    assert calls["refused"] > 0


def test_rps_with_tcp_and_gro_off_is_steered_and_matches(monkeypatch):
    calls = counting_rps(monkeypatch)
    h, _ = run_pair([UDP, TCP], 4, 150, sets=RPS + ["sys.class.net.eth0.gro=false"])
    assert calls["taken"] > 0 and calls["refused"] == 0
    assert (h.counters[0] + h.counters[1])[C.TCP_IN_SEGS] > 0


def test_rps_with_l3_nic_hashes_falls_back_to_the_software_hash_and_matches(monkeypatch):
    calls = counting_rps(monkeypatch)
    run_pair([UDP], 4, 150, sets=RPS + ["ethtool.udp4_hash=sd"])
    assert calls["refused"] > 0 and calls["taken"] == 0


def test_rfs_queues_keep_the_general_path():
    h = make([UDP], RPS + ["net.core.rps_sock_flow_entries=4096",
                           "sys.class.net.eth0.queues.rx-0.rps_flow_cnt=256"])
    assert h.cpus[0].driver.rps_map_only == [False, True]
