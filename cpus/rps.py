"""RPS/RFS CPU selection: skb_get_hash() and get_rps_cpu() of net/core/dev.c (Linux 6.18).

Runs where the kernel runs it: in softirq (NET_RX) context on the CPU that received the
frames, from netif_receive_skb_list_internal() after GRO, once per skb, before
enqueue_to_backlog(). Pure module: numpy only, no I/O, no clocks, no processes.

Shared layouts (other modules read and write them):

* the global sock flow table (``rps_sock_flow_entries``): ``uint32[size]``, size a power of
  two, every entry ``RPS_NO_CPU`` when empty; entry ``hash & (size-1)`` holds
  ``(hash & ~rps_cpu_mask) | cpu`` of the last recvmsg (written elsewhere, read here);
* the per-RX-queue device flow table (``rps_flow_cnt``): ``FLOW[cnt]``, cnt a power of two,
  ``cpu`` initialised to ``RPS_NO_CPU`` (struct rps_dev_flow without the aRFS ``filter``);
* ``input_queue_head`` of every CPU: ``uint32[ncpus]``, wrapping, compared as signed 32-bit.

Deliberate deviations (see also the function docstrings):

* the software flow hash is not siphash with a random boot key but a vectorised 64-bit
  multiply/xor-shift mix keyed by a per-run ``seed``; it covers the same flow-dissector keys
  (ethertype, IP protocol, ports, addresses) made direction-symmetric the same way;
* get_rps_cpu() decides a whole batch before the caller enqueues it, so within one batch a
  decision does not see the ``last_qtail`` stored by the enqueue of an earlier skb of the
  same batch (the kernel interleaves decide/enqueue per skb). This only changes the outcome
  when two flows with different desired CPUs collide on one flow-table slot inside a batch;
  a single flow still never migrates while its packets are queued on the old CPU;
* all CPUs ``0..ncpus-1`` are online (``cpu_online(c)`` is ``c < ncpus``); no aRFS.
"""

from __future__ import annotations

import numpy as np

from emu.jit import kernel
from emu.skb import FLOW, RPS_NO_CPU

GOLDEN_RATIO_32 = 0x61C88647

ETH_HLEN = 14
ETH_P_IP = 0x0800
# IP protocols whose first 4 L4 bytes the flow dissector takes as "ports"
# (proto_ports_offset(): TCP, UDP, DCCP, ESP (the SPI), SCTP, UDP-Lite)
_PORT_PROTOS = (6, 17, 33, 50, 132, 136)

_M64 = 0xFFFFFFFFFFFFFFFF


def roundup_pow_of_two(n: int) -> int:
    n = int(n)
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def ilog2(n: int) -> int:
    return int(n).bit_length() - 1


def rps_cpu_mask(ncpus: int) -> int:
    """net_hotdata.rps_cpu_mask = roundup_pow_of_two(nr_cpu_ids) - 1."""
    return roundup_pow_of_two(ncpus) - 1


def new_sock_table(entries: int) -> np.ndarray | None:
    """rps_sock_flow_sysctl(): size rounded up to a power of two, all RPS_NO_CPU; 0 -> None."""
    if entries <= 0:
        return None
    return np.full(roundup_pow_of_two(entries), RPS_NO_CPU, dtype=np.uint32)


def new_flow_table(cnt: int) -> np.ndarray | None:
    """store_rps_dev_flow_table_cnt(): cnt rounded up to a power of two, cpu = RPS_NO_CPU;
    0 -> None (no table)."""
    if cnt <= 0:
        return None
    t = np.zeros(roundup_pow_of_two(cnt), dtype=FLOW)
    t["cpu"] = RPS_NO_CPU
    return t


def hash_32(val, bits: int):
    """include/linux/hash.h hash_32(): (val * GOLDEN_RATIO_32 mod 2**32) >> (32 - bits).

    Works on Python ints and on numpy arrays. ``bits == 0`` is undefined in C (a shift by
    32); here it returns 0, the only index of a one-entry table.
    """
    if isinstance(val, np.ndarray):
        v = (val.astype(np.uint64) * np.uint64(GOLDEN_RATIO_32)) & np.uint64(0xFFFFFFFF)
        if bits <= 0:
            return np.zeros(val.shape, dtype=np.uint32)
        return (v >> np.uint64(32 - bits)).astype(np.uint32)
    if bits <= 0:
        return 0
    return ((int(val) * GOLDEN_RATIO_32) & 0xFFFFFFFF) >> (32 - bits)


