"""Frame templates and per-frame stamping: real, parseable, checksummed IPv4 frames."""

import struct

import numpy as np
import pytest

from nic.frames import flow_templates, ip_to_int, ipv4_checksum, stamp
from nic.rss import Rss


def _cfg(**kw):
    cfg = {"proto": "udp", "frame_len": 128, "flows": 4, "dst_ports": [9000, 9001],
           "src_net": "10.0.0.0", "dst_ip": "192.168.0.1", "queue": -1}
    cfg.update(kw)
    return cfg


def _words_sum(hdr):
    s = sum(struct.unpack(f">{len(hdr) // 2}H", bytes(hdr)))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _rss(nq=4, udp="sdfn", tcp="sdfn"):
    key = bytes(range(7, 7 + 52))
    return Rss(key, [i % nq for i in range(128)], udp, tcp)


def test_ipv4_checksum_known_header():
    hdr = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert ipv4_checksum(np.frombuffer(hdr, np.uint8)[None]).tolist() == [0xB861]
    fixed = bytes.fromhex("45000073000040004011b861c0a80001c0a800c7")
    assert ipv4_checksum(np.frombuffer(fixed, np.uint8)[None]).tolist() == [0]


@pytest.mark.parametrize("proto,frame_len", [("udp", 128), ("udp", 60), ("tcp", 1514), ("tcp", 64)])
def test_templates_parse_back(proto, frame_len):
    f = flow_templates(_cfg(proto=proto, frame_len=frame_len, flows=5), 5, 3, 0)
    assert len(f) == 5 and f.heads.shape == (5, 128) and f.heads.dtype == np.uint8
    for i, h in enumerate(f.heads):
        h = bytes(h)
        assert h[0:6] == bytes.fromhex("020000000001") and h[6:12] == bytes.fromhex("020000000002")
        assert h[12:14] == b"\x08\x00"
        ver_ihl, tos, tot, ipid, frag, ttl, p, csum, src, dst = struct.unpack(">BBHHHBBHII", h[14:34])
        assert ver_ihl == 0x45 and tos == 0 and ttl == 64 and frag == 0x4000
        assert tot == frame_len - 14
        assert p == (6 if proto == "tcp" else 17) == f.proto[i]
        assert src == ip_to_int("10.0.0.0") + i == f.src_ip[i]
        assert dst == ip_to_int("192.168.0.1") == f.dst_ip[i]
        assert ipid == f.state.next_id[i]
        assert _words_sum(h[14:34]) == 0xFFFF
        sport, dport = struct.unpack(">HH", h[34:38])
        assert sport == 10000 + i == f.src_port[i]
        assert dport == [9000, 9001][i % 2] == f.dst_port[i]
        if proto == "udp":
            ulen, ucsum = struct.unpack(">HH", h[38:42])
            assert ulen == frame_len - 34 and ucsum == 0
            assert f.payload_len == frame_len - 42
        else:
            seq, ack, off, flags, win = struct.unpack(">IIBBH", h[38:50])
            assert seq == f.state.next_seq[i]
            assert off == 0x50 and flags == 0x10 and win == 65535
            assert f.payload_len == frame_len - 54
        if frame_len < 128:
            assert not any(h[frame_len:])


def test_source_ports_differ_between_sources():
    a = flow_templates(_cfg(), 4, 1, 0)
    b = flow_templates(_cfg(), 4, 1, 1)
    assert not set(a.src_port.tolist()) & set(b.src_port.tolist())


def test_many_flows_wrap_ports_into_range():
    f = flow_templates(_cfg(flows=65536), 65536, 1, 15)
    assert f.src_port.min() >= 1024
    assert len(set(zip(f.src_ip.tolist(), f.src_port.tolist()))) == 65536


def test_stamp_ip_id_and_checksum():
    f = flow_templates(_cfg(), 4, 1, 0)
    first = f.state.next_id.copy()
    fi = np.array([0, 1, 0, 0, 3, 1])
    out = stamp(f, fi)
    assert out.shape == (6, 128)
    ids = (out[:, 18].astype(int) << 8) | out[:, 19]
    expect = [(first[0] + 0) & 0xFFFF, first[1], (first[0] + 1) & 0xFFFF, (first[0] + 2) & 0xFFFF,
              first[3], (first[1] + 1) & 0xFFFF]
    assert ids.tolist() == [int(x) for x in expect]
    assert (ipv4_checksum(out[:, 14:34]) == 0).all()
    assert all(_words_sum(r[14:34]) == 0xFFFF for r in out)
    assert f.state.next_id.tolist() == [(first[0] + 3) & 0xFFFF, (first[1] + 2) & 0xFFFF,
                                        first[2], (first[3] + 1) & 0xFFFF]
    # the templates are not modified, only copied
    assert ((f.heads[:, 18].astype(int) << 8 | f.heads[:, 19]) == first).all()


