"""Per-CPU backlogs: enqueue_to_backlog and the RPS kick (net/core/dev.c).

A CPU's input_pkt_queue is a ring in shared memory that any CPU process appends to under
that CPU's backlog lock; only the owner consumes it. The backlog NAPI's state word, the
queue head counter (input_queue_head) and the owner's softnet ``dropped`` counter sit in the
ring header, next to the queue they describe, and change only under the lock (the owner's
head counter excepted: only the owner writes it).

Context: softirq (enqueue from net_rx_action or process_backlog). process_backlog, the
backlog NAPI's poll, is in cpus/dev.py with the rest of the receive path it calls.

Deviation: the kernel enqueues one skb at a time; here a batch of skbs for one target is
enqueued under one lock hold. The per-skb rules (the max + 1 capacity, the flow limit's
history, when the backlog NAPI is scheduled) are applied in order inside that hold, so every
counter moves as it would for the same skbs one by one, for one target. A poll that steers
to several targets enqueues them target by target: when the enqueuing CPU's flow-limit table
is active for two targets at once, its history sees their skbs grouped by target rather than
interleaved in arrival order.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from emu.counters import NET_RX_SOFTIRQ, C, Drop, count_per_source, src_drop
from emu.ring import BL_DROPPED, BL_HEAD, BL_STATE, Ring

from .napi import NAPI_STATE_SCHED, napi_schedule
from .net import Net
from .rps import skb_get_hash
from .softnet import SoftnetData

U32 = 0xFFFFFFFF


class Backlog:
    """One CPU's input_pkt_queue as every CPU sees it: a ring and its lock."""

    __slots__ = ("cpu", "ring", "lock")

    def __init__(self, cpu: int, ring: Ring, lock):
        self.cpu = cpu
        self.ring = ring
        self.lock = lock

    def qlen(self) -> int:
        return len(self.ring)

    @property
    def head(self) -> int:
        return self.ring.user(BL_HEAD) & U32

    @property
    def tail(self) -> int:
        return self.ring.prod & U32

    @property
    def dropped(self) -> int:
        return self.ring.user(BL_DROPPED)

    def head_add(self, work: int) -> None:
        """input_queue_head_incr: the owner dequeued work skbs."""
        self.ring.set_user(BL_HEAD, (self.ring.user(BL_HEAD) + work) & U32)


class ProcessQueue:
    """sd->process_queue: private to the owner, filled by splicing input_pkt_queue."""

    __slots__ = ("chunks", "count")

    def __init__(self):
        self.chunks: deque = deque()
        self.count = 0

    def publish(self, counters: np.ndarray) -> None:
        """Queue length (skbs) and the wire frames in it, for softnet_stat and conservation."""
        counters[C.PROCESS_QLEN] = self.count
        counters[C.PROCESS_QSEGS] = sum(int(c["segs"].sum()) for c in self.chunks)

    def append(self, skbs: np.ndarray) -> None:
        if len(skbs):
            self.chunks.append(skbs)
            self.count += len(skbs)

    def take(self, n: int) -> np.ndarray:
        out = []
        got = 0
        while self.chunks and got < n:
            c = self.chunks[0]
            k = min(n - got, len(c))
            if k == len(c):
                self.chunks.popleft()
            else:
                self.chunks[0] = c[k:]
                c = c[:k]
            out.append(c)
            got += k
        self.count -= got
        if not out:
            return np.zeros(0, dtype=self.chunks[0].dtype if self.chunks else None)
        return out[0] if len(out) == 1 else np.concatenate(out)


