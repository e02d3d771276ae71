"""Protocol delivery: __netif_receive_skb_core's ptype dispatch, ip_rcv, udp_rcv, tcp_v4_rcv.

Vectorised over a batch of skbs (emu.skb.SKB). The caller has already counted softnet
`processed`. Each skb ends here in exactly one of: consumed (TCP: its wire frames count as
delivered per source), a socket's receive queue (UDP: delivered when the application reads
it, see cpus.sock), or a drop with one reason (Drop) whose per-source SRC_DROP slot gets the
skb's wire frames (gso_segs).

Kernel behaviour followed (6.x; net/core/dev.c, net/ipv4/ip_input.c, udp.c, tcp_ipv4.c):

* No packet_type for the ethertype: freed, the device's core ``rx_dropped`` += 1
  (``rx_nohandler`` only when an rx_handler asked for exact delivery: not modelled).
* ip_rcv_core, in this order: InReceives += 1 per skb (not per segment); then
    skb->len < 20                      -> InHdrErrors
    ihl < 5 or version != 4            -> InHdrErrors
    skb->len < ihl*4                   -> InHdrErrors
    ip_fast_csum != 0                  -> InCsumErrors and InHdrErrors
    skb->len < tot_len                 -> InTruncatedPkts only (not InHdrErrors)
    tot_len < ihl*4                    -> InHdrErrors
  (skb->len here is the wire length minus the 14-byte Ethernet header.) Every skb that
  reaches ip_rcv_core also counts InOctets (its length), and once its header is pullable
  with ihl >= 5 and version 4, its ECN class (IpExt). All these drops use Drop.IP_HDR.
* ip_protocol_deliver_rcu: no inet_protos handler (not TCP/UDP here) -> InUnknownProtos
  (Drop.NOHANDLER); otherwise the handler runs and, as udp_rcv and tcp_v4_rcv return 0 even
  when they drop, InDelivers += 1 per skb handed to UDP or TCP (including NoPorts, short
  UDP packets and receive-buffer drops).
* __udp4_lib_rcv: UDP header not pullable, ulen > skb->len or ulen < 8 -> Udp InErrors
  (short packet; Drop.IP_HDR, the closest reason the Drop enum has); no socket -> NoPorts only
  (no InErrors; an ICMP port unreachable goes out); socket -> __udp_queue_rcv_skb, whose
  -ENOMEM drop counts RcvbufErrors and InErrors (Drop.RCVBUF). InDatagrams is counted by
  udp_recvmsg, when the application reads the datagram.
* tcp_v4_rcv: TcpInSegs += 1 per skb ("Count it even if it's bad"; a GRO super-skb counts
  once; only the socket's segs_in counts gso_segs). TCP is consumed here: its frames count
  as delivered.
Not modelled: routing (every IPv4 packet is for this host), fragments/reassembly, IP options,
L4 checksums (the NIC reports CHECKSUM_UNNECESSARY), raw sockets, VLAN tags.
"""

from __future__ import annotations

import numpy as np

from emu.counters import MAX_SOURCES, NR_DROP, SRC_DELIVERED0, SRC_DROP0, C, Drop, count_per_source
from emu.inet import ip_fast_csum
from emu.jit import kernel

from emu.skb import SOCK_ENTRY, truesize

from .sock import SocketTable

ETH_HLEN = 14
ETH_P_IP = 0x0800
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IP_OFF = ETH_HLEN

# header error classes (ip_rcv_core), by which counters they move
HDR_OK, HDR_ERR, HDR_CSUM, HDR_TRUNC = 0, 1, 2, 3

_IP_IN_CSUM_ERRORS = int(C.IP_IN_CSUM_ERRORS)
_IP_IN_TRUNCATED = int(C.IP_IN_TRUNCATED_PKTS)


