"""The vectorised fast paths of cpus.ip / cpus.sock / cpus.gro against reference code.

parse() is compared field by field with the straightforward byte-by-byte reading it
replaced, and ip_rcv_deliver()'s all-valid-UDP and all-valid-TCP fast paths with the
general path (forced by disabling the fast check), on random mixes of good and bad frames:
same counters, same result, same socket contents.
"""

import threading

import numpy as np
import pytest

import cpus.ip as ip
from cpus.ip import HDR_CSUM, HDR_ERR, HDR_OK, HDR_TRUNC, ip_rcv_deliver, parse
from cpus.sock import SocketTable, UdpSocket
from emu.skb import SOCK_ENTRY, socket_ring_capacity, truesize_of
from cpus.ip import (_IP_IN_CSUM_ERRORS, _IP_IN_TRUNCATED, IPPROTO_TCP, IPPROTO_UDP,
                     DeliverResult)
from emu.counters import MAX_SOURCES, SRC_DELIVERED0, SRC_DROP0, C, Drop, count_per_source, cpu_block
from emu.ring import Ring

from .test_ip import frame, skbs_of


# -- reference parse (the byte-by-byte version the fast one replaced) ------------------------

def _be16(head, off):
    if np.ndim(off) == 0:
        return (head[:, off].astype(np.uint32) << 8) | head[:, off + 1]
    rows = np.arange(head.shape[0])
    return (head[rows, off].astype(np.uint32) << 8) | head[rows, off + 1]


def _be32(head, off):
    return ((head[:, off].astype(np.uint32) << 24) | (head[:, off + 1].astype(np.uint32) << 16)
            | (head[:, off + 2].astype(np.uint32) << 8) | head[:, off + 3])


def ref_parse(skbs):
    head = skbs["head"]
    n = head.shape[0]
    p = {}
    p["ethertype"] = _be16(head, 12).astype(np.uint16)
    p["is_ipv4"] = p["ethertype"] == 0x0800
    vi = head[:, 14]
    p["version"] = (vi >> 4).astype(np.uint8)
    p["ihl"] = (vi & 0x0F).astype(np.uint8)
    p["hlen"] = p["ihl"].astype(np.int64) * 4
    p["tot_len"] = _be16(head, 16).astype(np.uint16)
    p["protocol"] = head[:, 23].copy()
    p["saddr"] = _be32(head, 26)
    p["daddr"] = _be32(head, 30)
    p["ip_len"] = skbs["len"].astype(np.int64) - 14
    words = (head[:, 14:74:2].astype(np.uint32) << 8) | head[:, 15:74:2]
    used = np.arange(30) < (p["ihl"].astype(np.int64) * 2)[:, None]
    s = np.where(used, words, 0).sum(axis=1, dtype=np.uint64)
    s = (s & 0xFFFF) + (s >> np.uint64(16))
    s = (s & 0xFFFF) + (s >> np.uint64(16))
    csum_ok = s == 0xFFFF
    tot = p["tot_len"].astype(np.int64)
    err = np.full(n, HDR_OK, dtype=np.uint8)
    pending = p["is_ipv4"].copy()
    for cond, code in ((p["ip_len"] < 20, HDR_ERR),
                       ((p["ihl"] < 5) | (p["version"] != 4), HDR_ERR),
                       (p["ip_len"] < p["hlen"], HDR_ERR),
                       (~csum_ok, HDR_CSUM),
                       (p["ip_len"] < tot, HDR_TRUNC),
                       (tot < p["hlen"], HDR_ERR)):
        hit = pending & cond
        err[hit] = code
        pending &= ~hit
    p["hdr_err"] = err
    p["hdr_ok"] = p["is_ipv4"] & (err == HDR_OK)
    l4 = 14 + np.clip(p["hlen"], 0, 60)
    l4_ok = p["hdr_ok"] & ((p["protocol"] == 17) | (p["protocol"] == 6))
    p["sport"] = np.where(l4_ok, _be16(head, l4), 0).astype(np.uint16)
    p["dport"] = np.where(l4_ok, _be16(head, l4 + 2), 0).astype(np.uint16)
    is_tcp = p["hdr_ok"] & (p["protocol"] == 6)
    is_udp = p["hdr_ok"] & (p["protocol"] == 17)
    p["tcp_flags"] = np.where(is_tcp, head[np.arange(n), l4 + 13], 0).astype(np.uint8)
    p["udp_len"] = np.where(is_udp, _be16(head, l4 + 4), 0).astype(np.uint16)
    return p


# -- reference delivery (the mask-by-mask version the fast one replaced) -----------------------

