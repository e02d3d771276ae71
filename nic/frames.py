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

from emu.inet import ip_fast_csum, ip_send_check, ip_send_check_rows
from emu.jit import kernel
from emu.skb import HEAD, SKB

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
    """ip_fast_csum (emu.inet) of each row's 20-byte header: over a header whose checksum
    field is zero the value to store, over a header carrying a valid checksum 0."""
    rows = np.ascontiguousarray(hdr_rows, dtype=np.uint8)
    return np.array([ip_fast_csum(r, 0, 5) for r in rows], dtype=np.uint16)


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
    ip_send_check_rows(heads, ip)
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


# SKB record layout (emu.skb.SKB), as word offsets into views of one 160-byte record
_W64_SEQ, _W64_TS = 0, 1              # u64 words
_W32_HASH, _W32_LEN = 4, 5            # u32 words
_W16_SEGS = 12                        # u16 word
_B_QUEUE, _B_L4, _B_SRC, _B_SW, _B_HEAD = 26, 27, 28, 29, 32
_IP = ETH_HLEN


@kernel
def _build(heads, flow_hash, flow_l4, flow_queue, next_id, next_seq, tcp, payload_len,
           frame_len, src_index, ts, flow, seqs, seq0, keep, out8, out16, out32, out64):
    """Frames in sending order: advance each flow's sender state for every frame, write the
    kept ones as SKB records (rows of out*). Returns the number written."""
    j = 0
    hl = heads.shape[1]
    for i in range(flow.shape[0]):
        f = flow[i]
        ip_id = np.uint32(next_id[f])
        next_id[f] = (ip_id + 1) & 0xFFFF
        tseq = np.uint64(next_seq[f])
        if tcp:
            next_seq[f] = (tseq + payload_len) & 0xFFFFFFFF
        if keep.shape[0] and not keep[i]:
            continue
        row = out8[j]
        for b in range(hl):
            row[_B_HEAD + b] = heads[f, b]
        h = _B_HEAD + _IP
        row[h + 4] = ip_id >> 8
        row[h + 5] = ip_id & 0xFF
        if tcp:
            for b in range(4):
                row[_B_HEAD + L4_OFF + 4 + b] = (tseq >> (24 - 8 * b)) & 0xFF
        ip_send_check(row, h)
        # uint64 throughout: numba types uint64 + int64 as float64
        out64[j, _W64_SEQ] = seqs[i] if seqs.shape[0] else seq0 + np.uint64(i)
        out64[j, _W64_TS] = ts[i]
        out32[j, _W32_HASH] = flow_hash[f]
        out32[j, _W32_LEN] = frame_len
        out16[j, _W16_SEGS] = 1
        out8[j, _B_QUEUE] = flow_queue[f]
        out8[j, _B_L4] = flow_l4[f]
        out8[j, _B_SRC] = src_index
        for b in range(_B_SW, _B_HEAD):
            out8[j, b] = 0
        j += 1
    return j


_NONE_U64 = np.zeros(0, dtype=np.uint64)
_NONE_BOOL = np.zeros(0, dtype=np.bool_)


def build(flows: Flows, flow_idx: np.ndarray, ts: np.ndarray | None = None, seq0=0,
          keep: np.ndarray | None = None, state: FlowState | None = None,
          flow_hash: np.ndarray | None = None, flow_l4: np.ndarray | None = None,
          flow_queue: np.ndarray | None = None, src_index: int = 0) -> np.ndarray:
    """SKB records (emu.skb.SKB) for a batch of frames of one source, in sending order.

    flow_idx gives each frame's flow. Per flow the IPv4 id grows by one and the TCP sequence
    number by the payload length per frame, so a flow's segments are contiguous across
    batches; state is the sender state to use and advance (default flows.state). With
    ``keep`` (a bool mask) only the kept frames are built, but every frame consumes its id
    and sequence space: the NIC drops frames that were sent. seq0 is the first NIC sequence
    number (consecutive after it) or one per frame. The hash, L4-hash flag and queue fields
    come from the per-flow arrays when given (0 otherwise).
    """
    st = flows.state if state is None else state
    fi = np.ascontiguousarray(flow_idx, dtype=np.intp)
    n = fi.shape[0]
    k = _NONE_BOOL if keep is None else np.ascontiguousarray(keep, dtype=np.bool_)
    m = n if keep is None else int(np.count_nonzero(k))
    out = np.empty(m, dtype=SKB)
    raw = out.view(np.uint8).reshape(m, SKB.itemsize)
    nflows = len(flows)
    zeros32 = np.zeros(nflows, dtype=np.uint32)
    zeros8 = np.zeros(nflows, dtype=np.uint8)
    if isinstance(seq0, np.ndarray):
        seqs, s0 = np.ascontiguousarray(seq0, dtype=np.uint64), 0
    else:
        seqs, s0 = _NONE_U64, int(seq0)
    t = np.zeros(n, dtype=np.uint64) if ts is None else np.ascontiguousarray(ts, dtype=np.uint64)
    _build(flows.heads, zeros32 if flow_hash is None else flow_hash,
           zeros8 if flow_l4 is None else flow_l4, zeros8 if flow_queue is None else flow_queue,
           st.next_id, st.next_seq, bool(flows.proto[0] == IPPROTO_TCP),
           np.uint64(flows.payload_len), flows.frame_len, src_index, t, fi, seqs, np.uint64(s0),
           k, raw, raw.view(np.uint16), raw.view(np.uint32), raw.view(np.uint64))
    return out


def stamp(flows: Flows, flow_idx: np.ndarray, counters: FlowState | None = None,
          keep: np.ndarray | None = None) -> np.ndarray:
    """The head bytes of a batch of frames, in batch order; uint8 [n, HEAD] (see build)."""
    return build(flows, flow_idx, keep=keep, state=counters)["head"]