def enqueue_to_backlog(sd: SoftnetData, net: Net, skbs: np.ndarray,
                       target: Backlog) -> tuple[np.ndarray, np.ndarray]:
    """Append skbs to target's input_pkt_queue; returns (accepted mask, qtail per accepted skb).

    Drops are charged where the kernel charges them: the target's softnet ``dropped`` (in
    its backlog header), this CPU's core rx_dropped, and for flow limit this CPU's
    flow_limit_count (the enqueuing CPU's table decides, §2.8).
    """
    n = len(skbs)
    counters = sd.counters
    mx = net.knobs.netdev_max_backlog
    fl = sd.flow_limit
    ring = target.ring
    accepted = np.ones(n, dtype=bool)
    fl_drop = np.zeros(n, dtype=bool)
    kick = False
    sd.time.charge(n * net.costs.rps_enqueue)
    sd.sync_readers(0)                       # the target's queue: shared, touched from NET_RX
    # Seen by the owner at once on this CPU, a cache line's transfer later on another.
    skbs["ts"] = sd.time.t + (0 if target.cpu == sd.cpu else net.costs.lat_cacheline)
    target.lock.acquire()
    try:
        qlen = len(ring)
        if fl is None or qlen + n - 1 < (mx >> 1):
            # Neither the flow limit (inactive below half full) nor the qlen test can bite
            # before the queue reaches max + 1: a prefix is accepted.
            n_acc = max(0, min(n, mx + 1 - qlen))
            accepted[n_acc:] = False
        else:
            hashes = skb_get_hash(skbs, net.hash_seed)
            q = qlen
            for i in range(n):
                if q > mx:
                    accepted[i] = False
                elif fl.check(int(hashes[i]), q, mx):
                    accepted[i] = False
                    fl_drop[i] = True
                else:
                    q += 1
            n_acc = int(accepted.sum())
        if n_acc:
            state = ring.user(BL_STATE)
            if qlen == 0 and not state & NAPI_STATE_SCHED:
                ring.set_user(BL_STATE, state | NAPI_STATE_SCHED)
                kick = True
            first_tail = ring.prod + 1
            ring.push(skbs[accepted] if n_acc < n else skbs)
        n_drop = n - n_acc
        if n_drop:
            ring.set_user(BL_DROPPED, ring.user(BL_DROPPED) + n_drop)
    finally:
        target.lock.release()
    if n_acc:
        counters[C.BACKLOG_ENQUEUED] += n_acc
        if target.cpu != sd.cpu:
            counters[C.BACKLOG_ENQUEUED_REMOTE] += n_acc
    if n_drop:
        counters[C.RX_DROPPED] += n_drop
        dropped = ~accepted
        n_fl = int(fl_drop.sum())
        if n_fl:
            counters[C.FLOW_LIMIT_COUNT] = fl.count
            counters[C.BACKLOG_DROP_FLOW_LIMIT] += n_fl
            count_per_source(counters, src_drop(Drop.FLOW_LIMIT, 0), skbs[fl_drop])
        if n_drop - n_fl:
            counters[C.BACKLOG_DROP_QLEN] += n_drop - n_fl
            count_per_source(counters, src_drop(Drop.BACKLOG, 0), skbs[dropped & ~fl_drop])
    if kick:
        napi_schedule_rps(sd, target)
    qtails = (first_tail + np.arange(n_acc, dtype=np.int64)) & U32 if n_acc else np.zeros(0, np.int64)
    return accepted, qtails


def napi_schedule_rps(sd: SoftnetData, target: Backlog) -> None:
    """Kick the target's backlog NAPI: locally now, remotely by an IPI sent later."""
    if target.cpu == sd.cpu:
        napi_schedule(sd, sd.backlog)
        return
    if target.cpu not in sd.rps_ipi_list:
        sd.rps_ipi_list.append(target.cpu)
    if not sd.in_net_rx_action:
        sd.softirq.raise_irqoff(NET_RX_SOFTIRQ)   # __raise_softirq_irqoff: gets the IPIs sent


def net_rps_send_ipi(sd: SoftnetData, net: Net) -> None:
    """net_rps_action_and_irq_enable: send the IPIs queued by enqueue_to_backlog."""
    targets = sd.rps_ipi_list
    if not targets:
        return
    sd.rps_ipi_list = []
    cost = net.costs.ipi_send
    for t in targets:
        sd.time.charge(cost)
        sd.counters[C.IPI_SENT] += 1
        sd.send_ipi(t)
