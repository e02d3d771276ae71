"""The skb batch: what a ring slot, a backlog entry and an skb in flight hold.

Frames move in numpy structured arrays, never one Python object per frame. The NIC is
modelled with header split (as ixgbe, ice and mlx5 can do): a slot holds the wire length and
the first HEAD bytes of the frame, which contain every header the receive path parses; the
payload pages are not materialised because nothing on the receive path reads them (the
NIC reports CHECKSUM_UNNECESSARY for L4).
"""

import numpy as np

HEAD = 128

SKB = np.dtype([
    ("seq", "<u8"),       # NIC-wide sequence number of the (first) frame: proves no loss/dup
    ("ts", "<u8"),        # emulated ns at which the NIC DMA'd the frame
    ("hash", "<u4"),      # skb->hash (the NIC's RSS hash, or a software hash)
    ("len", "<u4"),       # skb->len: wire bytes, Ethernet header included, no FCS
    ("segs", "<u2"),      # gso_segs: wire frames merged into this skb by GRO (1 if none)
    ("queue", "u1"),      # RX queue the frame arrived on (skb_get_rx_queue)
    ("l4_hash", "u1"),    # 1 if hash covers the L4 ports (PKT_HASH_TYPE_L4), 0 for L3
    ("src", "u1"),        # index of the traffic source (per-source accounting)
    ("sw_hash", "u1"),    # 1 once skb_get_hash() replaced an L3 hash by a software one
    ("_pad", "V2"),
    ("head", "u1", (HEAD,)),
])

assert SKB.itemsize == 160


def empty(n: int = 0) -> np.ndarray:
    return np.zeros(n, dtype=SKB)
