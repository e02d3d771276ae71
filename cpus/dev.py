"""The receive path above the driver (net/core/dev.c, 6.18): netif_receive_skb_list_internal
(RPS steering or delivery here), __netif_receive_skb (protocol delivery) and process_backlog
(the backlog NAPI's poll). Context: softirq.

Every function takes the CPU's softnet_data (sd: its counters, clock and hooks) and the
namespace's shared state (net: sockets, backlogs, RPS tables, knobs, costs), as dev.c takes
this_cpu's softnet_data and dev_net().
"""

from __future__ import annotations

import numpy as np

from emu.counters import C
from emu.ringcopy import ring_visible
from emu.skb import SKB

from .backlog import enqueue_to_backlog, net_rps_send_ipi
from .ip import DeliverResult, ip_rcv_deliver, ip_rcv_ok_counts, parse, queue_entries
from .napi import NAPI_STATE_THREADED, Napi
from .net import Net
from .rps import get_rps_cpu, save_qtail
from .softnet import SoftnetData

_PROCESSED = int(C.PROCESSED)
_SKB_TS = SKB.fields["ts"][1]


def netif_receive_skb_list(sd: SoftnetData, net: Net, skbs: np.ndarray, queue: int) -> None:
    """netif_receive_skb_list_internal: RPS steering (get_rps_cpu), or delivery on this CPU.

    As the kernel does, steered skbs are enqueued first (target by target) and the rest are
    delivered here afterwards.
    """
    rxq = net.rps[queue]
    if not rxq.active:
        netif_receive_skb(sd, net, skbs)
        return
    if net.rfs:
        sd.sync()                            # RFS reads the readers' flow table and queues
    else:
        sd.sync_readers(0)                   # the backlogs' heads (their owners' NET_RX)
    heads = np.array([b.head for b in net.backlogs], dtype=np.uint32)
    cpus, slots = get_rps_cpu(skbs, rxq, net.sock_table, heads, net.ncpus, net.hash_seed)
    local = cpus < 0
    ft = rxq.flow_table
    saved = []
    for target in np.unique(cpus[~local]):
        idx = np.nonzero(cpus == target)[0]
        accepted, qtails = enqueue_to_backlog(sd, net, skbs[idx], net.backlogs[int(target)])
        if ft is not None and len(qtails):
            saved.append((idx[accepted], qtails, int(target)))
    if saved:
        # Store each skb's tail in skb order, and only into a slot that still points at
        # the CPU the skb went to, so last_qtail always counts in that CPU's queue.
        idx = np.concatenate([s[0] for s in saved])
        tails = np.concatenate([s[1] for s in saved])
        tgt = np.concatenate([np.full(len(s[0]), s[2]) for s in saved])
        order = np.argsort(idx, kind="stable")
        sl, tails, tgt = slots[idx][order], tails[order], tgt[order]
        ok = sl >= 0
        ok[ok] = ft["cpu"][sl[ok]] == tgt[ok]
        save_qtail(ft, sl[ok], tails[ok])
    if local.any():
        netif_receive_skb(sd, net, skbs[local])


def netif_receive_skb(sd: SoftnetData, net: Net, skbs: np.ndarray) -> None:
    """__netif_receive_skb: count processed, then IPv4 / UDP / TCP delivery."""
    n = len(skbs)
    if not n:
        return
    sd.counters[_PROCESSED] += n
    parsed = parse(skbs)
    sd.sync()                                # the sockets are shared: deliver at this time
    res = ip_rcv_deliver(skbs, parsed, sd.counters, net.socks,
                         net.socks.delays(sd.cpu, net.costs.lat_cacheline), sd.time.t)
    c = net.costs
    sd.time.charge(n * c.netif_receive + res.udp * c.udp_rcv + res.tcp * c.tcp_rcv)
    _wake_readers(sd, res)


def netif_receive_udp_entries(sd: SoftnetData, net: Net, raw: np.ndarray, entries: np.ndarray,
                              counts: np.ndarray) -> None:
    """netif_receive_skb for a batch the driver found all valid IPv4/UDP, its socket entries
    already built (cpus.driver.rx_clean_udp): no ptype, ip_rcv_core or UDP length drop can
    happen, so only the counters and the socket enqueue remain."""
    n = raw.shape[0]
    counters = sd.counters
    counters[_PROCESSED] += n
    res = DeliverResult()
    res.ip = res.udp = n
    ip_rcv_ok_counts(raw, counters, n)
    queue_entries(entries, counts, counters, net.socks, res)
    sd.time.charge(n * (net.costs.netif_receive + net.costs.udp_rcv))
    _wake_readers(sd, res)


def netif_receive_steered(sd: SoftnetData, net: Net, grouped: np.ndarray,
                          counts: np.ndarray) -> None:
    """netif_receive_skb_list for a batch cpus.driver.rx_clean_rps already steered by the
    RPS map: enqueue each target's skbs (CPUs in ascending order), then deliver the rest."""
    counts = counts.tolist()
    at = counts[0]
    for c in range(net.ncpus):
        k = counts[c + 1]
        if k:
            enqueue_to_backlog(sd, net, grouped[at:at + k], net.backlogs[c])
            at += k
    if counts[0]:
        netif_receive_skb(sd, net, grouped[:counts[0]])


def _wake_readers(sd: SoftnetData, res: DeliverResult) -> None:
    for _sock, reader in res.woken:
        sd.ttwu(reader)


def process_backlog(sd: SoftnetData, net: Net, napi: Napi, quota: int) -> int:
    """The backlog NAPI's poll: deliver process_queue, splice input_pkt_queue, repeat."""
    if sd.rps_ipi_list:
        net_rps_send_ipi(sd, net)
    napi.weight = net.knobs.dev_rx_weight
    mine = sd.input_queue
    ring = mine.ring
    pq = sd.process_queue
    counters = sd.counters
    counters[C.BACKLOG_POLLS] += 1
    work = 0
    while True:
        while pq.count:
            batch = pq.take(quota - work)
            netif_receive_skb(sd, net, batch)
            work += len(batch)
            if work >= quota:
                mine.head_add(work)
                pq.publish(counters)
                return work
        sd.sync_readers(0)                   # other CPUs append to the queue (from NET_RX)
        mine.lock.acquire()
        try:
            queued = len(ring)
            if queued == 0:
                # the inline napi completion: keep only THREADED
                napi.state = napi.state & NAPI_STATE_THREADED
                done = True
            else:
                visible, nxt = ring_visible(ring.raw, ring.cons, ring.prod, _SKB_TS,
                                            sd.time.t)
                if visible:
                    pq.append(ring.pop(visible))
                done = False
        finally:
            mine.lock.release()
        if done:
            break
        if not visible:
            # every queued skb is still on its way from another CPU (a cache line in
            # flight): the poll waits for the first
            sd.time.charge(int(nxt) - sd.time.t)
    mine.head_add(work)
    pq.publish(counters)
    return work
