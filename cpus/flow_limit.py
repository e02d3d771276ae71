"""Per-CPU flow limit: skb_flow_limit() of net/core/dev.c (CONFIG_NET_FLOW_LIMIT, Linux 6.18).

Runs in softirq context inside enqueue_to_backlog(), on the ENQUEUING CPU (this_cpu's
sd->flow_limit), whatever the target CPU of the backlog is. The table exists only for CPUs
set in net.core.flow_limit_cpu_bitmap; it mirrors struct sd_flow_limit:

    u64 count;                 -> softnet_stat column 11 (flow_limit_count) of this CPU
    unsigned int history_head;
    u16 history[128];          FLOW_LIMIT_HISTORY = 1 << 7 bucket indices, zero-initialised
    u8 buckets[table_len];     table_len = net.core.flow_limit_table_len

with log_buckets = ilog2(table_len) (documented as a power of two; the kernel does not
enforce it, and hash_32 then simply never reaches the top buckets). In 6.18 the struct
lives in net/core/dev.h. Pure module, no I/O.

The kernel calls skb_flow_limit() only when ``qlen <= netdev_max_backlog`` (the
``qlen > max_backlog ||`` test short-circuits first, in 6.18 and before); callers must do the
same, because every call while active advances the history window.

Deviations: none in the algorithm. ``hash_32(h, 0)`` (table_len 1) is a shift by 32,
undefined in C; here it is bucket 0.
"""

from __future__ import annotations

from array import array

import numpy as np

from .rps import hash_32, ilog2

FLOW_LIMIT_HISTORY = 1 << 7


class FlowLimit:
    """struct sd_flow_limit of one CPU plus skb_flow_limit()."""

    def __init__(self, table_len: int = 4096):
        table_len = int(table_len)
        if table_len <= 0:
            raise ValueError("flow_limit_table_len must be positive")
        self.num_buckets = table_len
        self.log_buckets = ilog2(table_len)
        self.history = array("H", bytes(2 * FLOW_LIMIT_HISTORY))   # u16, zeroed
        self.buckets = bytearray(table_len)                         # u8, zeroed
        self.history_head = 0
        self.count = 0

    # numpy views, for inspection (zero copy)
    @property
    def history_array(self) -> np.ndarray:
        return np.frombuffer(self.history, dtype=np.uint16)

    @property
    def buckets_array(self) -> np.ndarray:
        return np.frombuffer(self.buckets, dtype=np.uint8)

    @staticmethod
    def active(qlen, max_backlog: int):
        """The table is consulted only when qlen >= max_backlog >> 1 (scalar or array)."""
        return qlen >= (int(max_backlog) >> 1)

    def _step(self, b_new: int) -> bool:
        head = self.history_head
        b_old = self.history[head]
        self.history[head] = b_new & 0xFFFF      # u16 history entries
        self.history_head = (head + 1) & (FLOW_LIMIT_HISTORY - 1)
        bk = self.buckets
        if bk[b_old]:
            bk[b_old] -= 1
        v = (bk[b_new] + 1) & 0xFF                 # u8 (cannot exceed 128 in practice)
        bk[b_new] = v
        if v > (FLOW_LIMIT_HISTORY >> 1):
            self.count += 1
            return True
        return False

    def check(self, hash: int, qlen: int, max_backlog: int) -> bool:
        """skb_flow_limit(skb, qlen, max_backlog) with skb_get_hash(skb) == ``hash``.

        False while qlen < max_backlog >> 1 (no state change). Otherwise records the bucket
        hash_32(hash, log_buckets) in the 128-entry history (evicting the oldest entry's
        count, never below 0) and returns True (drop; ``count`` += 1) when that bucket now
        holds more than 64 of the last 128 entries.
        """
        if qlen < (int(max_backlog) >> 1):
            return False
        return self._step(hash_32(int(hash) & 0xFFFFFFFF, self.log_buckets))

    def check_batch(self, hashes: np.ndarray, qlens: np.ndarray, max_backlog: int) -> np.ndarray:
        """check() for skbs in enqueue order, ``qlens[i]`` being the target queue length seen
        by skb i. The inactive test and the bucket hashes are vectorised; only skbs arriving
        while active walk the (sequential) history. Returns a bool array (True = drop)."""
        hashes = np.asarray(hashes)
        qlens = np.asarray(qlens)
        out = np.zeros(len(hashes), dtype=bool)
        act = qlens >= (int(max_backlog) >> 1)
        if not act.any():
            return out
        idx = np.nonzero(act)[0]
        buckets = hash_32(hashes[idx].astype(np.uint32), self.log_buckets).tolist()
        step = self._step
        for j, b in zip(idx.tolist(), buckets):
            if step(b):
                out[j] = True
        return out
