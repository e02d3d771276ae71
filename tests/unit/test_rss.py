"""RSS: Toeplitz against the published vectors (reference §5.3), header parsing, queue lookup."""

import socket
import struct

import numpy as np
import pytest

from nic.frames import flow_templates
from nic.rss import Rss, Toeplitz, toeplitz_hash

MS_KEY = bytes.fromhex(
    "6d5a56da255b0ec24167253d43a38fb0"
    "d0ca2bcbae7b30b477cb2da38030f20c"
    "6a42b73bbeac01fa")

# (src, sport, dst, dport, 2-tuple hash, 4-tuple hash)
VECTORS = [
    ("66.9.149.187", 2794, "161.142.100.80", 1766, 0x323e8fc2, 0x51ccc178),
    ("199.92.111.2", 14230, "65.69.140.83", 4739, 0xd718262a, 0xc626b0ea),
    ("24.19.198.95", 12898, "12.22.207.184", 38024, 0xd2d0a5de, 0x5c2b394a),
    ("38.27.205.30", 48228, "209.142.163.6", 2217, 0x82989176, 0xafc7327f),
    ("153.39.163.191", 44251, "202.188.127.2", 1303, 0x5d1809c5, 0x10e828a2),
]


def _in2(src, dst):
    return socket.inet_aton(src) + socket.inet_aton(dst)


def _in4(src, sport, dst, dport):
    return _in2(src, dst) + struct.pack(">HH", sport, dport)


def _ms_rss(udp="sdfn", tcp="sdfn", nq=4):
    return Rss(MS_KEY, [i % nq for i in range(128)], udp, tcp)


@pytest.mark.parametrize("src,sport,dst,dport,h2,h4", VECTORS)
def test_toeplitz_published_vectors(src, sport, dst, dport, h2, h4):
    assert toeplitz_hash(MS_KEY, _in2(src, dst)) == h2
    assert toeplitz_hash(MS_KEY, _in4(src, sport, dst, dport)) == h4


def test_toeplitz_trailing_zero_bytes_change_nothing():
    src, sport, dst, dport, h2, _ = VECTORS[0]
    assert toeplitz_hash(MS_KEY, _in2(src, dst) + bytes(28)) == h2


def test_toeplitz_key_too_short():
    with pytest.raises(ValueError):
        toeplitz_hash(bytes(15), bytes(12))


def test_batch_matches_published_vectors():
    t = Toeplitz(MS_KEY)
    d4 = np.array([list(_in4(s, sp, d, dp)) for s, sp, d, dp, _, _ in VECTORS], dtype=np.uint8)
    assert t.hash_batch(d4).tolist() == [v[5] for v in VECTORS]
    assert t.hash_batch(d4[:, :8]).tolist() == [v[4] for v in VECTORS]
    assert t.hash_batch(d4).dtype == np.uint32


def test_batch_matches_bitwise_on_random_inputs():
    rng = np.random.default_rng(7)
    key = rng.integers(0, 256, 52, dtype=np.uint8).tobytes()
    t = Toeplitz(key)
    for k in (1, 8, 12, 36, 48):
        data = rng.integers(0, 256, (40, k), dtype=np.uint8)
        got = t.hash_batch(data)
        assert got.tolist() == [toeplitz_hash(key, row.tobytes()) for row in data]


def test_batch_empty_and_too_long():
    t = Toeplitz(MS_KEY)
    assert t.hash_batch(np.zeros((0, 12), np.uint8)).shape == (0,)
    with pytest.raises(ValueError):
        t.hash_batch(np.zeros((1, 37), np.uint8))