def test_stamp_ip_id_wraps():
    f = flow_templates(_cfg(flows=1), 1, 1, 0)
    f.state.next_id[0] = 0xFFFE
    out = stamp(f, np.zeros(3, dtype=int))
    assert ((out[:, 18].astype(int) << 8 | out[:, 19])).tolist() == [0xFFFE, 0xFFFF, 0]
    assert (ipv4_checksum(out[:, 14:34]) == 0).all()


def test_tcp_seq_contiguous_per_flow_across_batches():
    f = flow_templates(_cfg(proto="tcp", frame_len=1514, flows=3), 3, 9, 1)
    isn = f.state.next_seq.astype(np.uint64).copy()
    rng = np.random.default_rng(0)
    b1 = stamp(f, rng.integers(0, 3, 50))
    b2 = stamp(f, rng.integers(0, 3, 70))
    frames = np.concatenate([b1, b2])
    seq = frames[:, 38:42].copy().view(">u4").ravel().astype(np.uint64)
    sport = frames[:, 34:36].copy().view(">u2").ravel()
    for i in range(3):
        s = seq[sport == f.src_port[i]]
        expect = (isn[i] + 1460 * np.arange(len(s), dtype=np.uint64)) % (1 << 32)
        assert s.tolist() == expect.tolist()
    assert (ipv4_checksum(frames[:, 14:34]) == 0).all()


def test_stamp_with_explicit_counters_leaves_flow_state():
    f = flow_templates(_cfg(proto="tcp", frame_len=200), 4, 1, 0)
    snap = f.state.copy()
    before = f.state.next_seq.copy()
    a = stamp(f, np.array([2, 2]), counters=snap)
    assert (f.state.next_seq == before).all()
    b = stamp(f, np.array([2, 2]))
    assert (a == b).all()


def test_stamp_empty_batch():
    f = flow_templates(_cfg(), 4, 1, 0)
    assert stamp(f, np.zeros(0, dtype=int)).shape == (0, 128)


@pytest.mark.parametrize("proto", ["udp", "tcp"])
@pytest.mark.parametrize("queue", [0, 2, 3])
def test_pinned_flows_land_on_the_queue(proto, queue):
    rss = _rss()
    f = flow_templates(_cfg(proto=proto, flows=16, queue=queue), 16, 1, 3, rss)
    h, l4 = rss.hash_heads(f.heads)
    assert (rss.queue_of(h) == queue).all()
    assert (l4 == 1).all()
    assert len(set(zip(f.src_ip.tolist(), f.src_port.tolist()))) == 16
    # moved up from the default ports, never down
    assert (f.src_port >= 13000).all()


def test_pinning_with_ip_only_hash_picks_addresses():
    rss = _rss(udp="sd")
    f = flow_templates(_cfg(flows=16, queue=1), 16, 1, 0, rss)
    h, l4 = rss.hash_heads(f.heads)
    assert (rss.queue_of(h) == 1).all() and (l4 == 0).all()
    assert len(set(f.src_ip.tolist())) == 16
    assert (ipv4_checksum(f.heads[:, 14:34]) == 0).all()


def test_pinning_needs_rss_and_a_reachable_queue():
    with pytest.raises(ValueError):
        flow_templates(_cfg(queue=1), 4, 1, 0)
    rss = Rss(bytes(range(52)), [0] * 128, "sdfn", "sdfn")
    with pytest.raises(ValueError):
        flow_templates(_cfg(queue=1), 4, 1, 0, rss)


@pytest.mark.parametrize("fields", ["sd", "sdfn"])
def test_pinning_with_a_key_that_cannot_steer_fails_fast(fields):
    rss = Rss(bytes(52), [i % 4 for i in range(128)], fields, fields)  # every hash is 0
    with pytest.raises(ValueError):
        flow_templates(_cfg(flows=65536, queue=3), 65536, 1, 0, rss)
    assert flow_templates(_cfg(flows=4, queue=0), 4, 1, 0, rss).src_port.tolist() == [10000, 10001, 10002, 10003]


def test_templates_deterministic_in_seed():
    a = flow_templates(_cfg(proto="tcp", frame_len=100), 4, 5, 2)
    b = flow_templates(_cfg(proto="tcp", frame_len=100), 4, 5, 2)
    c = flow_templates(_cfg(proto="tcp", frame_len=100), 4, 6, 2)
    assert (a.heads == b.heads).all()
    assert not (a.heads == c.heads).all()
