"""Protocol delivery: ip_rcv_core checks and MIBs, UDP/TCP dispatch, per-source conservation."""

import struct
import threading

import numpy as np
import pytest

from cpus.ip import HDR_CSUM, HDR_ERR, HDR_OK, HDR_TRUNC, ip_rcv_deliver, parse
from cpus.sock import SocketTable, UdpSocket
from emu.skb import SOCK_ENTRY, socket_ring_capacity, truesize_of
from emu.counters import MAX_SOURCES, NR_DROP, SRC_DELIVERED0, C, Drop, cpu_block, src_drop
from emu.ring import Ring
from emu.skb import SKB

SADDR = 0x0A000001          # 10.0.0.1
DADDR = 0xC0A80001          # 192.168.0.1


def _csum(hdr: bytes) -> int:
    s = sum(struct.unpack(f">{len(hdr) // 2}H", hdr))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def frame(proto=17, sport=10000, dport=9000, saddr=SADDR, daddr=DADDR, frame_len=128,
          ihl=5, version=4, tot_len=None, ethertype=0x0800, bad_csum=False, udp_len=None,
          tcp_flags=0x10, tos=0):
    """Head bytes of one frame and its wire length."""
    eth = bytes(6) + bytes(6) + struct.pack(">H", ethertype)
    hlen = ihl * 4
    if tot_len is None:
        tot_len = frame_len - 14
    opts = bytes(max(0, hlen - 20))
    iph = struct.pack(">BBHHHBBHII", (version << 4) | ihl, tos, tot_len, 1, 0x4000, 64, proto, 0,
                      saddr, daddr) + opts
    c = _csum(iph)
    if bad_csum:
        c ^= 0x0101
    iph = iph[:10] + struct.pack(">H", c) + iph[12:]
    if proto == 17:
        l4 = struct.pack(">HHHH", sport, dport, udp_len if udp_len is not None else max(0, tot_len - hlen), 0)
    elif proto == 6:
        l4 = struct.pack(">HHIIBBHHH", sport, dport, 1, 0, 5 << 4, tcp_flags, 65535, 0, 0)
    else:
        l4 = bytes(8)
    raw = (eth + iph + l4)[:128]
    return raw, frame_len


def skbs_of(frames, src=0, segs=1, seq0=0, hashes=None):
    out = np.zeros(len(frames), dtype=SKB)
    for i, (raw, flen) in enumerate(frames):
        out["head"][i, :len(raw)] = np.frombuffer(raw, dtype=np.uint8)
        out["len"][i] = flen
    out["seq"] = seq0 + np.arange(len(frames))
    out["src"] = src
    out["segs"] = segs
    out["hash"] = 0x1234567 if hashes is None else hashes
    return out


def sock(port=9000, rcvbuf=212992, reader_cpu=1, **kw):
    cap = socket_ring_capacity(rcvbuf, int(truesize_of(np.array([60]))[0]))
    return UdpSocket(Ring.local(SOCK_ENTRY, cap), threading.Lock(), port, rcvbuf, reader_cpu, **kw)


def deliver(skbs, socks=None):
    c = cpu_block()
    table = SocketTable(socks or [])
    res = ip_rcv_deliver(skbs, parse(skbs), c, table)
    return c, res


def src_drops(c, reason, src=0):
    return int(c[src_drop(reason, src)])


# -- parse ---------------------------------------------------------------------------------

def test_parse_reads_every_field():
    s = skbs_of([frame(17, 1234, 9001, frame_len=200), frame(6, 4321, 80, tcp_flags=0x18),
                 frame(1), frame(ethertype=0x86DD)])
    p = parse(s)
    assert list(p.ethertype) == [0x0800, 0x0800, 0x0800, 0x86DD]
    assert list(p.is_ipv4) == [True, True, True, False]
    assert list(p.ihl[:3]) == [5, 5, 5] and list(p.hlen[:3]) == [20, 20, 20]
    assert list(p.protocol[:3]) == [17, 6, 1]
    assert p.tot_len[0] == 186 and p.udp_len[0] == 166
    assert list(p.saddr[:3]) == [SADDR] * 3 and list(p.daddr[:3]) == [DADDR] * 3
    assert list(p.sport) == [1234, 4321, 0, 0]
    assert list(p.dport) == [9001, 80, 0, 0]
    assert list(p.tcp_flags) == [0, 0x18, 0, 0]
    assert list(p.hdr_ok) == [True, True, True, False]


