"""GRO for TCP over IPv4 within one NAPI poll: net/core/gro.c, net/ipv4/af_inet.c,
net/ipv4/tcp_offload.c, include/net/gro.h (Linux 6.18).

Runs in softirq (NET_RX) context inside the driver's NAPI poll: each frame the driver
passes to napi_gro_receive() -> gro_receive_skb() -> dev_gro_receive() is merged into a held
aggregate (GRO_MERGED), held as a new aggregate (GRO_HELD) or sent up as is (GRO_NORMAL);
completed aggregates (napi_gro_complete) and GRO_NORMAL skbs go, in that order, onto the
NAPI's rx_list and from there (gro_normal_list) to netif_receive_skb_list_internal(), which
keeps the order. With the emulated HZ < 1000 the held aggregates never outlive the poll:
napi_complete_done() flushes all of them and a full-weight repoll flushes those older than
the current jiffy, which is all of them when HZ < 1000 (napi_gro_flush(n, HZ >= 1000)).
So gro_receive_batch() takes the frames of one poll and returns what the poll sends up.

Pure module: numpy only. Per-frame Python runs only over GRO candidates (TCP/IPv4 with a
20-byte IP header), because aggregation is sequential; everything else (UDP, other
protocols, IP options, fragments) can neither be held nor touch held aggregates in the
kernel (inet_gro_receive bails out before looking at them, udp4_gro_receive flushes only
the skb itself when no socket asked for UDP GRO) and is passed through vectorised.

Deliberate deviations:
* the TCP checksum is taken as verified (the NIC reports CHECKSUM_UNNECESSARY) and not
  rewritten on completion (the kernel leaves CHECKSUM_PARTIAL with a pseudo-header sum);
  the IPv4 header checksum IS checked (ip_fast_csum) and recomputed after tot_len changes;
* input rows are wire frames; a row with segs > 1 (hardware GRO/LRO) is passed through as
  GRO_NORMAL instead of being merged under the gso_size rules;
* no fraglist GRO, no tunnels, no VLAN, no GRO_CONSUMED paths, no skb->decrypted.
"""

from __future__ import annotations

import numpy as np

from emu.counters import C, NAPI_GRO_FLUSHED0, NAPI_GRO_MERGED0
from emu.inet import ip_csum_ok_rows, ip_fast_csum, ip_send_check_rows
from emu.jit import kernel
from emu.skb import HEAD, SKB

GRO_HASH_BUCKETS = 8
MAX_GRO_SKBS = 8

ETH_HLEN = 14
ETH_P_IP = 0x0800
IPPROTO_TCP = 6
IP_DF = 0x4000
IP_MF_OFFSET = 0x3FFF
IP_CE = 0x8000          # reserved ("evil") bit: in (frag_off & ~IP_DF), which flushes

# tcp_flag_word(): the 32-bit word at TCP offset 12 = doff/reserved, flags, window
TCP_FLAG_CWR = 0x00800000
TCP_FLAG_ECE = 0x00400000
TCP_FLAG_URG = 0x00200000
TCP_FLAG_ACK = 0x00100000
TCP_FLAG_PSH = 0x00080000
TCP_FLAG_RST = 0x00040000
TCP_FLAG_SYN = 0x00020000
TCP_FLAG_FIN = 0x00010000
_DIFF_MASK = 0xFFFFFFFF & ~(TCP_FLAG_CWR | TCP_FLAG_FIN | TCP_FLAG_PSH)
_FINAL = TCP_FLAG_URG | TCP_FLAG_PSH | TCP_FLAG_RST | TCP_FLAG_SYN | TCP_FLAG_FIN
_OPT_MAX = 40
_TCP = ETH_HLEN + 20        # TCP header offset in a GRO candidate
_HEAD = 32                  # offset of the head bytes in an SKB record


_GRO_RECEIVED = int(C.GRO_RECEIVED)
_GRO_NORMAL = int(C.GRO_NORMAL)


def gro_normal_all(counters: np.ndarray, n: int) -> None:
    """The counts of n frames that all go up as GRO_NORMAL: a batch without a TCP frame,
    which GRO can neither hold nor merge (the driver's compiled paths take only such)."""
    counters[_GRO_RECEIVED] += n
    counters[_GRO_NORMAL] += n


def copy_records(skbs: np.ndarray) -> np.ndarray:
    """skbs.copy(), as one block copy of the records (a structured copy goes field by field)."""
    return skbs.view(np.dtype((np.void, skbs.dtype.itemsize))).copy().view(skbs.dtype)


