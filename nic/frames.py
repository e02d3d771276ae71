"""Real frame bytes for the traffic sources: one header template per flow, stamped per frame.

A flow is an IPv4 5-tuple. Its template is the first HEAD bytes of its frames as they are on
the wire: Ethernet II, IPv4 (no options, DF) and UDP or TCP. stamp() copies templates for a
batch and patches what changes frame to frame on a real sender: the IPv4 id (with the header
checksum recomputed) and the TCP sequence number. L4 checksums are left 0: the payload is not
materialised and the NIC is modelled as reporting CHECKSUM_UNNECESSARY (see emu.skb).

The bulk TCP sender sends ACK-only segments (no PSH) so GRO may merge them
(tcp_gro_receive flushes on PSH and on any flag change).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emu.skb import HEAD

from .rss import ETH_HLEN, IPPROTO_TCP, IPPROTO_UDP, Rss

DST_MAC = bytes.fromhex("020000000001")
SRC_MAC = bytes.fromhex("020000000002")
IP_DF = 0x4000
TTL = 64
TCP_ACK = 0x10
TCP_WINDOW = 65535
IPH_LEN = 20
UDPH_LEN = 8
TCPH_LEN = 20
L4_OFF = ETH_HLEN + IPH_LEN

# Default source ports: 10000 + flow index for source 0, sources 1000 apart so that two
# sources sharing src_net and a destination port do not emit the same 5-tuple.
_PORT_LO = 1024
_PORT_SPAN = 65536 - _PORT_LO
_ADDR_SEARCH = 1 << 24  # addresses tried above src_net before giving up
_PIN_BLOCK = 8  # candidates hashed per flow per round while pinning: ~rx_queues are needed


@dataclass
class FlowState:
    """What a sender advances per frame, per flow."""
    next_id: np.ndarray   # u16: IPv4 id of the flow's next frame
    next_seq: np.ndarray  # u32: TCP sequence number of the flow's next segment

    def copy(self) -> "FlowState":
        return FlowState(self.next_id.copy(), self.next_seq.copy())


@dataclass
class Flows:
    """A source's flows: per-flow tuple arrays, header templates and sender state."""
    src_ip: np.ndarray    # u32, host order
    dst_ip: np.ndarray    # u32
    src_port: np.ndarray  # u16
    dst_port: np.ndarray  # u16
    proto: np.ndarray     # u8: 17 (UDP) or 6 (TCP)
    heads: np.ndarray     # u8 [flows, HEAD]
    state: FlowState
    frame_len: int        # wire bytes, Ethernet header included, no FCS
    payload_len: int      # L4 payload bytes per frame

    def __len__(self) -> int:
        return self.src_ip.shape[0]


def ip_to_int(text: str) -> int:
    a, b, c, d = (int(x) for x in text.split("."))
    return (a << 24) | (b << 16) | (c << 8) | d


def _put16(rows: np.ndarray, off: int, v) -> None:
    v = np.asarray(v, dtype=np.uint32)
    rows[:, off] = (v >> 8) & 0xFF
    rows[:, off + 1] = v & 0xFF


def _put32(rows: np.ndarray, off: int, v) -> None:
    v = np.asarray(v, dtype=np.uint64)
    for i in range(4):
        rows[:, off + i] = (v >> np.uint64(24 - 8 * i)) & np.uint64(0xFF)


def ipv4_checksum(hdr_rows: np.ndarray) -> np.ndarray:
    """RFC 1071 checksum of each row (uint8 [n, even]): ip_fast_csum, vectorised.

    Over a header whose checksum field is zero this is the value to store; over a header
    carrying a valid checksum it is 0.
    """
    hdr = np.asarray(hdr_rows, dtype=np.uint8)
    words = (hdr[:, 0::2].astype(np.uint32) << 8) | hdr[:, 1::2]
    s = words.sum(axis=1, dtype=np.uint64)
    s = (s & 0xFFFF) + (s >> np.uint64(16))
    s = (s & 0xFFFF) + (s >> np.uint64(16))
    return (~s & 0xFFFF).astype(np.uint16)


def _default_ports(n: int, source_index: int) -> np.ndarray:
    base = 10000 - _PORT_LO + 1000 * source_index
    return (_PORT_LO + (base + np.arange(n, dtype=np.int64)) % _PORT_SPAN).astype(np.uint16)


def _steerable(rss: Rss, positions: range, base: np.ndarray, queue: int) -> np.ndarray:
    """Whether flipping bits at these input byte positions can move each base hash to queue.

    Toeplitz is linear over GF(2), so the table indices reachable from base form the coset
    base ^ span(index bits of each single input bit); checking it up front turns a key
    that cannot steer (all zero, say) into an error instead of an endless search.
    """
    size = len(rss.indir)
    reach = np.zeros(size, dtype=bool)
    reach[0] = True
    idx = np.arange(size)
    for pos in positions:
        for b in range(8):
            v = int(rss.toeplitz.table[pos, 1 << b]) & (size - 1)
            reach |= reach[idx ^ v]
    good = np.nonzero(rss.indir == queue)[0]
    base_idx = (np.asarray(base, dtype=np.int64) & (size - 1))[:, None]
    return reach[good[None, :] ^ base_idx].any(axis=1)


