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
  (skb->len here is the wire length minus the 14-byte Ethernet header.) The C block has no
  InCsumErrors / InTruncatedPkts slots; they are counted when a slot named
  IP_IN_CSUM_ERRORS / IP_IN_TRUNCATED_PKTS exists. All these drops use Drop.IP_HDR.
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

from .sock import SOCK_ENTRY, SocketTable, truesize_of

ETH_HLEN = 14
ETH_P_IP = 0x0800
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IP_OFF = ETH_HLEN

# header error classes (ip_rcv_core), by which counters they move
HDR_OK, HDR_ERR, HDR_CSUM, HDR_TRUNC = 0, 1, 2, 3

_IP_IN_CSUM_ERRORS = getattr(C, "IP_IN_CSUM_ERRORS", None)
_IP_IN_TRUNCATED = getattr(C, "IP_IN_TRUNCATED_PKTS", None)


def _be16(head: np.ndarray, off) -> np.ndarray:
    if np.ndim(off) == 0:
        return (head[:, off].astype(np.uint32) << 8) | head[:, off + 1]
    rows = np.arange(head.shape[0])
    return (head[rows, off].astype(np.uint32) << 8) | head[rows, off + 1]


def _be32(head: np.ndarray, off: int) -> np.ndarray:
    return ((head[:, off].astype(np.uint32) << 24) | (head[:, off + 1].astype(np.uint32) << 16)
            | (head[:, off + 2].astype(np.uint32) << 8) | head[:, off + 3])


class Parsed:
    """Per-skb header fields (numpy arrays of the batch's length)."""

    __slots__ = ("ethertype", "is_ipv4", "version", "ihl", "hlen", "tot_len", "protocol",
                 "saddr", "daddr", "sport", "dport", "tcp_flags", "udp_len", "hdr_err",
                 "hdr_ok", "ip_len")

    def __len__(self) -> int:
        return int(self.ethertype.shape[0])


def parse(skbs: np.ndarray) -> Parsed:
    """Read Ethernet, IPv4 and UDP/TCP headers from the skbs' head bytes; run ip_rcv_core's checks."""
    head = skbs["head"]
    n = head.shape[0]
    p = Parsed()
    p.ethertype = _be16(head, 12).astype(np.uint16)
    p.is_ipv4 = p.ethertype == ETH_P_IP
    vi = head[:, IP_OFF]
    p.version = (vi >> 4).astype(np.uint8)
    p.ihl = (vi & 0x0F).astype(np.uint8)
    p.hlen = p.ihl.astype(np.int64) * 4
    p.tot_len = _be16(head, IP_OFF + 2).astype(np.uint16)
    p.protocol = head[:, IP_OFF + 9].copy()
    p.saddr = _be32(head, IP_OFF + 12)
    p.daddr = _be32(head, IP_OFF + 16)
    p.ip_len = skbs["len"].astype(np.int64) - ETH_HLEN      # skb->len after eth_type_trans

    # ip_fast_csum over ihl 32-bit words (at most 60 bytes: all inside the head)
    words = (head[:, IP_OFF:IP_OFF + 60:2].astype(np.uint32) << 8) | head[:, IP_OFF + 1:IP_OFF + 60:2]
    used = np.arange(30) < (p.ihl.astype(np.int64) * 2)[:, None]
    s = np.where(used, words, 0).sum(axis=1, dtype=np.uint64)
    s = (s & 0xFFFF) + (s >> np.uint64(16))
    s = (s & 0xFFFF) + (s >> np.uint64(16))
    csum_ok = s == 0xFFFF

    tot = p.tot_len.astype(np.int64)
    err = np.full(n, HDR_OK, dtype=np.uint8)
    pending = p.is_ipv4.copy()
    for cond, code in ((p.ip_len < 20, HDR_ERR),
                       ((p.ihl < 5) | (p.version != 4), HDR_ERR),
                       (p.ip_len < p.hlen, HDR_ERR),
                       (~csum_ok, HDR_CSUM),
                       (p.ip_len < tot, HDR_TRUNC),
                       (tot < p.hlen, HDR_ERR)):
        hit = pending & cond
        err[hit] = code
        pending &= ~hit
    p.hdr_err = err
    p.hdr_ok = p.is_ipv4 & (err == HDR_OK)

    l4 = IP_OFF + np.clip(p.hlen, 0, 60)
    l4_ok = p.hdr_ok & ((p.protocol == IPPROTO_UDP) | (p.protocol == IPPROTO_TCP))
    p.sport = np.where(l4_ok, _be16(head, l4), 0).astype(np.uint16)
    p.dport = np.where(l4_ok, _be16(head, l4 + 2), 0).astype(np.uint16)
    is_tcp = p.hdr_ok & (p.protocol == IPPROTO_TCP)
    is_udp = p.hdr_ok & (p.protocol == IPPROTO_UDP)
    p.tcp_flags = np.where(is_tcp, head[np.arange(n), l4 + 13], 0).astype(np.uint8)
    p.udp_len = np.where(is_udp, _be16(head, l4 + 4), 0).astype(np.uint16)
    return p


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


def _drop(res: DeliverResult, counters: np.ndarray, reason: int, skbs: np.ndarray) -> None:
    if skbs.shape[0]:
        res.dropped[reason] += skbs.shape[0]
        count_per_source(counters, SRC_DROP0 + reason * MAX_SOURCES, skbs)


def ip_rcv_deliver(skbs: np.ndarray, parsed: Parsed, counters: np.ndarray,
                   socks: SocketTable | None) -> DeliverResult:
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

    # ip_rcv_core
    counters[C.IP_IN_RECEIVES] += res.ip
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
        _udp_rcv(skbs, parsed, is_udp, counters, socks, res)

    delivers = res.tcp + res.udp
    if delivers:
        counters[C.IP_IN_DELIVERS] += delivers
    return res


def _udp_rcv(skbs, parsed, is_udp, counters, socks, res) -> None:
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
        accepted, woke = sock.enqueue_mask(entries)
        n_acc = int(accepted.sum())
        res.queued += n_acc
        n_drop = rows.shape[0] - n_acc
        if n_drop:
            counters[C.UDP_RCVBUF_ERRORS] += n_drop
            counters[C.UDP_IN_ERRORS] += n_drop
            _drop(res, counters, Drop.RCVBUF, sk_skbs[~accepted])
        if woke:
            res.woken.append((int(si), sock.reader_cpu))