def _be16(head: np.ndarray, off: int) -> np.ndarray:
    return (head[:, off].astype(np.int64) << 8) | head[:, off + 1]


def _be32(head: np.ndarray, off: int) -> np.ndarray:
    return (_be16(head, off) << 16) | _be16(head, off + 2)


def ipv4_csum_ok(head: np.ndarray) -> np.ndarray:
    """ip_fast_csum(iph, 5) == 0 for the 20-byte header at offset 14 of each head row."""
    ok = np.empty(head.shape[0], dtype=np.bool_)
    ip_csum_ok_rows(np.ascontiguousarray(head), ETH_HLEN,
                    np.full(head.shape[0], 5, dtype=np.int64), ok)
    return ok


_LEN = SKB.fields["len"][1]
_SEGS = SKB.fields["segs"][1]


@kernel
def _lone_tcp(raw):
    """The row of the only TCP frame of a batch (raw SKB record bytes); -1 if there is
    none, -2 if there are more."""
    k = -1
    for i in range(raw.shape[0]):
        if raw[i, _HEAD + 23] == IPPROTO_TCP:
            if k >= 0:
                return -2
            k = i
    return k


@kernel
def _row_checks(raw, cand, inet_flush, payload):
    """Per row (raw SKB record bytes), the tests that do not depend on held skbs:
    whether it is a GRO candidate, the header checksum aside (IPv4 without options, not a
    fragment, TCP, one segment, doff >= 5, a payload length >= 0), whether inet_gro_receive
    flushes it itself (tot_len != its length, i.e. Ethernet padding; the reserved frag bit),
    and its TCP payload length."""
    h = _HEAD
    for i in range(raw.shape[0]):
        ln = np.int64(raw[i, _LEN]) | (np.int64(raw[i, _LEN + 1]) << 8) \
            | (np.int64(raw[i, _LEN + 2]) << 16) | (np.int64(raw[i, _LEN + 3]) << 24)
        segs = np.int64(raw[i, _SEGS]) | (np.int64(raw[i, _SEGS + 1]) << 8)
        ethp = (np.int64(raw[i, h + 12]) << 8) | np.int64(raw[i, h + 13])
        frag = (np.int64(raw[i, h + 20]) << 8) | np.int64(raw[i, h + 21])
        doff = np.int64(raw[i, h + _TCP + 12]) >> 4
        iplen = ln - ETH_HLEN
        pay = iplen - 20 - doff * 4
        payload[i] = pay
        cand[i] = (ethp == ETH_P_IP and raw[i, h + 14] == 0x45 and (frag & IP_MF_OFFSET) == 0
                   and raw[i, h + 23] == IPPROTO_TCP and segs == 1 and doff >= 5 and pay >= 0)
        totlen = (np.int64(raw[i, h + 16]) << 8) | np.int64(raw[i, h + 17])
        inet_flush[i] = ((totlen ^ (iplen & 0xFFFF)) & 0xFFFF) != 0 or (frag & IP_CE) != 0


@kernel
def _lone_checks(raw, i):
    """_checks for row i alone (_row_checks, then the header checksum of a candidate), and
    its TCP flag word: (candidate, inet flush, payload, flag word)."""
    cand = np.empty(1, np.bool_)
    flush = np.empty(1, np.bool_)
    pay = np.empty(1, np.int64)
    _row_checks(raw[i:i + 1], cand, flush, pay)
    ok = cand[0] and ip_fast_csum(raw[i], _HEAD + ETH_HLEN, 5) == 0
    h = _HEAD + _TCP + 12
    fw = ((np.int64(raw[i, h]) << 24) | (np.int64(raw[i, h + 1]) << 16)
          | (np.int64(raw[i, h + 2]) << 8) | np.int64(raw[i, h + 3]))
    return ok, flush[0], pay[0], fw


def _goes_up_alone(inet_flush: bool, payload: int, fw: int) -> bool:
    """A candidate that matched no held skb (or flushed the one it matched) is not held
    but sent up as GRO_NORMAL: flushed by the IP layer, no payload, or URG/PSH/RST/SYN/FIN."""
    return bool(inet_flush or payload < 1 or (fw & _FINAL))


def _checks(skbs: np.ndarray, raw: np.ndarray):
    n = len(skbs)
    cand = np.empty(n, dtype=np.bool_)
    inet_flush = np.empty(n, dtype=np.bool_)
    payload = np.empty(n, dtype=np.int64)
    _row_checks(raw, cand, inet_flush, payload)
    if cand.any():
        cand &= ipv4_csum_ok(skbs["head"])
    return cand, inet_flush, payload