def _be16(head: np.ndarray, off) -> np.ndarray:
    if np.ndim(off) == 0:
        return (head[:, off].astype(np.uint32) << 8) | head[:, off + 1]
    rows = np.arange(head.shape[0])
    return (head[rows, off].astype(np.uint32) << 8) | head[rows, off + 1]


# One view of an SKB record (emu.skb.SKB: 32-byte descriptor, then the head bytes) with the
# header fields at fixed offsets (L4 fields for a 20-byte IP header): each field is one
# strided view, read without shifts.
_H = 32                                   # offset of "head" in an SKB record
_SKB_SIZE = 160
_HDR = np.dtype({
    "names": ["len", "eth_type", "vi", "tot_len", "protocol", "saddr", "daddr",
              "sport", "dport", "ulen", "tcp_flags"],
    "formats": ["<u4", ">u2", "u1", ">u2", "u1", ">u4", ">u4", ">u2", ">u2", ">u2", "u1"],
    "offsets": [20, _H + 12, _H + 14, _H + 16, _H + 23, _H + 26, _H + 30,
                _H + 34, _H + 36, _H + 38, _H + 47],
    "itemsize": 160,
})


_PUBLIC = frozenset(("ethertype", "is_ipv4", "version", "ihl", "hlen", "tot_len", "protocol",
                     "saddr", "daddr", "sport", "dport", "tcp_flags", "udp_len", "hdr_err",
                     "hdr_ok", "ip_len"))


MIXED, ALL_UDP, VALID = 0, 1, 2      # ip_rcv_core_check's verdict on a batch


@kernel
def ip_rcv_core_check(raw, err):
    """ip_rcv_core's checks, in the kernel's order, for each row (an SKB record's bytes):
    err[i] = HDR_OK, HDR_ERR, HDR_CSUM or HDR_TRUNC (HDR_OK for a frame that is not IPv4,
    which never reaches ip_rcv). skb->len here is the wire length minus the Ethernet header.

    Returns ALL_UDP if every row is an IPv4 UDP datagram with a 20-byte header that passes
    them and __udp4_lib_rcv's length checks (8 <= ulen <= tot_len - 20): the condition of
    the UDP fast path, where no ptype, header or length drop can happen; VALID if every row
    is such a datagram or an IPv4 TCP segment that passes them (tcp_v4_rcv consumes it whole
    here: no drop either); else MIXED, for the general path.
    """
    all_udp = True
    valid = True
    h = _H + ETH_HLEN
    for i in range(raw.shape[0]):
        r = raw[i]
        if r[_H + 12] != 0x08 or r[_H + 13] != 0x00:
            err[i] = HDR_OK
            all_udp = False
            valid = False
            continue
        ip_len = (np.int64(r[20]) | (np.int64(r[21]) << 8) | (np.int64(r[22]) << 16)
                  | (np.int64(r[23]) << 24)) - ETH_HLEN
        ihl = np.int64(r[h] & 0xF)
        version = np.int64(r[h] >> 4)
        hlen = ihl * 4
        tot = (np.int64(r[h + 2]) << 8) | np.int64(r[h + 3])
        if ip_len < 20 or ihl < 5 or version != 4 or ip_len < hlen:
            e = HDR_ERR
        elif ip_fast_csum(r, h, ihl) != 0:
            e = HDR_CSUM
        elif ip_len < tot:
            e = HDR_TRUNC
        elif tot < hlen:
            e = HDR_ERR
        else:
            e = HDR_OK
        err[i] = e
        if all_udp or valid:
            ulen = (np.int64(r[h + 24]) << 8) | np.int64(r[h + 25])
            udp_ok = (e == HDR_OK and ihl == 5 and r[h + 9] == IPPROTO_UDP and ulen >= 8
                      and ulen <= tot - 20)
            if not udp_ok:
                all_udp = False
                if e != HDR_OK or r[h + 9] != IPPROTO_TCP:
                    valid = False
    if raw.shape[0] == 0:
        return MIXED
    if all_udp:
        return ALL_UDP
    return VALID if valid else MIXED