def _frame_for(src, sport, dst, dport, proto="udp"):
    """A real frame from nic.frames with the vector's addresses, its source port set."""
    cfg = {"proto": proto, "frame_len": 128, "flows": 1, "dst_ports": [dport],
           "src_net": src, "dst_ip": dst, "queue": -1}
    head = flow_templates(cfg, 1, 1, 0).heads[0].copy()
    head[34:36] = list(struct.pack(">H", sport))
    return head


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_hash_heads_on_real_frames_4tuple(proto):
    heads = np.stack([_frame_for(s, sp, d, dp, proto) for s, sp, d, dp, _, _ in VECTORS])
    h, l4 = _ms_rss().hash_heads(heads)
    assert h.tolist() == [v[5] for v in VECTORS]
    assert l4.tolist() == [1] * len(VECTORS)


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_hash_heads_2tuple_when_fields_are_sd(proto):
    heads = np.stack([_frame_for(s, sp, d, dp, proto) for s, sp, d, dp, _, _ in VECTORS])
    rss = _ms_rss(udp="sd") if proto == "udp" else _ms_rss(tcp="sd")
    h, l4 = rss.hash_heads(heads)
    assert h.tolist() == [v[4] for v in VECTORS]
    assert l4.tolist() == [0] * len(VECTORS)
    other = _ms_rss(tcp="sd") if proto == "udp" else _ms_rss(udp="sd")
    assert other.hash_heads(heads)[0].tolist() == [v[5] for v in VECTORS]


def test_hash_heads_fragments_and_other_protocols_are_l3():
    s, sp, d, dp, h2, h4 = VECTORS[1]
    base = _frame_for(s, sp, d, dp)
    icmp = base.copy()
    icmp[23] = 1
    first_frag = base.copy()
    first_frag[20] = 0x20  # MF, offset 0
    later_frag = base.copy()
    later_frag[20], later_frag[21] = 0x00, 0xB9
    h, l4 = _ms_rss().hash_heads(np.stack([base, icmp, first_frag, later_frag]))
    assert h.tolist() == [h4, h2, h2, h2]
    assert l4.tolist() == [1, 0, 0, 0]


def test_hash_heads_non_ipv4_gets_no_hash():
    s, sp, d, dp, _, _ = VECTORS[0]
    ipv6 = _frame_for(s, sp, d, dp)
    ipv6[12:14] = [0x86, 0xDD]
    h, l4 = _ms_rss().hash_heads(ipv6[None])
    assert h.tolist() == [0] and l4.tolist() == [0]


def test_hash_heads_follows_ihl_to_the_ports():
    s, sp, d, dp, _, h4 = VECTORS[2]
    plain = _frame_for(s, sp, d, dp)
    opt = plain.copy()
    opt[14] = 0x46
    opt[34:38] = [1, 1, 1, 1]  # 4 bytes of IP options (NOPs) before the L4 header
    opt[38:] = plain[34:-4]
    h, _ = _ms_rss().hash_heads(np.stack([plain, opt]))
    assert h.tolist() == [h4, h4]


def test_queue_of_default_table():
    hashes = np.array([v[5] for v in VECTORS] + [0, 127, 128, 0xFFFFFFFF], dtype=np.uint32)
    rss4 = _ms_rss(nq=4)
    assert rss4.queue_of(hashes).tolist() == (hashes % 4).tolist()
    rss3 = _ms_rss(nq=3)
    assert rss3.queue_of(hashes).tolist() == ((hashes & 127) % 3).tolist()


def test_queue_of_custom_table_and_validation():
    indir = [3] * 64 + [1] * 64
    rss = Rss(MS_KEY, indir, "sdfn", "sdfn")
    assert rss.queue_of(np.array([0, 63, 64, 127, 128 + 64], np.uint32)).tolist() == [3, 3, 1, 1, 1]
    with pytest.raises(ValueError):
        Rss(MS_KEY, [0] * 100, "sdfn", "sdfn")
    with pytest.raises(ValueError):
        Rss(MS_KEY, [0] * 128, "sdf", "sdfn")


def test_from_ethtool():
    et = {"rss_key": ":".join(f"{b:02x}" for b in MS_KEY), "rss_indir": [i % 2 for i in range(128)],
          "udp4_hash": "sd", "tcp4_hash": "sdfn"}
    rss = Rss.from_ethtool(et)
    assert rss.key == MS_KEY and not rss.udp4_l4 and rss.tcp4_l4