def _gro_lone_tcp(skbs: np.ndarray, raw: np.ndarray, i: int, counters: np.ndarray,
                  queue: int) -> np.ndarray:
    """gro_receive_batch for a batch with one TCP frame (row i), the common case at low
    rates, without building the general machinery: it is held and flushed at the end on
    its own (after the batch's other skbs, unchanged), or it goes up as GRO_NORMAL in
    place; either way nothing merges and no header is rewritten, so the batch itself goes up
    (as a batch without TCP does), unless the held frame moves last."""
    n = len(skbs)
    counters[_GRO_RECEIVED] += n
    cand, inet_flush, payload, fw = _lone_checks(raw, i)
    if cand and not _goes_up_alone(inet_flush, payload, fw):
        counters[C.GRO_HELD] += 1
        counters[C.GRO_FLUSHED] += 1
        counters[NAPI_GRO_FLUSHED0 + queue] += 1
        counters[_GRO_NORMAL] += n - 1
        if i == n - 1:
            return skbs
        v = skbs.view(np.dtype((np.void, skbs.dtype.itemsize)))     # whole records: no field
        return np.concatenate((v[:i], v[i + 1:], v[i:i + 1])).view(skbs.dtype)  # promotion

    counters[_GRO_NORMAL] += n
    return skbs


@kernel
def _any_tcp(raw) -> bool:
    """Whether any row (raw SKB record bytes) has IP protocol TCP."""
    for i in range(raw.shape[0]):
        if raw[i, _HEAD + 23] == IPPROTO_TCP:
            return True
    return False


class _Agg:
    """A held aggregate (the first skb p of a GRO chain and its NAPI_GRO_CB)."""
    __slots__ = ("row", "key", "bucket", "count", "rowlen", "iplen", "paylen", "mss",
                 "seq0", "ack", "fw", "opts", "ttl", "tos", "df", "id0", "fixedid",
                 "flagsor")


def gro_receive_batch(skbs: np.ndarray, counters: np.ndarray, queue: int,
                      gro_max_size: int = 65536) -> np.ndarray:
    """The skbs one NAPI poll sends up the stack, given the frames it received in order.

    Mirrors, per frame: dev_gro_receive() (bucket = hash & 7, gro_list_prepare: same hash,
    same 14-byte Ethernet header), inet_gro_receive() (header byte 0x45, not a fragment,
    valid header checksum, else GRO_NORMAL without touching held skbs; same protocol/saddr/
    daddr; the skb itself is flushed if tot_len != its length, i.e. Ethernet padding, or the
    reserved frag bit is set), tcp_gro_receive() (lookup by ports; flush on CWR, on any
    difference of the doff/flags/window word outside CWR/FIN/PSH, of ack_seq, of the
    options, of TTL/TOS/DF, of the IP ID rule of inet_gro_flush(): ID = first ID + count,
    or fixed when DF is set and the second frame kept the ID; payload of 0 or > mss of the
    aggregate; non-contiguous seq), skb_gro_receive() (IP-level length p->len + len >=
    gro_max_size -> E2BIG). When the matched aggregate cannot take the frame it is
    completed and the frame is held as a new one (or sent up if it has no payload or
    carries URG/PSH/RST/SYN/FIN). After a merge the aggregate is completed when the
    segment is shorter than mss or carries URG/PSH/RST/SYN/FIN. A new aggregate in a full
    bucket (MAX_GRO_SKBS) first completes that bucket's oldest (gro_flush_oldest). At the
    end, napi_gro_flush(): buckets 0..7, oldest first in each.

    Output rows are copies, or skbs itself when nothing is merged and no frame moves (a
    batch with no TCP frame, or a lone TCP frame not held or already last): the caller
    owns the batch it passes (the driver passes a copy of its buffer). A
    GRO_NORMAL skb unchanged; an aggregate as the row of its first
    frame with len = first len + merged payload bytes, segs = frames, and (count > 1, as
    inet_gro_complete/tcp_gro_receive do) IP tot_len rewritten (0 above 65535, BIG TCP),
    header checksum recomputed and the merged FIN/PSH bits ORed into the TCP flags.

    Counters (``counters`` is this CPU's block): GRO_RECEIVED += frames, GRO_MERGED,
    GRO_HELD, GRO_NORMAL per frame outcome, GRO_FLUSHED += aggregates sent up; the same
    merged/flushed counts in NAPI_GRO_MERGED_<queue> / NAPI_GRO_FLUSHED_<queue>.
    """
    n = len(skbs)
    if n == 0:
        return skbs[:0].copy()
    raw = skbs.view(np.uint8).reshape(n, skbs.dtype.itemsize)
    lone = _lone_tcp(raw)
    if lone == -1:
        # no TCP at all (e.g. a UDP-only batch): nothing can be a candidate
        gro_normal_all(counters, n)
        return skbs
    if lone >= 0:
        return _gro_lone_tcp(skbs, raw, lone, counters, queue)
    return _gro_general(skbs, raw, counters, queue, gro_max_size)