class Parsed:
    """Per-skb header fields (numpy arrays of the batch's length).

    ``fast`` is ALL_UDP when every skb is a valid IPv4 UDP datagram with a 20-byte header,
    VALID when every one is such a datagram or a valid IPv4 TCP segment (see
    ip_rcv_core_check), else MIXED (0); when fast, only the views the delivery needs are
    prepared, and the public fields are computed (by the general path) the first time one
    is read.
    """

    __slots__ = ("ethertype", "is_ipv4", "version", "ihl", "hlen", "tot_len", "protocol",
                 "saddr", "daddr", "sport", "dport", "tcp_flags", "udp_len", "hdr_err",
                 "hdr_ok", "ip_len", "fast", "_skbs", "_v", "_err")

    def __getattr__(self, name):
        if name in _PUBLIC and self.fast:
            _parse_all(self, self._skbs, self._v)
            return object.__getattribute__(self, name)
        raise AttributeError(name)

    def __len__(self) -> int:
        return int(self._skbs.shape[0])


# The UDP and TCP fast paths are taken for batches that pass ip_rcv_core_check whole; tests
# turn them off to hold the general path against them on the same inputs.
FAST_PATH = True


def parse(skbs: np.ndarray) -> Parsed:
    """Read Ethernet, IPv4 and UDP/TCP headers from the skbs' head bytes; run ip_rcv_core's checks."""
    p = Parsed()
    p._skbs = skbs
    v = p._v = skbs.view(_HDR)
    n = skbs.shape[0]
    err = p._err = np.empty(n, dtype=np.uint8)
    kind = ip_rcv_core_check(np.ascontiguousarray(skbs).view(np.uint8).reshape(n, _SKB_SIZE),
                             err)
    if kind != MIXED and FAST_PATH:
        p.fast = kind
        return p
    p.fast = MIXED
    _parse_all(p, skbs, v)
    return p


def _parse_all(p: Parsed, skbs: np.ndarray, v: np.ndarray) -> None:
    """The general path: every field, and ip_rcv_core's verdict per skb."""
    p.fast = MIXED
    n = skbs.shape[0]
    p.ethertype = v["eth_type"].astype(np.uint16)
    p.is_ipv4 = p.ethertype == ETH_P_IP
    vi = v["vi"]
    p.version = vi >> 4
    p.ihl = vi & 0x0F
    ihl5 = bool((p.ihl == 5).all())
    p.hlen = p.ihl.astype(np.int64) * 4
    p.tot_len = v["tot_len"].astype(np.uint16)
    p.protocol = v["protocol"].copy()
    p.saddr = v["saddr"].astype(np.uint32)
    p.daddr = v["daddr"].astype(np.uint32)
    p.ip_len = v["len"].astype(np.int64) - ETH_HLEN      # skb->len after eth_type_trans
    p.hdr_err = err = p._err
    p.hdr_ok = p.is_ipv4 & (err == HDR_OK)

    is_tcp = p.hdr_ok & (p.protocol == IPPROTO_TCP)
    is_udp = p.hdr_ok & (p.protocol == IPPROTO_UDP)
    l4_ok = is_tcp | is_udp
    if ihl5:
        sport, dport, tcp_flags, ulen = v["sport"], v["dport"], v["tcp_flags"], v["ulen"]
    else:
        head = skbs["head"]
        l4 = IP_OFF + np.clip(p.hlen, 0, 60)
        sport, dport = _be16(head, l4), _be16(head, l4 + 2)
        tcp_flags, ulen = head[np.arange(n), l4 + 13], _be16(head, l4 + 4)
    p.sport = np.where(l4_ok, sport, 0).astype(np.uint16)
    p.dport = np.where(l4_ok, dport, 0).astype(np.uint16)
    p.tcp_flags = np.where(is_tcp, tcp_flags, 0).astype(np.uint8)
    p.udp_len = np.where(is_udp, ulen, 0).astype(np.uint16)