def rfs_slot(hashes: np.ndarray, log: int) -> np.ndarray:
    """dev.c rfs_slot() of 6.18: hash_32(hash, flow_table->log) (older kernels: hash & mask)."""
    return hash_32(hashes, log)


# --------------------------------------------------------------------------- software hash

def _seed_keys(seed: int) -> tuple[int, int]:
    """Two 64-bit keys from the seed (splitmix64), standing in for the boot-time hashrnd."""
    out = []
    x = (int(seed) * 0x9E3779B97F4A7C15 + 0x6A09E667F3BCC909) & _M64
    for _ in range(2):
        x = (x + 0x9E3779B97F4A7C15) & _M64
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        out.append(z ^ (z >> 31))
    return out[0], out[1]


def _mix(words: list[np.ndarray], seed: int) -> np.ndarray:
    k0, k1 = _seed_keys(seed)
    n = len(words[0])
    h = np.full(n, k0, dtype=np.uint64)
    mul = np.uint64(0x9E3779B97F4A7C15)
    for w in words:
        h ^= w.astype(np.uint64)
        h *= mul
        h ^= h >> np.uint64(29)
    h ^= np.uint64(k1)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return ((h ^ (h >> np.uint64(32))) & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def flow_hash(head: np.ndarray, lens: np.ndarray | None = None, seed: int = 0
              ) -> tuple[np.ndarray, np.ndarray]:
    """The software flow hash of __skb_get_hash_net() for frames starting at the Ethernet
    header: (hash uint32 with 0 replaced by 1, have_l4 uint8).

    Flow dissector (net/core/flow_dissector.c) for IPv4: addresses, IP protocol, and the
    first 4 L4 bytes as ports for port-carrying protocols unless the packet is a fragment
    (any fragment, first one included, since skb_get_hash() does not pass
    FLOW_DISSECTOR_F_PARSE_1ST_FRAG); IHL < 5 stops before the addresses. Non-IPv4 frames
    hash their ethertype only. __flow_hash_consistentify(): addresses swapped if
    dst < src and, independently, ports swapped if dst < src, both compared as the raw
    (network order) values loaded as native u32/u16. Deviation: the keys are mixed by a
    seeded 64-bit mix (_mix), not siphash with a random boot key.
    """
    n = head.shape[0]
    h = head.astype(np.uint32)
    etype = (h[:, 12] << 8) | h[:, 13]
    ihl = h[:, 14] & 0xF
    is_ip = (etype == ETH_P_IP) & (ihl >= 5)
    saddr = np.ascontiguousarray(head[:, 26:30]).view("<u4").ravel().astype(np.uint32)
    daddr = np.ascontiguousarray(head[:, 30:34]).view("<u4").ravel().astype(np.uint32)
    proto = h[:, 23]
    frag = ((h[:, 20] << 8) | h[:, 21]) & 0x3FFF          # IP_MF | IP_OFFSET
    l4 = ETH_HLEN + ihl * 4
    width = head.shape[1]
    has_ports = is_ip & (frag == 0) & np.isin(proto, _PORT_PROTOS) & (l4 + 4 <= width)
    if lens is not None:
        has_ports &= (l4 + 4) <= lens
    rows = np.arange(n)
    l4c = np.where(has_ports, l4, 0)
    sport = h[rows, l4c] | (h[rows, l4c + 1] << 8)          # raw __be16 read natively
    dport = h[rows, l4c + 2] | (h[rows, l4c + 3] << 8)
    sport = np.where(has_ports, sport, 0)
    dport = np.where(has_ports, dport, 0)
    saddr = np.where(is_ip, saddr, 0)
    daddr = np.where(is_ip, daddr, 0)
    proto = np.where(is_ip, proto, 0)
    swap = daddr < saddr
    saddr, daddr = np.where(swap, daddr, saddr), np.where(swap, saddr, daddr)
    swap = dport < sport
    sport, dport = np.where(swap, dport, sport), np.where(swap, sport, dport)
    ports = sport | (dport << 16)
    out = _mix([etype | (proto << 16), ports, saddr, daddr], seed)
    out[out == 0] = 1
    return out, (ports != 0).astype(np.uint8)


def skb_get_hash(skbs: np.ndarray, seed: int = 0) -> np.ndarray:
    """skb_get_hash() (include/linux/skbuff.h) for a batch, vectorised.

    Rows with ``l4_hash`` or ``sw_hash`` set keep ``hash``. The others (a NIC L3 hash, or
    none) get the software flow hash (flow_hash()); as __skb_get_hash_net() ->
    __skb_set_sw_hash() does, it is stored back into the skb with ``sw_hash = 1`` and
    ``l4_hash = 1`` when the dissector found ports (flow_keys_have_l4()). Returns a copy of
    the resulting hashes (uint32).
    """
    need = (skbs["l4_hash"] == 0) & (skbs["sw_hash"] == 0)
    if need.any():
        idx = np.nonzero(need)[0]
        hv, l4 = flow_hash(skbs["head"][idx], skbs["len"][idx], seed)
        skbs["hash"][idx] = hv
        skbs["sw_hash"][idx] = 1
        skbs["l4_hash"][idx] = l4
    return skbs["hash"].copy()


# --------------------------------------------------------------------------- get_rps_cpu

class RxQueueRps:
    """The RPS state of one RX queue (struct netdev_rx_queue): rps_map and rps_flow_table.

    ``rps_cpus``: the CPUs of the queue's rps_cpus mask that are online, kept ascending as
    the kernel builds map->cpus; empty means no map. ``flow_table``: a FLOW array (power of
    two length) or None.
    """

    def __init__(self, rps_cpus: list[int], flow_table: np.ndarray | None):
        cpus = sorted(set(int(c) for c in rps_cpus))
        self.map = np.array(cpus, dtype=np.int64) if cpus else None
        if flow_table is not None:
            size = len(flow_table)
            if size == 0 or size & (size - 1):
                raise ValueError("flow table length must be a power of two")
            if flow_table.dtype != FLOW:
                raise TypeError("flow table must have dtype cpus.rps.FLOW")
            self.log = ilog2(size)
        else:
            self.log = 0
        self.flow_table = flow_table

    @property
    def active(self) -> bool:
        return self.map is not None or self.flow_table is not None


def _s32(x: int) -> int:
    x &= 0xFFFFFFFF
    return x - 0x100000000 if x & 0x80000000 else x


def get_rps_cpu(skbs: np.ndarray, rxq: RxQueueRps | None, sock_table: np.ndarray | None,
                heads: np.ndarray, ncpus: int, seed: int = 0
                ) -> tuple[np.ndarray, np.ndarray]:
    """get_rps_cpu() (net/core/dev.c, 6.18) for a batch of skbs from one RX queue, in order.

    Returns ``(cpus, slots)``: int32 target CPU per skb (-1: no steering, deliver locally
    without the backlog) and int32 flow-table slot whose ``last_qtail`` the enqueue must
    update (-1: none, i.e. the kernel's ``voidflow``; set only when RFS chose the CPU).

    Per skb: no map and no flow table -> -1 without hashing; hash = skb_get_hash(), 0 -> -1.
    RFS (flow table and sock table present): ident = sock_table[hash & mask]; a mismatch
    outside rps_cpu_mask goes to the RPS map; else desired = ident & rps_cpu_mask,
    slot = hash_32(hash, log2(cnt)), cur = rflow.cpu; if cur != desired and (cur >= ncpus or
    (s32)(heads[cur] - rflow.last_qtail) >= 0) the flow moves: set_rps_cpu() stores
    rflow.cpu = desired and, if desired < ncpus, rflow.last_qtail = heads[desired]. If the
    resulting cpu < ncpus it is returned with the slot, otherwise the RPS map is tried:
    map[(hash * len) >> 32] (reciprocal_scale), if that CPU is online.

    Fast paths: without flow table or sock table the whole batch is vectorised; with RFS only
    the skbs of flow-table slots where some skb's rflow.cpu differs from its desired CPU are
    walked sequentially (slots are independent; elsewhere nothing changes state).
    Mutates ``rxq.flow_table`` (set_rps_cpu) and the skbs' hash fields (skb_get_hash).
    """
    n = len(skbs)
    cpus = np.full(n, -1, dtype=np.int32)
    slots = np.full(n, -1, dtype=np.int32)
    if n == 0 or rxq is None or not rxq.active:
        return cpus, slots
    hashes = skb_get_hash(skbs, seed)
    try_rps = hashes != 0

    ft = rxq.flow_table
    if ft is not None and sock_table is not None and len(sock_table):
        mask = rps_cpu_mask(ncpus)
        ident = sock_table[hashes & np.uint32(len(sock_table) - 1)]
        match = try_rps & (((ident ^ hashes) & np.uint32(~mask & 0xFFFFFFFF)) == 0)
        if match.any():
            idx = np.nonzero(match)[0]
            h = hashes[idx]
            nxt = (ident[idx] & np.uint32(mask)).astype(np.int64)
            slot = rfs_slot(h, rxq.log).astype(np.int64)
            cur = ft["cpu"][slot].astype(np.int64)
            differ = cur != nxt
            if differ.any():
                hot = np.isin(slot, np.unique(slot[differ]))
                fcpu = ft["cpu"]
                fq = ft["last_qtail"]
                for j in np.nonzero(hot)[0].tolist():
                    s = int(slot[j])
                    want = int(nxt[j])
                    tc = int(fcpu[s])
                    if tc != want and (tc >= ncpus or _s32(int(heads[tc]) - int(fq[s])) >= 0):
                        if want < ncpus:
                            fq[s] = heads[want]
                        fcpu[s] = want
                        tc = want
                    cur[j] = tc
            ok = cur < ncpus
            sel = idx[ok]
            cpus[sel] = cur[ok]
            slots[sel] = slot[ok]
            try_rps[sel] = False

    m = rxq.map
    if m is not None and try_rps.any():
        _rps_map_cpus(hashes.astype(np.int64), try_rps, m, ncpus, cpus)
    return cpus, slots


@kernel
def rps_map_cpu(h, rps_map, ncpus):
    """get_rps_cpu's map rule for one skb hash: a hash of 0 steers nowhere; otherwise
    map->cpus[reciprocal_scale(hash, map->len)], if that CPU is online. -1: no steering."""
    if h == 0:
        return -1
    c = rps_map[(h * rps_map.shape[0]) >> 32]
    return c if c < ncpus else -1


@kernel
def _rps_map_cpus(hashes, todo, rps_map, ncpus, cpus):
    """rps_map_cpu of every skb still to steer (todo), into cpus (left as is at -1)."""
    for i in range(hashes.shape[0]):
        if todo[i]:
            c = rps_map_cpu(hashes[i], rps_map, ncpus)
            if c >= 0:
                cpus[i] = c


def warm() -> None:
    """Compile (or load) this module's kernels with the argument types a run uses."""
    m = np.zeros(1, dtype=np.int64)
    rps_map_cpu(np.int64(1), m, 1)
    _rps_map_cpus(np.ones(1, dtype=np.int64), np.ones(1, dtype=np.bool_), m, 1,
                  np.full(1, -1, dtype=np.int32))


def save_qtail(flow_table: np.ndarray | None, slots: np.ndarray, qtails: np.ndarray,
               enqueued: np.ndarray | None = None) -> None:
    """rps_input_queue_tail_save(&rflow->last_qtail, tail) after enqueue_to_backlog().

    ``qtails[i]``: the target CPU's input_queue_tail after skb i was appended (post
    increment). Slots of -1 are skipped, as are skbs with ``enqueued[i]`` false (a dropped
    skb saves nothing; callers may instead pass -1 in ``slots``). When several skbs of the
    batch share a slot the last one wins, as sequential stores would.
    """
    if flow_table is None:
        return
    keep = slots >= 0
    if enqueued is not None:
        keep &= enqueued.astype(bool)
    if not keep.any():
        return
    s = slots[keep][::-1]
    q = np.asarray(qtails)[keep][::-1]
    us, first = np.unique(s, return_index=True)       # first in reversed = last in order
    flow_table["last_qtail"][us] = q[first].astype(np.uint32)