def test_parse_options_header_and_ports_after_options():
    s = skbs_of([frame(17, 555, 9000, ihl=7)])
    p = parse(s)
    assert p.hdr_ok[0] and p.hlen[0] == 28
    assert p.sport[0] == 555 and p.dport[0] == 9000


def test_checksum_matches_reference_on_random_headers():
    rng = np.random.default_rng(1)
    frames = []
    for _ in range(200):
        ihl = int(rng.integers(5, 16))
        raw, flen = frame(17, int(rng.integers(1, 65535)), 9000, saddr=int(rng.integers(0, 2**32)),
                          daddr=int(rng.integers(0, 2**32)), ihl=ihl, frame_len=128)
        frames.append((raw, flen))
    s = skbs_of(frames)
    # flip one random header byte in half of them
    flip = rng.random(200) < 0.5
    for i in np.flatnonzero(flip):
        ihl = s["head"][i, 14] & 0xF
        off = 14 + 12 + int(rng.integers(0, ihl * 4 - 12))   # addresses/options/checksum
        s["head"][i, off] ^= 0x40
    p = parse(s)
    expect = np.array([_csum(bytes(s["head"][i, 14:14 + (s["head"][i, 14] & 0xF) * 4])) == 0
                       for i in range(200)])
    assert ((p.hdr_err == HDR_OK) == expect).all()
    assert ((p.hdr_err == HDR_CSUM) == ~expect).all()


# -- ip_rcv_core failures, each in its counter and drop reason ------------------------------

@pytest.mark.parametrize("kw, code", [
    ({"version": 6}, HDR_ERR),
    ({"ihl": 4}, HDR_ERR),
    ({"bad_csum": True}, HDR_CSUM),
    ({"tot_len": 200}, HDR_TRUNC),           # longer than the skb (128 - 14)
    ({"tot_len": 19}, HDR_ERR),              # shorter than the header
])
def test_header_failures(kw, code):
    s = skbs_of([frame(**kw), frame()], src=3)
    c, res = deliver(s, [sock()])
    assert parse(s).hdr_err[0] == code
    assert c[C.IP_IN_RECEIVES] == 2
    # InTruncatedPkts is not InHdrErrors; checksum errors count in InHdrErrors too
    assert c[C.IP_IN_HDR_ERRORS] == (0 if code == HDR_TRUNC else 1)
    assert src_drops(c, Drop.IP_HDR, 3) == 1
    assert res.dropped[Drop.IP_HDR] == 1 and res.dropped.sum() == 1
    assert c[C.IP_IN_DELIVERS] == 1 and res.queued == 1


def test_header_not_in_skb():
    # ihl 15 (60 bytes) but only 50 bytes of IP in the skb; and a 30-byte skb (< 20 bytes IP)
    a = frame(ihl=15, frame_len=64, tot_len=50)
    raw, _ = frame(frame_len=60)
    b = (raw, 14 + 19)
    s = skbs_of([a, b])
    c, _ = deliver(s, [sock()])
    assert list(parse(s).hdr_err) == [HDR_ERR, HDR_ERR]
    assert c[C.IP_IN_HDR_ERRORS] == 2 and src_drops(c, Drop.IP_HDR) == 2