class DeliverResult:
    """What one ip_rcv_deliver call did, in skbs."""

    __slots__ = ("ip", "udp", "tcp", "queued", "consumed", "dropped", "woken")

    def __init__(self) -> None:
        self.ip = 0           # skbs that reached ip_rcv
        self.udp = 0          # skbs handed to udp_rcv
        self.tcp = 0          # skbs handed to tcp_v4_rcv (all consumed)
        self.queued = 0       # skbs now in a socket's receive queue
        self.consumed = 0     # skbs delivered for good here (TCP)
        self.dropped = np.zeros(NR_DROP, dtype=np.int64)   # skbs dropped, per Drop reason
        self.woken: list[tuple[int, int]] = []              # (socket index, reader_cpu)

    @property
    def delivered(self) -> int:
        return self.queued + self.consumed


# counter slots as plain ints (an IntEnum index costs a conversion per use)
_RX_DROPPED = int(C.RX_DROPPED)
_IP_IN_RECEIVES = int(C.IP_IN_RECEIVES)
_IP_IN_HDR_ERRORS = int(C.IP_IN_HDR_ERRORS)
_IP_IN_UNKNOWN_PROTOS = int(C.IP_IN_UNKNOWN_PROTOS)
_IP_IN_DELIVERS = int(C.IP_IN_DELIVERS)
_IP_IN_OCTETS = int(C.IP_IN_OCTETS)
_IP_IN_NOECT = int(C.IP_IN_NOECT_PKTS)
_TCP_IN_SEGS = int(C.TCP_IN_SEGS)
_UDP_IN_ERRORS = int(C.UDP_IN_ERRORS)
_UDP_NO_PORTS = int(C.UDP_NO_PORTS)
_UDP_RCVBUF_ERRORS = int(C.UDP_RCVBUF_ERRORS)
_D_NOHANDLER = int(Drop.NOHANDLER)
_D_IP_HDR = int(Drop.IP_HDR)
_D_NOPORTS = int(Drop.NOPORTS)
_D_RCVBUF = int(Drop.RCVBUF)
_SRC_DELIVERED0 = int(SRC_DELIVERED0)
_SRC_DROP0 = int(SRC_DROP0)
_SRC_DROP_RCVBUF = _SRC_DROP0 + _D_RCVBUF * MAX_SOURCES

_truesize = kernel(truesize)               # the rule of emu.skb, compiled for _sock_entries
_NO_SIDX = np.zeros(0, dtype=np.int64)


@kernel
def _ip_in_stats(raw, counters) -> None:
    """ip_rcv_core's first counters for skbs (raw SKB record rows) that reached it:
    InOctets += skb->len (IP bytes, padding included), then, for a header that is pullable
    (skb->len >= 20) with ihl >= 5 and version 4, the ECN class of the TOS byte
    (InNoECTPkts + (tos & INET_ECN_MASK)) += max(1, gso_segs)."""
    octets = np.int64(0)
    for i in range(raw.shape[0]):
        r = raw[i]
        ln = (np.int64(r[20]) | (np.int64(r[21]) << 8) | (np.int64(r[22]) << 16)
              | (np.int64(r[23]) << 24)) - ETH_HLEN
        octets += ln
        vi = np.int64(r[_H + ETH_HLEN])
        if ln >= 20 and (vi & 0xF) >= 5 and (vi >> 4) == 4:
            segs = np.int64(r[24]) | (np.int64(r[25]) << 8)
            counters[_IP_IN_NOECT + (np.int64(r[_H + ETH_HLEN + 1]) & 3)] += np.uint64(max(1, segs))
    counters[_IP_IN_OCTETS] += np.uint64(octets)


def ip_in_stats(skbs: np.ndarray, counters: np.ndarray) -> None:
    n = skbs.shape[0]
    if n:
        _ip_in_stats(np.ascontiguousarray(skbs).view(np.uint8).reshape(n, _SKB_SIZE), counters)