def _pin_ports(rss: Rss, queue: int, src_ip, dst_ip, port0, dst_port) -> np.ndarray:
    """Per flow, the first port at or above its default (wrapping into 1024..65535) that
    RSS maps to queue."""
    n = src_ip.shape[0]
    base = rss.hash_tuples(src_ip, dst_ip, np.zeros(n), dst_port, np.ones(n, dtype=bool))
    if not _steerable(rss, range(8, 10), base, queue).all():
        raise ValueError(f"with this RSS key no source port makes RSS choose queue {queue}")
    out = np.zeros(n, dtype=np.uint16)
    todo = np.arange(n)
    tried = 0
    while todo.size:
        if tried >= _PORT_SPAN:
            raise ValueError(f"no source port makes RSS choose queue {queue}")
        k = np.arange(tried, tried + _PIN_BLOCK)
        cand = _PORT_LO + (port0[todo, None].astype(np.int64) - _PORT_LO + k[None, :]) % _PORT_SPAN
        rows = np.repeat(todo, _PIN_BLOCK)
        h = rss.hash_tuples(src_ip[rows], dst_ip[rows], cand.ravel(), dst_port[rows],
                            np.ones(cand.size, dtype=bool))
        hit = (rss.queue_of(h) == queue).reshape(todo.size, _PIN_BLOCK)
        found = hit.any(axis=1)
        first = hit.argmax(axis=1)
        out[todo[found]] = cand[found, first[found]]
        todo = todo[~found]
        tried += _PIN_BLOCK
    return out


def _pin_addrs(rss: Rss, queue: int, net: int, dst_ip, n: int) -> np.ndarray:
    """The first n source addresses at or above net that RSS (2-tuple) maps to queue, so
    flows keep distinct addresses."""
    base = rss.hash_tuples(np.zeros(1), np.full(1, dst_ip), np.zeros(1), np.zeros(1),
                           np.zeros(1, dtype=bool))
    if not _steerable(rss, range(0, 4), base, queue).all():
        raise ValueError(f"with this RSS key no source address makes RSS choose queue {queue}")
    found: list[np.ndarray] = []
    have = 0
    start = 0
    share = int((rss.indir == queue).sum()) / len(rss.indir)
    block = min(1 << 16, 64 + int(2 * n / share))
    while have < n:
        if start >= _ADDR_SEARCH:
            raise ValueError(f"fewer than {n} addresses above src_net make RSS choose queue {queue}")
        cand = (net + np.arange(start, start + block, dtype=np.uint64)) & np.uint64(0xFFFFFFFF)
        dst = np.full(block, dst_ip, dtype=np.uint32)
        h = rss.hash_tuples(cand.astype(np.uint32), dst, np.zeros(block), np.zeros(block),
                            np.zeros(block, dtype=bool))
        hits = cand[rss.queue_of(h) == queue]
        found.append(hits)
        have += hits.size
        start += block
    return np.concatenate(found)[:n].astype(np.uint32)