class _P:
    def __init__(self, d):
        self.__dict__.update(d)


def _drop(res, counters, reason, skbs):
    if skbs.shape[0]:
        res.dropped[reason] += skbs.shape[0]
        count_per_source(counters, SRC_DROP0 + reason * MAX_SOURCES, skbs)


def ref_admit(sizes, rmem, rcvbuf):
    """The 6.18 receive-buffer rule, one skb at a time, written from the kernel's test."""
    acc = []
    for size in sizes:
        size = int(size)
        ok = not (rmem + size > rcvbuf and (rcvbuf > (2**31 - 1) >> 1 or rmem != 0))
        acc.append(ok)
        if ok:
            rmem += size
    return np.array(acc, dtype=bool), rmem


def ref_enqueue(sock, entries):
    """__udp_queue_rcv_skb written plainly over the socket's ring and words."""
    ring = sock.ring
    if sock.connected and len(entries):
        ring.set_user(2, int(entries["hash"][-1]))       # sk_rxhash
    was_empty = len(ring) == 0
    accepted, rmem = ref_admit(entries["truesize"], ring.user(0), sock.rcvbuf)
    ring.push(entries[accepted])
    ring.set_user(0, rmem)
    ring.set_user(1, ring.user(1) + int((~accepted).sum()))   # sk_drops
    return accepted, bool(accepted.any() and was_empty)


def ref_ip_rcv_deliver(skbs, parsed, counters, socks):
    """Deliver a batch after `processed` was counted; returns counts and sockets to wake."""
    res = DeliverResult()
    n = skbs.shape[0]
    if n == 0:
        return res

    # ptype dispatch: only ETH_P_IP has a handler
    non_ip = ~parsed.is_ipv4
    k = int(non_ip.sum())
    if k:
        counters[C.RX_DROPPED] += k
        _drop(res, counters, Drop.NOHANDLER, skbs[non_ip])
    ip = parsed.is_ipv4
    res.ip = n - k
    if not res.ip:
        return res

    # ip_rcv_core: InReceives and InOctets, then the ECN class once ihl/version pass
    counters[C.IP_IN_RECEIVES] += res.ip
    counters[C.IP_IN_OCTETS] += int(parsed.ip_len[ip].sum())
    ecn_ok = ip & (parsed.ip_len >= 20) & (parsed.ihl >= 5) & (parsed.version == 4)
    tos = skbs["head"][:, 15] & 3
    for cls in range(4):
        sel = ecn_ok & (tos == cls)
        counters[C.IP_IN_NOECT_PKTS + cls] += int(np.maximum(1, skbs["segs"][sel]).sum())
    err = parsed.hdr_err
    bad = ip & ~parsed.hdr_ok
    if bad.any():
        n_hdr = int(((err == HDR_ERR) | (err == HDR_CSUM)).sum())
        n_csum = int((err == HDR_CSUM).sum())
        n_trunc = int((err == HDR_TRUNC).sum())
        if n_hdr:
            counters[C.IP_IN_HDR_ERRORS] += n_hdr
        if n_csum and _IP_IN_CSUM_ERRORS is not None:
            counters[_IP_IN_CSUM_ERRORS] += n_csum
        if n_trunc and _IP_IN_TRUNCATED is not None:
            counters[_IP_IN_TRUNCATED] += n_trunc
        _drop(res, counters, Drop.IP_HDR, skbs[bad])

    # ip_local_deliver -> ip_protocol_deliver_rcu
    good = parsed.hdr_ok
    proto = parsed.protocol
    is_tcp = good & (proto == IPPROTO_TCP)
    is_udp = good & (proto == IPPROTO_UDP)
    unknown = good & ~is_tcp & ~is_udp
    k = int(unknown.sum())
    if k:
        counters[C.IP_IN_UNKNOWN_PROTOS] += k
        _drop(res, counters, Drop.NOHANDLER, skbs[unknown])

    res.tcp = int(is_tcp.sum())
    if res.tcp:
        tcp = skbs[is_tcp]
        counters[C.TCP_IN_SEGS] += res.tcp
        count_per_source(counters, SRC_DELIVERED0, tcp)
        res.consumed += res.tcp

    res.udp = int(is_udp.sum())
    if res.udp:
        _ref_udp_rcv(skbs, parsed, is_udp, counters, socks, res)

    delivers = res.tcp + res.udp
    if delivers:
        counters[C.IP_IN_DELIVERS] += delivers
    return res