def ip_rcv_ok_counts(raw: np.ndarray, counters: np.ndarray, n: int) -> None:
    """The Ip MIB counts of n skbs (raw SKB record rows) that all pass ip_rcv_core and reach
    a protocol handler: InReceives, InOctets and the ECN classes, InDelivers."""
    counters[_IP_IN_RECEIVES] += n
    _ip_in_stats(raw, counters)
    counters[_IP_IN_DELIVERS] += n


def _drop(res: DeliverResult, counters: np.ndarray, reason: int, skbs: np.ndarray) -> None:
    """skbs (or socket entries: both carry src and segs) dropped for reason."""
    if skbs.shape[0]:
        res.dropped[reason] += skbs.shape[0]
        count_per_source(counters, _SRC_DROP0 + reason * MAX_SOURCES, skbs)


def ip_rcv_deliver(skbs: np.ndarray, parsed: Parsed, counters: np.ndarray,
                   socks: SocketTable | None, delays: np.ndarray | None = None,
                   now: int = 0) -> DeliverResult:
    """Deliver a batch after `processed` was counted; returns counts and sockets to wake."""
    res = DeliverResult()
    n = skbs.shape[0]
    if n == 0:
        return res

    if parsed.fast == ALL_UDP:
        # every skb a valid IPv4/UDP datagram (no ptype, ip_rcv_core or UDP length drop)
        res.ip = res.udp = n
        ip_rcv_ok_counts(np.ascontiguousarray(skbs).view(np.uint8).reshape(n, _SKB_SIZE),
                         counters, n)
        v = parsed._v
        _udp_to_sockets(skbs, v["dport"], v["saddr"], v["sport"], counters, socks, res, delays, now)
        return res
    if parsed.fast == VALID:
        # every skb a valid IPv4 TCP segment or UDP datagram: no ptype, ip_rcv_core or UDP
        # length drop; tcp_v4_rcv consumes the segments, the datagrams go to their sockets
        # in order, as below
        res.ip = n
        ip_rcv_ok_counts(np.ascontiguousarray(skbs).view(np.uint8).reshape(n, _SKB_SIZE),
                         counters, n)
        v = parsed._v
        is_udp = v["protocol"] == IPPROTO_UDP
        udp = np.flatnonzero(is_udp)
        k = udp.shape[0]
        res.tcp = res.consumed = n - k
        if n - k:
            counters[_TCP_IN_SEGS] += n - k
            count_per_source(counters, _SRC_DELIVERED0, skbs[~is_udp] if k else skbs)
        res.udp = k
        if k:
            _udp_to_sockets(skbs[udp], v["dport"][udp], v["saddr"][udp], v["sport"][udp],
                            counters, socks, res, delays, now)
        return res

    # ptype dispatch: only ETH_P_IP has a handler
    non_ip = ~parsed.is_ipv4
    k = int(non_ip.sum())
    if k:
        counters[_RX_DROPPED] += k
        _drop(res, counters, _D_NOHANDLER, skbs[non_ip])
    ip = parsed.is_ipv4
    res.ip = n - k
    if not res.ip:
        return res

    # ip_rcv_core
    counters[_IP_IN_RECEIVES] += res.ip
    ip_in_stats(skbs[ip] if k else skbs, counters)
    err = parsed.hdr_err
    bad = ip & ~parsed.hdr_ok
    if bad.any():
        n_hdr = int(((err == HDR_ERR) | (err == HDR_CSUM)).sum())
        n_csum = int((err == HDR_CSUM).sum())
        n_trunc = int((err == HDR_TRUNC).sum())
        if n_hdr:
            counters[_IP_IN_HDR_ERRORS] += n_hdr
        if n_csum:
            counters[_IP_IN_CSUM_ERRORS] += n_csum
        if n_trunc:
            counters[_IP_IN_TRUNCATED] += n_trunc
        _drop(res, counters, _D_IP_HDR, skbs[bad])

    # ip_local_deliver -> ip_protocol_deliver_rcu
    good = parsed.hdr_ok
    proto = parsed.protocol
    is_tcp = good & (proto == IPPROTO_TCP)
    is_udp = good & (proto == IPPROTO_UDP)
    unknown = good & ~is_tcp & ~is_udp
    k = int(unknown.sum())
    if k:
        counters[_IP_IN_UNKNOWN_PROTOS] += k
        _drop(res, counters, _D_NOHANDLER, skbs[unknown])

    res.tcp = int(is_tcp.sum())
    if res.tcp:
        tcp = skbs[is_tcp]
        counters[_TCP_IN_SEGS] += res.tcp
        count_per_source(counters, _SRC_DELIVERED0, tcp)
        res.consumed += res.tcp

    res.udp = int(is_udp.sum())
    if res.udp:
        _udp_rcv(skbs, parsed, is_udp, counters, socks, res, delays, now)

    delivers = res.tcp + res.udp
    if delivers:
        counters[_IP_IN_DELIVERS] += delivers
    return res