def _gro_general(skbs: np.ndarray, raw: np.ndarray, counters: np.ndarray, queue: int,
                 gro_max_size: int) -> np.ndarray:
    """gro_receive_batch for a batch with TCP frames, the general way."""
    n = len(skbs)
    counters[_GRO_RECEIVED] += n
    head = skbs["head"]
    cand, inet_flush_all, payload_all = _checks(skbs, raw)
    if not cand.any():                       # no GRO candidate: all GRO_NORMAL
        counters[_GRO_NORMAL] += n
        return copy_records(skbs)

    lens = skbs["len"].astype(np.int64)
    iplen_all = lens - ETH_HLEN
    doff = (head[:, _TCP + 12] >> 4).astype(np.int64)
    frag = _be16(head, 20)
    ci = np.nonzero(cand)[0]
    ch = head[ci]
    c_iplen = iplen_all[ci]
    inet_flush = inet_flush_all[ci].tolist()
    hashes = skbs["hash"][ci].astype(np.uint32)
    keyb = np.concatenate([ch[:, 0:14], ch[:, 26:34], ch[:, _TCP:_TCP + 4],
                           hashes.astype("<u4").view(np.uint8).reshape(-1, 4)], axis=1)
    keys = np.ascontiguousarray(keyb).view(f"V{keyb.shape[1]}").ravel().tolist()
    thlen = doff[ci] * 4
    opt = ch[:, _TCP + 20:_TCP + 20 + _OPT_MAX].copy()
    opt[np.arange(_OPT_MAX)[None, :] >= (thlen - 20)[:, None]] = 0
    opts = np.ascontiguousarray(opt).view(f"V{_OPT_MAX}").ravel().tolist()
    bucket = (hashes & (GRO_HASH_BUCKETS - 1)).tolist()
    seq = _be32(ch, _TCP + 4).tolist()
    ack = _be32(ch, _TCP + 8).tolist()
    fw = _be32(ch, _TCP + 12).tolist()
    pay = payload_all[ci].tolist()
    ttl = ch[:, 22].tolist()
    tos = ch[:, 15].tolist()
    df = ((frag[ci] & IP_DF) != 0).tolist()
    ipid = _be16(ch, 18).tolist()
    rows = ci.tolist()
    c_lens = lens[ci].tolist()
    c_ipl = c_iplen.tolist()

    buckets: list[list[_Agg]] = [[] for _ in range(GRO_HASH_BUCKETS)]   # oldest first
    held: dict[bytes, _Agg] = {}
    ev_order: list[int] = []
    ev_row: list[int] = []
    ev_agg: list[_Agg | None] = []
    merged = held_n = normal = flushed = 0

    def complete(p: _Agg, order: int) -> None:
        buckets[p.bucket].remove(p)
        del held[p.key]
        ev_order.append(order)
        ev_row.append(p.row)
        ev_agg.append(p)

    for j in range(len(rows)):
        i = rows[j]
        order = i * 4
        L = pay[j]
        f = fw[j]
        key = keys[j]
        p = held.get(key)
        if p is not None:
            flush = (f & TCP_FLAG_CWR) or ((f ^ p.fw) & _DIFF_MASK) or ack[j] != p.ack \
                or opts[j] != p.opts
            # gro_receive_network_flush() -> inet_gro_flush(iph, iph2 = first header, p)
            nflush = ttl[j] != p.ttl or tos[j] != p.tos or df[j] != p.df
            ipoff = (ipid[j] - p.id0) & 0xFFFF
            if p.count == 1 and df[j] and ipoff == 0:
                p.fixedid = True
            if p.fixedid and df[j]:
                nflush = nflush or ipoff != 0
            else:
                nflush = nflush or ipoff != (p.count & 0xFFFF)
            mss = p.mss
            flush = (flush or nflush or ((L - 1) & 0xFFFFFFFF) >= mss
                     or ((p.seq0 + p.paylen) & 0xFFFFFFFF) != seq[j])
            if not flush and not (p.iplen + L >= gro_max_size or inet_flush[j]):
                # skb_gro_receive() succeeded: GRO_MERGED
                p.count += 1
                p.paylen += L
                p.iplen += L
                p.rowlen += L
                p.flagsor |= f & (TCP_FLAG_FIN | TCP_FLAG_PSH)
                merged += 1
                if L < mss or (f & _FINAL):
                    complete(p, order)
                continue
            # flush (or -E2BIG): mss = 1 -> the old aggregate is completed (pp = p)
            complete(p, order)
            order += 1
        if _goes_up_alone(inet_flush[j], L, f):
            normal += 1
            ev_order.append(order)
            ev_row.append(i)
            ev_agg.append(None)
            continue
        bl = buckets[bucket[j]]
        if len(bl) >= MAX_GRO_SKBS:
            complete(bl[0], order)                       # gro_flush_oldest()
        a = _Agg()
        a.row = i
        a.key = key
        a.bucket = bucket[j]
        a.count = 1
        a.rowlen = c_lens[j]
        a.iplen = c_ipl[j]
        a.paylen = L
        a.mss = L                                        # gso_size = skb_gro_len(skb)
        a.seq0 = seq[j]
        a.ack = ack[j]
        a.fw = f
        a.opts = opts[j]
        a.ttl = ttl[j]
        a.tos = tos[j]
        a.df = df[j]
        a.id0 = ipid[j]
        a.fixedid = False
        a.flagsor = 0
        bl.append(a)
        held[key] = a
        held_n += 1

    # napi_gro_flush(napi, false): every bucket in index order, oldest first
    order = n * 4
    for bl in buckets:
        for p in list(bl):
            complete(p, order)
            order += 1

    flushed = sum(1 for a in ev_agg if a is not None)
    nonc = np.nonzero(~cand)[0]
    normal_total = normal + len(nonc)
    counters[C.GRO_MERGED] += merged
    counters[C.GRO_HELD] += held_n
    counters[C.GRO_NORMAL] += normal_total
    counters[C.GRO_FLUSHED] += flushed
    counters[NAPI_GRO_MERGED0 + queue] += merged
    counters[NAPI_GRO_FLUSHED0 + queue] += flushed

    all_order = np.concatenate([nonc.astype(np.int64) * 4, np.array(ev_order, dtype=np.int64)])
    all_row = np.concatenate([nonc.astype(np.int64), np.array(ev_row, dtype=np.int64)])
    nn = len(nonc)
    m = len(ev_agg)
    new_len = np.full(nn + m, -1, dtype=np.int64)
    new_segs = np.zeros(nn + m, dtype=np.int64)
    fin_psh = np.zeros(nn + m, dtype=np.int64)
    for k, a in enumerate(ev_agg):
        if a is not None and a.count > 1:
            new_len[nn + k] = a.rowlen
            new_segs[nn + k] = a.count
            fin_psh[nn + k] = (a.flagsor >> 16) & 0xFF
    perm = np.argsort(all_order, kind="stable")
    out = skbs[all_row[perm]]
    new_len = new_len[perm]
    agg = new_len >= 0
    if agg.any():
        ai = np.nonzero(agg)[0]
        out["len"][ai] = new_len[ai]
        out["segs"][ai] = new_segs[perm][ai]
        oh = out["head"][ai]
        tl = new_len[ai] - ETH_HLEN
        tl = np.where(tl > 0xFFFF, 0, tl)                # iph_set_totlen(): 0 for BIG TCP
        oh[:, 16] = tl >> 8
        oh[:, 17] = tl & 0xFF
        oh[:, _TCP + 13] |= fin_psh[perm][ai].astype(np.uint8)
        ip_send_check_rows(oh, ETH_HLEN)
        out["head"][ai] = oh
    return out


def warm() -> None:
    """Compile (or load) this module's kernels with the argument types a run uses."""
    _any_tcp(np.zeros((1, _HEAD + HEAD), dtype=np.uint8))
    raw = np.zeros((1, SKB.itemsize), dtype=np.uint8)
    _lone_tcp(raw)
    _row_checks(raw, np.empty(1, np.bool_), np.empty(1, np.bool_), np.empty(1, np.int64))
    _lone_checks(raw, 0)

