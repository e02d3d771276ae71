"""The records that cross processes, and the sizing rules both sides must agree on.

Frames move in numpy structured arrays, never one Python object per frame. The NIC is
modelled with header split (as ixgbe, ice and mlx5 can do): a slot holds the wire length and
the first HEAD bytes of the frame, which contain every header the receive path parses; the
payload pages are not materialised because nothing on the receive path reads them (the
NIC reports CHECKSUM_UNNECESSARY for L4).

- SKB: an RX ring slot, a backlog entry, an skb in flight.
- SOCK_ENTRY: one skb queued on a UDP socket (what recvmsg gives back).
- FLOW: one entry of an RX queue's RFS flow table (struct rps_dev_flow without aRFS).
- truesize: skb->truesize of a received frame, the unit of sk_rmem_alloc.
- the capacities of the rings that hold them: sized so that the kernel's own limit
  (netdev_max_backlog, the rcvbuf rule), never the ring, is what bites.

The scalar rules are plain Python that numba compiles where a per-frame loop needs them
(emu.jit.kernel on the same function), so a rule has one home.
"""

import numpy as np

HEAD = 128

SKB = np.dtype([
    ("seq", "<u8"),       # NIC-wide sequence number of the (first) frame: proves no loss/dup
    ("ts", "<u8"),        # emulated time from which the consumer sees it: the frame's arrival
                          # in an RX ring, the enqueue time plus the cross-CPU latency in a
                          # backlog
    ("hash", "<u4"),      # skb->hash (the NIC's RSS hash, or a software hash)
    ("len", "<u4"),       # skb->len: wire bytes, Ethernet header included, no FCS
    ("segs", "<u2"),      # gso_segs: wire frames merged into this skb by GRO (1 if none)
    ("queue", "u1"),      # RX queue the frame arrived on (skb_get_rx_queue)
    ("l4_hash", "u1"),    # 1 if hash covers the L4 ports (PKT_HASH_TYPE_L4), 0 for L3
    ("src", "u1"),        # index of the traffic source (per-source accounting)
    ("sw_hash", "u1"),    # 1 once skb_get_hash() replaced an L3 hash by a software one
    ("ring_drop", "u1"),  # in an RX ring: 1 once the driver judged the frame dropped there
    ("_pad", "V1"),
    ("head", "u1", (HEAD,)),
])
assert SKB.itemsize == 160

SOCK_ENTRY = np.dtype([
    ("seq", "<u8"),       # NIC sequence number of the skb's (first) frame
    ("len", "<u4"),       # skb len on the wire (Ethernet header included)
    ("truesize", "<u4"),  # skb->truesize charged to sk_rmem_alloc
    ("hash", "<u4"),      # skb->hash (what sk_rxhash takes for a connected socket)
    ("src", "u1"),        # traffic source (per-source accounting)
    ("_pad", "u1"),
    ("segs", "<u2"),      # wire frames in the skb (1 unless GRO merged)
    ("ts", "<u8"),        # emulated time from which the reader sees it (see SKB's ts)
])
assert SOCK_ENTRY.itemsize == 32

FLOW = np.dtype([("cpu", "<u4"), ("last_qtail", "<u4")])
RPS_NO_CPU = 0xFFFF       # an empty sock-flow or dev-flow entry (include/net/rps.h)

# --- truesize -------------------------------------------------------------------------------
# SKB_TRUESIZE(X) = X + SKB_DATA_ALIGN(sizeof(struct sk_buff))
#                     + SKB_DATA_ALIGN(sizeof(struct skb_shared_info))       (skbuff.h)
# x86_64, 6.x, SMP_CACHE_BYTES = 64:
#   sizeof(struct sk_buff) = 232 with distro configs (224 with a "lucky" config; pahole
#     figures quoted on netdev) -> SKB_DATA_ALIGN -> 256 either way.
#   sizeof(struct skb_shared_info) = 48 bytes of fields (flags, meta_len, nr_frags, tx_flags,
#     gso_size, gso_segs, frag_list, hwtstamps|xsk_meta, gso_type, tskey, dataref,
#     xdp_frags_size, destructor_arg) + frags[MAX_SKB_FRAGS = 17] of 16-byte skb_frag_t
#     (netmem_ref, len, offset) = 48 + 272 = 320 -> SKB_DATA_ALIGN -> 320.
# A driver receiving into 2 KiB buffers: SKB_TRUESIZE(2048) = 2048 + 256 + 320 = 2624 bytes per
# frame; frames that do not fit 2 KiB are charged in 4 KiB steps (SKB_TRUESIZE(k * 4096)).
# (A build_skb driver that keeps skb_shared_info inside the 2 KiB half page, e.g. ixgbe/ice
# with build_skb, charges SKB_TRUESIZE(2048 - 320) = 2304 instead.)
SKB_DATA_ALIGN_SKBUFF = 256
SKB_DATA_ALIGN_SHINFO = 320
RX_BUF = 2048
BIG_STEP = 4096
INT_MAX = 2**31 - 1


def truesize(ln):
    """skb->truesize of a received frame of ln wire bytes (scalar; numba-compilable)."""
    buf = RX_BUF if ln <= RX_BUF else (ln + BIG_STEP - 1) // BIG_STEP * BIG_STEP
    return buf + SKB_DATA_ALIGN_SKBUFF + SKB_DATA_ALIGN_SHINFO


TRUESIZE_SMALL = truesize(RX_BUF)          # every frame of at most RX_BUF bytes


def truesize_of(lens: np.ndarray) -> np.ndarray:
    """truesize() of many wire lengths (uint32), for tests and tools."""
    return np.array([truesize(int(x)) for x in np.asarray(lens).ravel()], dtype=np.uint32)


def socket_ring_capacity(rcvbuf: int, min_truesize: int = TRUESIZE_SMALL) -> int:
    """Power-of-two ring size that the rcvbuf rule, never the ring, limits.

    While rmem > 0 an skb is queued only if rmem + truesize <= rcvbuf, and rmem never falls
    below the truesize still queued (the reader pops before it gives memory back, and gives it
    back lazily), so at most max(1, rcvbuf // min_truesize) skbs can be queued.
    """
    n = max(1, int(rcvbuf) // max(1, int(min_truesize))) + 1
    return 1 << (n - 1).bit_length()


def backlog_capacity(netdev_max_backlog: int) -> int:
    """Ring slots for an input_pkt_queue: it can hold netdev_max_backlog + 1 skbs."""
    cap = 1
    while cap < netdev_max_backlog + 1:
        cap <<= 1
    return cap


def empty(n: int = 0) -> np.ndarray:
    return np.zeros(n, dtype=SKB)


def rx_staging_capacity(rx_ring: int) -> int:
    """Slots of an RX ring in memory: more than its rx_ring descriptors, so the NIC can write
    ahead of the CPUs' time (the driver admits at most rx_ring of them, see emu.ring)."""
    return max(2048, 4 * (1 << (int(rx_ring) - 1).bit_length()))