def test_kernel_check_order_csum_before_length():
    # bad checksum and truncated: ip_rcv_core stops at the checksum (InHdrErrors)
    s = skbs_of([frame(bad_csum=True, tot_len=500)])
    assert parse(s).hdr_err[0] == HDR_CSUM
    # truncated and tot_len < ihl*4 cannot both hold; truncation is checked first
    s = skbs_of([frame(tot_len=500, ihl=5)])
    assert parse(s).hdr_err[0] == HDR_TRUNC


def test_padded_short_frame_is_fine():
    # a 60-byte frame carrying a 28-byte datagram: tot_len < skb->len is trimmed, not an error
    s = skbs_of([frame(frame_len=60, tot_len=28)])
    c, res = deliver(s, [sock()])
    assert parse(s).hdr_ok[0] and res.queued == 1


def test_non_ipv4_is_rx_dropped_no_handler():
    s = skbs_of([frame(ethertype=0x0806), frame(ethertype=0x86DD), frame()], src=2)
    c, res = deliver(s, [sock()])
    assert c[C.RX_DROPPED] == 2
    assert c[C.IP_IN_RECEIVES] == 1
    assert src_drops(c, Drop.NOHANDLER, 2) == 2
    assert res.dropped[Drop.NOHANDLER] == 2


def test_unknown_protocol():
    s = skbs_of([frame(proto=1), frame(proto=47)])
    c, res = deliver(s, [sock()])
    assert c[C.IP_IN_UNKNOWN_PROTOS] == 2
    assert c[C.IP_IN_DELIVERS] == 0 and c[C.RX_DROPPED] == 0
    assert src_drops(c, Drop.NOHANDLER) == 2


# -- UDP --------------------------------------------------------------------------------------

def test_udp_closed_port_is_noports_only():
    s = skbs_of([frame(dport=7777)] * 3)
    c, res = deliver(s, [sock(port=9000)])
    assert c[C.UDP_NO_PORTS] == 3
    assert c[C.UDP_IN_ERRORS] == 0                 # NoPorts does not count InErrors
    assert c[C.IP_IN_DELIVERS] == 3                # udp_rcv returned 0
    assert src_drops(c, Drop.NOPORTS) == 3
    assert res.udp == 3 and res.queued == 0


def test_udp_short_packet_is_in_errors():
    s = skbs_of([frame(udp_len=500), frame(udp_len=7), frame()])
    c, res = deliver(s, [sock()])
    assert c[C.UDP_IN_ERRORS] == 2 and c[C.UDP_NO_PORTS] == 0
    assert res.queued == 1 and c[C.IP_IN_DELIVERS] == 3


def test_udp_queued_not_in_datagrams_until_read():
    sk = sock()
    s = skbs_of([frame()] * 4, src=5)
    c, res = deliver(s, [sk])
    assert res.queued == 4 and sk.queued() == 4
    assert c[C.UDP_IN_DATAGRAMS] == 0 and c[SRC_DELIVERED0 + 5] == 0
    got, left = sk.recvmsg(10, 1, c)
    assert len(got) == 4 and left == 0
    assert c[C.UDP_IN_DATAGRAMS] == 4 and c[SRC_DELIVERED0 + 5] == 4
    assert list(got["seq"]) == [0, 1, 2, 3]


def test_rcvbuf_drops_through_udp_rcv():
    ts = int(truesize_of(np.array([128]))[0])
    sk = sock(rcvbuf=3 * ts)
    s = skbs_of([frame()] * 5, src=1)
    c, res = deliver(s, [sk])
    assert res.queued == 3
    assert c[C.UDP_RCVBUF_ERRORS] == 2 and c[C.UDP_IN_ERRORS] == 2   # -ENOMEM counts twice
    assert src_drops(c, Drop.RCVBUF, 1) == 2
    assert c[C.IP_IN_DELIVERS] == 5
    assert sk.drops() == 2 and sk.rmem() == 3 * ts