def _udp_rcv(skbs, parsed, is_udp, counters, socks, res, delays, now) -> None:
    """__udp4_lib_rcv for the UDP skbs of the batch (order kept within each socket)."""
    l4_len = parsed.tot_len.astype(np.int64) - parsed.hlen
    ulen = parsed.udp_len.astype(np.int64)
    short = is_udp & ((l4_len < 8) | (ulen > l4_len) | (ulen < 8))
    k = int(short.sum())
    if k:
        counters[_UDP_IN_ERRORS] += k
        _drop(res, counters, _D_IP_HDR, skbs[short])
    ok = is_udp & ~short
    if not ok.any():
        return
    if k == 0 and res.udp == skbs.shape[0]:
        _udp_to_sockets(skbs, parsed.dport, parsed.saddr, parsed.sport, counters, socks, res,
                        delays, now)
        return
    sel = np.flatnonzero(ok)
    _udp_to_sockets(skbs[sel], parsed.dport[sel], parsed.saddr[sel], parsed.sport[sel],
                    counters, socks, res, delays, now)


@kernel
def _sock_entries(raw, sidx, port_map, nsock, out, delays, now):
    """Socket entries (SOCK_ENTRY bytes, into out) for UDP skbs (raw SKB record bytes),
    grouped by socket in skb order: first the skbs with no socket, then socket 0, 1, ...

    sidx: each skb's socket, or empty to look the destination port up in port_map (no
    connected socket); an entry is stamped now + its socket's delay (when its reader sees it).
    Returns the count per group.
    """
    n = raw.shape[0]
    sock = np.empty(n, dtype=np.int64)
    counts = np.zeros(nsock + 1, dtype=np.int64)
    for i in range(n):
        if sidx.shape[0]:
            k = sidx[i]
        else:
            k = port_map[(np.int64(raw[i, _H + 36]) << 8) | raw[i, _H + 37]]
        sock[i] = k
        counts[k + 1] += 1
    at = np.zeros(nsock + 1, dtype=np.int64)
    for g in range(1, nsock + 1):
        at[g] = at[g - 1] + counts[g - 1]
    for i in range(n):
        r = raw[i]
        g = sock[i] + 1
        e = out[at[g]]
        at[g] += 1
        for b in range(8):
            e[b] = r[b]                       # seq
        ln = np.int64(r[20]) | (np.int64(r[21]) << 8) | (np.int64(r[22]) << 16) | (np.int64(r[23]) << 24)
        for b in range(4):
            e[8 + b] = r[20 + b]              # len
        ts = _truesize(ln)
        for b in range(4):
            e[12 + b] = (ts >> (8 * b)) & 0xFF   # truesize
            e[16 + b] = r[16 + b]             # hash
        e[20] = r[28]                         # src
        e[21] = 0
        e[22] = r[24]                         # segs
        e[23] = r[25]
        st = now + delays[g - 1] if g > 0 else 0
        for b in range(8):
            e[24 + b] = (st >> (8 * b)) & 0xFF  # ts
    return counts