def flow_templates(src_cfg: dict, flow_count: int, seed: int, source_index: int,
                   rss: Rss | None = None) -> Flows:
    """Build the flows of one [[traffic.sources]] entry.

    Flow i: src_net + i : default port 10000 + i (+ 1000 per source index) -> dst_ip :
    dst_ports[i % len]. With queue >= 0 each flow's source port is moved up until RSS picks
    that queue; when the protocol's hash covers the IPs only ("sd") the port cannot steer it,
    so the source addresses are chosen instead (the next ones above src_net that hash there).
    The first IPv4 id and TCP sequence number of each flow are random from (seed, index).
    """
    n = int(flow_count)
    proto_num = IPPROTO_TCP if src_cfg.get("proto", "udp") == "tcp" else IPPROTO_UDP
    frame_len = int(src_cfg["frame_len"])
    l4_len = TCPH_LEN if proto_num == IPPROTO_TCP else UDPH_LEN
    payload = frame_len - L4_OFF - l4_len
    if payload < 0:
        raise ValueError(f"frame_len {frame_len} is too short for the headers ({L4_OFF + l4_len})")
    net = ip_to_int(src_cfg.get("src_net", "10.0.0.0"))
    dst = ip_to_int(src_cfg.get("dst_ip", "192.168.0.1"))
    ports = list(src_cfg.get("dst_ports", [9000]))

    src_ip = ((net + np.arange(n, dtype=np.uint64)) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    dst_ip = np.full(n, dst, dtype=np.uint32)
    dst_port = np.asarray(ports, dtype=np.uint16)[np.arange(n) % len(ports)]
    src_port = _default_ports(n, source_index)
    proto = np.full(n, proto_num, dtype=np.uint8)

    queue = int(src_cfg.get("queue", -1))
    if queue >= 0:
        if rss is None:
            raise ValueError("pinning flows to a queue needs the Rss configuration")
        if not (rss.indir == queue).any():
            raise ValueError(f"queue {queue} is not in the RSS indirection table")
        if rss.l4_hashed(proto[:1])[0]:
            src_port = _pin_ports(rss, queue, src_ip, dst_ip, src_port, dst_port)
        else:
            src_ip = _pin_addrs(rss, queue, net, dst, n)

    rng = np.random.default_rng([int(seed), int(source_index), 0x6672])
    next_id = rng.integers(0, 1 << 16, n, dtype=np.uint64).astype(np.uint16)
    next_seq = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
    ack = rng.integers(0, 1 << 32, n, dtype=np.uint64)

    heads = np.zeros((n, HEAD), dtype=np.uint8)
    heads[:, 0:6] = np.frombuffer(DST_MAC, dtype=np.uint8)
    heads[:, 6:12] = np.frombuffer(SRC_MAC, dtype=np.uint8)
    _put16(heads, 12, 0x0800)
    ip = ETH_HLEN
    heads[:, ip] = 0x45
    _put16(heads, ip + 2, frame_len - ETH_HLEN)
    _put16(heads, ip + 4, next_id)
    _put16(heads, ip + 6, IP_DF)
    heads[:, ip + 8] = TTL
    heads[:, ip + 9] = proto_num
    _put32(heads, ip + 12, src_ip)
    _put32(heads, ip + 16, dst_ip)
    _put16(heads, ip + 10, ipv4_checksum(heads[:, ip:ip + IPH_LEN]))
    _put16(heads, L4_OFF, src_port)
    _put16(heads, L4_OFF + 2, dst_port)
    if proto_num == IPPROTO_UDP:
        _put16(heads, L4_OFF + 4, frame_len - L4_OFF)
    else:
        _put32(heads, L4_OFF + 4, next_seq)
        _put32(heads, L4_OFF + 8, ack)
        heads[:, L4_OFF + 12] = (TCPH_LEN // 4) << 4
        heads[:, L4_OFF + 13] = TCP_ACK
        _put16(heads, L4_OFF + 14, TCP_WINDOW)
    heads[:, frame_len:] = 0  # a short frame ends inside the head bytes

    return Flows(src_ip, dst_ip, src_port, dst_port, proto, heads,
                 FlowState(next_id, next_seq), frame_len, payload)


def _rank_in_flow(flow_idx: np.ndarray) -> np.ndarray:
    """For each frame, how many earlier frames of the batch belong to its flow."""
    n = flow_idx.shape[0]
    order = np.argsort(flow_idx, kind="stable")
    sorted_f = flow_idx[order]
    starts = np.r_[0, np.nonzero(np.diff(sorted_f))[0] + 1] if n else np.zeros(0, np.intp)
    group_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - group_start
    return rank


def stamp(flows: Flows, flow_idx: np.ndarray, counters: FlowState | None = None,
          keep: np.ndarray | None = None) -> np.ndarray:
    """The head bytes of a batch of frames, in batch order; uint8 [n, HEAD].

    flow_idx gives each frame's flow, frames in sending order. counters is the sender state
    to use and advance (default: flows.state); per flow the IPv4 id grows by one and the TCP
    sequence number by the payload length per frame, so a flow's segments are contiguous
    across batches. With ``keep`` (a bool mask) only the kept frames are built, but every
    frame consumes its id and sequence space: the NIC drops frames that were sent.
    """
    st = flows.state if counters is None else counters
    fi_all = np.asarray(flow_idx, dtype=np.intp)
    rank = _rank_in_flow(fi_all) if fi_all.size else np.zeros(0, dtype=np.int64)
    fi = fi_all if keep is None else fi_all[keep]
    if keep is not None:
        rank = rank[keep]
    out = flows.heads[fi]
    if fi_all.size == 0:
        return out
    ip = ETH_HLEN
    ids = (st.next_id[fi].astype(np.int64) + rank) & 0xFFFF
    _put16(out, ip + 4, ids)
    out[:, ip + 10:ip + 12] = 0
    _put16(out, ip + 10, ipv4_checksum(out[:, ip:ip + IPH_LEN]))
    counts = np.bincount(fi_all, minlength=len(flows)).astype(np.uint64)
    st.next_id[:] = ((st.next_id.astype(np.uint64) + counts) & np.uint64(0xFFFF)).astype(np.uint16)
    if flows.proto[0] == IPPROTO_TCP:
        pl = np.uint64(flows.payload_len)
        seq = (st.next_seq[fi].astype(np.uint64) + rank.astype(np.uint64) * pl) & np.uint64(0xFFFFFFFF)
        _put32(out, L4_OFF + 4, seq)
        st.next_seq[:] = ((st.next_seq.astype(np.uint64) + counts * pl)
                          & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    return out