def _ref_udp_rcv(skbs, parsed, is_udp, counters, socks, res) -> None:
    """__udp4_lib_rcv for the UDP skbs of the batch (order kept within each socket)."""
    l4_len = parsed.tot_len.astype(np.int64) - parsed.hlen
    ulen = parsed.udp_len.astype(np.int64)
    short = is_udp & ((l4_len < 8) | (ulen > l4_len) | (ulen < 8))
    k = int(short.sum())
    if k:
        counters[C.UDP_IN_ERRORS] += k
        _drop(res, counters, Drop.IP_HDR, skbs[short])
    ok = is_udp & ~short
    if not ok.any():
        return

    sel = np.flatnonzero(ok)
    if socks is None or len(socks) == 0:
        sidx = np.full(sel.shape[0], -1, dtype=np.int32)
    else:
        sidx = socks.lookup(parsed.dport[sel], parsed.saddr[sel], parsed.sport[sel])
    none = sidx < 0
    k = int(none.sum())
    if k:
        counters[C.UDP_NO_PORTS] += k
        _drop(res, counters, Drop.NOPORTS, skbs[sel[none]])
    if k == sel.shape[0]:
        return

    for si in np.unique(sidx[~none]):
        rows = sel[sidx == si]
        sk_skbs = skbs[rows]
        entries = np.zeros(rows.shape[0], dtype=SOCK_ENTRY)
        entries["seq"] = sk_skbs["seq"]
        entries["len"] = sk_skbs["len"]
        entries["truesize"] = truesize_of(sk_skbs["len"])
        entries["hash"] = sk_skbs["hash"]
        entries["src"] = sk_skbs["src"]
        entries["segs"] = sk_skbs["segs"]
        sock = socks.sockets[int(si)]
        accepted, woke = ref_enqueue(sock, entries)
        n_acc = int(accepted.sum())
        res.queued += n_acc
        n_drop = rows.shape[0] - n_acc
        if n_drop:
            counters[C.UDP_RCVBUF_ERRORS] += n_drop
            counters[C.UDP_IN_ERRORS] += n_drop
            _drop(res, counters, Drop.RCVBUF, sk_skbs[~accepted])
        if woke:
            res.woken.append((int(si), sock.reader_cpu))


KINDS = [dict(), dict(dport=9001), dict(dport=9002), dict(dport=1), dict(proto=6), dict(proto=1),
         dict(ethertype=0x86DD), dict(bad_csum=True), dict(tot_len=300), dict(tot_len=19),
         dict(udp_len=900), dict(udp_len=7), dict(ihl=6), dict(ihl=4), dict(version=6),
         dict(frame_len=3000), dict(frame_len=60, tot_len=28), dict(sport=10000),
         dict(saddr=0x0A000002, sport=10000), dict(tos=1), dict(tos=2), dict(tos=0xBB)]


def _random_batch(rng, n, kinds):
    frames = [frame(**kinds[int(rng.integers(len(kinds)))]) for _ in range(n)]
    s = skbs_of(frames, hashes=rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32))
    s["src"] = rng.integers(0, 4, n)
    s["segs"] = rng.integers(1, 3, n)
    return s


def _check_fields(s):
    p, ref = parse(s), ref_parse(s)
    for k, want in ref.items():
        got = getattr(p, k)
        assert got.dtype == want.dtype, k
        assert np.array_equal(got, want), k
    return p


@pytest.mark.parametrize("seed", range(6))
def test_parse_matches_reference_on_mixed_batches(seed):
    rng = np.random.default_rng(seed)
    kinds = KINDS if seed % 2 else [k for k in KINDS if "ihl" not in k]   # all-IHL-5 batches too
    for n in (1, 5, 64):
        _check_fields(_random_batch(rng, n, kinds))


def test_parse_fast_paths_taken_only_for_valid_batches():
    good = skbs_of([frame(dport=9000 + i % 3, frame_len=64 + i) for i in range(64)])
    p = parse(good)
    assert p.fast == ip.ALL_UDP
    _check_fields(good)                            # fields computed on demand, identical
    for kw in KINDS:
        if kw in ({}, dict(dport=9001), dict(dport=9002), dict(dport=1), dict(sport=10000),
                  dict(frame_len=3000), dict(frame_len=60, tot_len=28),
                  dict(saddr=0x0A000002, sport=10000), dict(tos=1), dict(tos=2),
                  dict(tos=0xBB)):
            continue                               # still valid UDP
        s = skbs_of([frame()] * 10 + [frame(**kw)] + [frame()] * 5)
        # a valid TCP segment among them: every skb still reaches its handler
        assert parse(s).fast == (ip.VALID if kw == dict(proto=6) else ip.MIXED), kw
        _check_fields(s)