@kernel
def _count_refused(raw, refused, per_source):
    """per_source[src] += segs for the socket entries (raw SOCK_ENTRY rows) refused; their
    number."""
    k = 0
    for i in range(raw.shape[0]):
        if refused[i]:
            per_source[raw[i, 20]] += np.uint64(raw[i, 22]) | (np.uint64(raw[i, 23]) << np.uint64(8))
            k += 1
    return k


def _udp_to_sockets(skbs, dport, saddr, sport, counters, socks, res, delays, now) -> None:
    """Socket lookup and __udp_queue_rcv_skb for UDP skbs that passed every header check.

    The socket entries are built once for the whole batch, in socket order (each socket
    sees its skbs in order).
    """
    n = skbs.shape[0]
    if socks is None or len(socks) == 0:
        counters[_UDP_NO_PORTS] += n
        _drop(res, counters, _D_NOPORTS, skbs)
        return
    # int64 always: a kernel meeting a new argument type compiles then, inside traffic
    sidx = (socks.lookup(dport, saddr, sport).astype(np.int64)
            if socks.has_connected_sockets else _NO_SIDX)
    raw = np.ascontiguousarray(skbs).view(np.uint8).reshape(n, _SKB_SIZE)
    out = np.empty(n, dtype=SOCK_ENTRY)
    if delays is None:
        delays = np.zeros(len(socks), dtype=np.int64)
    counts = _sock_entries(raw, sidx, socks.port_map, len(socks),
                           out.view(np.uint8).reshape(n, SOCK_ENTRY.itemsize), delays, now)
    queue_entries(out, counts, counters, socks, res)


def queue_entries(entries, counts, counters, socks, res) -> None:
    """NoPorts or __udp_queue_rcv_skb for socket entries grouped as _sock_entries groups them
    (counts: entries with no socket, then per socket), then the receive-buffer drops of
    every socket (RcvbufErrors, InErrors, per source) at once."""
    sockets = socks.sockets
    n = entries.shape[0]
    refused = np.zeros(n, dtype=np.bool_)
    at = 0
    for g, c in enumerate(counts.tolist()):
        if not c:
            continue
        a, b = at, at + c
        at = b
        if g == 0:
            counters[_UDP_NO_PORTS] += c
            _drop(res, counters, _D_NOPORTS, entries[a:b])
            continue
        sock = sockets[g - 1]
        accepted, woke = sock.enqueue(entries[a:b])
        refused[a:b] = ~accepted
        res.queued += int(accepted.sum())
        if woke:
            res.woken.append((g - 1, sock.reader_cpu))
    n_rej = _count_refused(entries.view(np.uint8).reshape(n, SOCK_ENTRY.itemsize), refused,
                           counters[_SRC_DROP_RCVBUF:_SRC_DROP_RCVBUF + MAX_SOURCES])
    if n_rej:
        counters[_UDP_RCVBUF_ERRORS] += n_rej
        counters[_UDP_IN_ERRORS] += n_rej
        res.dropped[_D_RCVBUF] += n_rej


def warm() -> None:
    """Compile (or load) this module's kernels with the argument types a run uses."""
    from emu.counters import cpu_block
    raw = np.zeros((1, _SKB_SIZE), dtype=np.uint8)
    ent = np.zeros((1, SOCK_ENTRY.itemsize), dtype=np.uint8)
    ip_rcv_core_check(raw, np.empty(1, dtype=np.uint8))
    _truesize(np.int64(128))
    _ip_in_stats(raw, cpu_block())
    _sock_entries(raw, _NO_SIDX, np.full(65536, -1, dtype=np.int16), 1, ent,
                  np.zeros(1, dtype=np.int64), 0)
    _count_refused(ent, np.zeros(1, dtype=np.bool_), cpu_block()[:MAX_SOURCES])