def test_wakeup_only_on_empty_to_nonempty():
    a, b = sock(port=9000, reader_cpu=2), sock(port=9001, reader_cpu=3)
    table = SocketTable([a, b])
    c = cpu_block()
    s = skbs_of([frame(dport=9000), frame(dport=9001), frame(dport=9000)])
    res = ip_rcv_deliver(s, parse(s), c, table)
    assert sorted(res.woken) == [(0, 2), (1, 3)]
    res = ip_rcv_deliver(s, parse(s), c, table)
    assert res.woken == []                         # both already non-empty
    a.recvmsg(100, 2, c)                           # drain a
    res = ip_rcv_deliver(s, parse(s), c, table)
    assert res.woken == [(0, 2)]


def test_connected_socket_matches_only_its_peer():
    conn = sock(port=9000, connect="10.0.0.1:10000")
    wild = sock(port=9001)
    s = skbs_of([frame(dport=9000, saddr=SADDR, sport=10000),
                 frame(dport=9000, saddr=SADDR, sport=10001),
                 frame(dport=9000, saddr=SADDR + 1, sport=10000),
                 frame(dport=9001, saddr=SADDR + 7, sport=1)])
    c, res = deliver(s, [conn, wild])
    assert conn.queued() == 1 and wild.queued() == 1
    assert c[C.UDP_NO_PORTS] == 2


def test_connected_socket_outranks_wildcard_on_same_port():
    wild = sock(port=9000)
    conn = sock(port=9000, connect="10.0.0.1:10000")
    s = skbs_of([frame(sport=10000), frame(sport=10001)])
    deliver(s, [wild, conn])
    assert conn.queued() == 1 and wild.queued() == 1


# -- TCP ----------------------------------------------------------------------------------------

def test_tcp_consumed_insegs_per_skb_delivered_per_frame():
    s = skbs_of([frame(proto=6), frame(proto=6)], src=4, segs=1)
    s["segs"][1] = 7                               # a GRO super-skb of 7 segments
    c, res = deliver(s)
    assert c[C.TCP_IN_SEGS] == 2                   # tcp_v4_rcv: once per skb
    assert c[SRC_DELIVERED0 + 4] == 8              # every wire frame delivered
    assert c[C.IP_IN_DELIVERS] == 2 and res.tcp == 2 and res.consumed == 2


# -- conservation ------------------------------------------------------------------------------

def test_per_source_conservation_mixed_batch():
    rng = np.random.default_rng(7)
    ts = int(truesize_of(np.array([128]))[0])
    socks = [sock(port=9000, rcvbuf=6 * ts, reader_cpu=0), sock(port=9001, rcvbuf=4 * ts)]
    kinds = [dict(), dict(dport=9001), dict(dport=1), dict(proto=6), dict(proto=1),
             dict(ethertype=0x86DD), dict(bad_csum=True), dict(tot_len=300), dict(udp_len=900)]
    frames, srcs = [], []
    for _ in range(300):
        frames.append(frame(**kinds[int(rng.integers(len(kinds)))]))
        srcs.append(int(rng.integers(0, 4)))
    s = skbs_of(frames)
    s["src"] = srcs
    s["segs"] = rng.integers(1, 4, len(frames))
    c = cpu_block()
    table = SocketTable(socks)
    for part in np.array_split(np.arange(len(s)), 7):
        ip_rcv_deliver(s[part], parse(s[part]), c, table)
        socks[0].recvmsg(3, 0, c)                  # a slow reader on one socket
    for src in range(4):
        sent = int(s["segs"][s["src"] == src].sum())
        dropped = sum(int(c[src_drop(r, src)]) for r in range(NR_DROP))
        queued = sum(int(e["segs"][e["src"] == src].sum())
                     for e in (sk.ring.slots[[(sk.ring.cons + i) & sk.ring.mask
                                              for i in range(len(sk.ring))]] for sk in socks))
        assert int(c[SRC_DELIVERED0 + src]) + dropped + queued == sent
    assert sum(int(c[src_drop(r, src)]) for r in range(NR_DROP) for src in range(MAX_SOURCES)) > 0