def _sockets(rcvbuf):
    ts = int(truesize_of(np.array([128]))[0])
    out = []
    for port, kw in ((9000, {}), (9001, {}), (9000, dict(connect="10.0.0.1:10000")),
                     (9002, dict(connect="10.0.0.2:10000"))):
        cap = socket_ring_capacity(rcvbuf * ts, 2048)
        out.append(UdpSocket(Ring.local(SOCK_ENTRY, cap), threading.Lock(), port, rcvbuf * ts,
                             reader_cpu=port % 2, **kw))
    return out


def _state(socks):
    return [(sk.ring.slots.tobytes(), sk.ring.hdr.tobytes()) for sk in socks]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("mix", ["all", "good", "good_small", "small", "tcp", "tcp_udp"])
def test_delivery_matches_reference(seed, mix, monkeypatch):
    """New delivery (fast path, and general path with the fast check disabled) against the
    reference, over a sequence of batches with readers draining at random speeds."""
    rng = np.random.default_rng(100 + seed)
    only_good = mix.startswith("good")
    kinds = KINDS[:4] + KINDS[15:] if only_good else KINDS
    if mix.startswith("tcp"):                      # every batch valid TCP (and valid UDP)
        kinds = [dict(proto=6), dict(proto=6, tos=2), dict(proto=6, sport=10000),
                 dict(proto=6, frame_len=3000), dict(proto=6, saddr=0x0A000002)]
        if mix == "tcp_udp":
            kinds += KINDS[:3] + KINDS[15:]
    if mix.endswith("small"):                      # equal truesizes: the prefix rule
        kinds = [k for k in kinds if k.get("frame_len") != 3000]
    batches = [_random_batch(rng, int(rng.integers(1, 70)), kinds) for _ in range(25)]
    rcvbuf = int(rng.integers(1, 40)) if seed else 1000
    outcomes = []
    for mode in ("reference", "fast", "general"):
        if mode == "general":
            monkeypatch.setattr(ip, "FAST_PATH", False)
        socks = _sockets(rcvbuf)
        rng2 = np.random.default_rng(seed)
        table = SocketTable(socks)
        c = cpu_block()
        results = []
        fast_seen = 0
        for s in batches:
            if mode == "reference":
                res = ref_ip_rcv_deliver(s, _P(ref_parse(s)), c, table)
            else:
                p = parse(s)
                fast_seen += p.fast != ip.MIXED
                res = ip_rcv_deliver(s, p, c, table)
            results.append((res.ip, res.udp, res.tcp, res.queued, res.consumed,
                            res.dropped.tolist(), res.woken))
            for sk in socks:                       # readers at random speeds
                sk.recvmsg(int(rng2.integers(0, 20)), sk.reader_cpu, c)
        if mode == "fast" and (only_good or mix.startswith("tcp")):
            assert fast_seen == len(batches)
        if mode == "general":
            assert fast_seen == 0
        outcomes.append((c.tolist(), results, _state(socks)))
    for other in outcomes[1:]:
        assert other[0] == outcomes[0][0]
        assert other[1] == outcomes[0][1]
        assert other[2] == outcomes[0][2]
    assert sum(outcomes[0][0]) > 0


def test_enqueue_matches_the_plain_rule():
    rng = np.random.default_rng(5)
    for _ in range(300):
        sizes = rng.choice([2624, 6720, 4672], size=int(rng.integers(1, 30)))
        if rng.random() < 0.5:
            sizes[:] = sizes[0]                        # equal truesizes: a prefix is taken
        n = len(sizes)
        rcvbuf = int(rng.integers(0, 20)) * 1000 + int(rng.choice([0, 2**31 - 1]))
        rmem = int(rng.choice([0, int(rng.integers(0, 40000))]))
        want, want_rmem = ref_admit(sizes, rmem, rcvbuf)
        for connected in (False, True):
            sk = UdpSocket(Ring.local(SOCK_ENTRY, 64), None, 9000, rcvbuf, 0, connected=connected)
            sk.ring.set_user(0, rmem)
            e = np.zeros(n, dtype=SOCK_ENTRY)
            e["truesize"] = sizes
            e["seq"] = np.arange(n)
            e["hash"] = 77
            accepted, woke = sk.enqueue(e)
            k = int(accepted.sum())
            assert (accepted == want).all()
            assert sk.rmem() == want_rmem and sk.drops() == n - k
            assert woke == (k > 0)
            assert list(sk.ring.pop(64)["seq"]) == list(np.nonzero(want)[0])
            assert sk.rxhash() == (77 if connected else 0)
