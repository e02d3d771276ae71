"""The emulated NIC driver's receive side: its NAPI poll over an RX ring (the ixgbe/ice
style clean_rx_irq), with the descriptor work compiled.

A NAPI poll of a driver queue copies up to its weight of descriptors out of the ring. When
the queue has no RPS and every UDP socket is a wildcard one (the common case), the same call
also runs the checks that decide whether the whole batch takes the UDP fast path (every skb
a valid IPv4/UDP datagram: ip_rcv_core and the UDP length checks pass, no TCP for GRO to
hold) and builds the batch's socket entries, so the poll costs one compiled call instead of
a dozen numpy ones. A queue whose RPS is the map alone is steered in the same call. Anything
else goes up the general path (cpus.gro, cpus.dev) unchanged, with the same counters.

The caller releases the ring slots (stores the consumer index) after the call returns: the
store then follows every read of the slots in program order, which x86 keeps (TSO).
Context: softirq (the NAPI poll).
"""

from __future__ import annotations

import numpy as np

from emu.counters import MAX_SOURCES, C, Drop, src_drop
from emu.jit import kernel
from emu.ring import (CONS, PROD, RX_BYTES, RX_DROP_PEND, RX_DROPS, RX_JUDGED, RX_LAST_READ,
                      RX_NAPI_STATE, RX_OCC, RX_PACKETS, RX_SEEN, USER0, Ring)
from emu.ringcopy import stamp
from emu.skb import SKB, SOCK_ENTRY

from .dev import netif_receive_skb_list, netif_receive_steered, netif_receive_udp_entries
from .gro import _any_tcp, copy_records, gro_normal_all, gro_receive_batch
from .ip import ALL_UDP, _sock_entries, ip_rcv_core_check
from .napi import Napi, napi_complete_done
from .rps import rps_map_cpu
from .net import Net
from .softnet import SoftnetData

_NAPI_POLLS = int(C.NAPI_POLLS)
_LATE_FRAMES = int(C.LATE_FRAMES)
_EARLY_FRAMES = int(C.EARLY_FRAMES)
_SRC_RING_DROP = int(src_drop(Drop.RING_FULL, 0))


_HASH = SKB.fields["hash"][1]
_L4_HASH = SKB.fields["l4_hash"][1]
_SW_HASH = SKB.fields["sw_hash"][1]


_TS = SKB.fields["ts"][1]
_LEN = SKB.fields["len"][1]
_SRC = SKB.fields["src"][1]
_DROP = SKB.fields["ring_drop"][1]


@kernel
def rx_judge(raw, hdr, now, ring_size, src_drops):
    """Judge every frame that has arrived since the last poll (stamped at or before now),
    in arrival order: admitted while fewer than ring_size descriptors are in use, else
    dropped, as the NIC drops a frame that finds no free descriptor (counted per queue and
    per source). Between two polls nothing frees a descriptor, so this is exact at each
    frame's arrival time. Returns the frames judged that arrived by the previous poll's
    read time: they should have been there then (a causality error, counted; always 0).
    """
    mask = raw.shape[0] - 1
    prod = np.int64(hdr[PROD])
    judged = np.int64(hdr[USER0 + RX_JUDGED])
    occ = np.int64(hdr[USER0 + RX_OCC])
    last = np.int64(hdr[USER0 + RX_LAST_READ])
    seen = np.int64(hdr[USER0 + RX_SEEN])          # 1 + the producer index then; 0: no poll
    late = 0
    packets = np.int64(0)
    nbytes = np.int64(0)
    drops = np.int64(0)
    while judged < prod:
        r = raw[judged & mask]
        ts = stamp(r, _TS)
        if ts > now:
            break
        if seen and ts <= last and judged >= seen - 1:
            late += 1
        if occ < ring_size:
            occ += 1
            packets += 1
            for b in range(4):
                nbytes += np.int64(r[_LEN + b]) << (8 * b)
            r[_DROP] = 0
        else:
            r[_DROP] = 1
            src_drops[r[_SRC]] += np.uint64(1)
            drops += 1
        judged += 1
    hdr[USER0 + RX_JUDGED] = judged
    hdr[USER0 + RX_OCC] = occ
    hdr[USER0 + RX_DROP_PEND] += np.uint64(drops)
    hdr[USER0 + RX_PACKETS] += np.uint64(packets)
    hdr[USER0 + RX_BYTES] += np.uint64(nbytes)
    hdr[USER0 + RX_DROPS] += np.uint64(drops)
    return late


@kernel
def rx_compact(raw, hdr):
    """Free the slots of judged drops that sit between admitted frames still waiting: move
    those frames up against the first unjudged slot, in order, and release the rest. Only
    when the slots are full of frames that have arrived (the NIC then has nowhere to write
    the ones the driver must judge next). The driver owns [CONS, JUDGED): the NIC writes at
    PROD and beyond only."""
    mask = raw.shape[0] - 1
    cons = np.int64(hdr[CONS])
    judged = np.int64(hdr[USER0 + RX_JUDGED])
    w = judged
    i = judged
    while i > cons:
        i -= 1
        r = raw[i & mask]
        if r[_DROP] == 0:
            w -= 1
            if w != i:
                raw[w & mask] = r
    hdr[USER0 + RX_DROP_PEND] = 0
    hdr[CONS] = w


@kernel
def rx_take(raw, hdr, now, budget, ring_size, out, src_drops):
    """The driver's clean of one RX ring at emulated time now: (taken, consumer index,
    late, early). Judges what has arrived (rx_judge), then copies up to budget admitted
    frames into out, in order, freeing their descriptors; the slots of dropped frames are
    released as they are passed. early counts frames taken whose time is after now (a
    causality error; always 0). The caller publishes the consumer index after the copy.
    """
    late = rx_judge(raw, hdr, now, ring_size, src_drops)
    mask = raw.shape[0] - 1
    cons = np.int64(hdr[CONS])
    judged = np.int64(hdr[USER0 + RX_JUDGED])
    occ = np.int64(hdr[USER0 + RX_OCC])
    pend = np.int64(hdr[USER0 + RX_DROP_PEND])
    taken = 0
    early = 0
    while cons < judged and (taken < budget or raw[cons & mask][_DROP]):
        r = raw[cons & mask]
        cons += 1
        if r[_DROP]:
            pend -= 1
            continue
        if stamp(r, _TS) > now:
            early += 1
        out[taken] = r
        taken += 1
        occ -= 1
    hdr[USER0 + RX_OCC] = occ
    hdr[USER0 + RX_DROP_PEND] = pend
    hdr[USER0 + RX_LAST_READ] = now
    hdr[USER0 + RX_SEEN] = np.uint64(hdr[PROD]) + np.uint64(1)
    return taken, cons, late, early


@kernel
def udp_entries(raw, port_map, nsock, ent_out, delays, now):
    """For a poll's skbs (raw rows): (all valid UDP, entries per group).

    When the first is True, ent_out[:n] holds the socket entries grouped as _sock_entries
    groups them (no socket first, then socket 0, 1, ...) and the counts are per group.
    """
    n = raw.shape[0]
    if ip_rcv_core_check(raw, np.empty(n, dtype=np.uint8)) != ALL_UDP:
        return False, np.zeros(nsock + 1, dtype=np.int64)
    return True, _sock_entries(raw, np.empty(0, dtype=np.int64), port_map, nsock, ent_out,
                               delays, now)


@kernel
def rps_group(raw, rps_map, ncpus, gro, grouped):
    """get_rps_cpu by the RPS map alone for a poll's skbs, grouped by where they go.

    Only for batches that GRO leaves as they are (no TCP while GRO is on) and whose skbs all
    carry a hash already (the NIC's L4 hash, or a software one: skb_get_hash has nothing to
    compute). Returns (taken, counts): counts[0] skbs for this CPU's own stack (no
    steering), then counts[1 + c] for CPU c's backlog, each group in grouped in that order,
    skb order kept. taken is False (nothing grouped) for a batch this path does not cover.
    """
    n = raw.shape[0]
    counts = np.zeros(ncpus + 1, dtype=np.int64)
    if gro and _any_tcp(raw):
        return False, counts
    group = np.empty(n, dtype=np.int64)
    for i in range(n):
        r = raw[i]
        if r[_L4_HASH] == 0 and r[_SW_HASH] == 0:
            return False, np.zeros(ncpus + 1, dtype=np.int64)
        h = (np.int64(r[_HASH]) | (np.int64(r[_HASH + 1]) << 8) | (np.int64(r[_HASH + 2]) << 16)
             | (np.int64(r[_HASH + 3]) << 24))
        g = rps_map_cpu(h, rps_map, ncpus) + 1          # 0: this CPU's own stack
        group[i] = g
        counts[g] += 1
    at = np.zeros(ncpus + 1, dtype=np.int64)
    for g in range(1, ncpus + 1):
        at[g] = at[g - 1] + counts[g - 1]
    for i in range(n):
        grouped[at[group[i]]] = raw[i]
        at[group[i]] += 1
    return True, counts


def warm() -> None:
    """Compile (or load) this module's kernels with the argument types a run uses."""
    from emu.counters import cpu_block
    ring = Ring.local(SKB, 4)
    out = np.zeros((2, SKB.itemsize), dtype=np.uint8)
    ent = np.zeros((2, SOCK_ENTRY.itemsize), dtype=np.uint8)
    rx_take(ring.raw, ring.hdr, 0, 1, 512, out, cpu_block()[:16])
    rx_judge(ring.raw, ring.hdr, 0, 512, cpu_block()[:16])
    rx_compact(ring.raw, ring.hdr)
    udp_entries(out[:1], np.full(65536, -1, dtype=np.int16), 1, ent[:1],
                np.zeros(1, dtype=np.int64), 0)
    rps_group(out[:1], np.zeros(1, dtype=np.int64), 1, True, out.copy())


class RxDriver:
    """The driver of eth0 on one CPU: a NAPI per RX queue, polled from net_rx_action.

    Which compiled path a queue's polls take is decided once, from the config: the UDP fast
    path needs no RPS on the queue and only wildcard sockets (the destination port alone
    picks the socket); the RPS fast path needs a map and no RFS flow table.
    """

    def __init__(self, sd: SoftnetData, net: Net, rings: list[Ring]):
        self.sd = sd
        self.net = net
        self.rings = rings
        weight = net.knobs.napi_weight
        self.napis = [Napi(f"eth0-rx-{q}", weight, self.poll, queue=q, state_store=r.hdr,
                           state_index=USER0 + RX_NAPI_STATE)
                      for q, r in enumerate(rings)]
        socks = net.socks
        self.udp_fast = [not rxq.active and len(socks) > 0 and not socks.has_connected_sockets
                         for rxq in net.rps]
        # the UDP fast path's fixed arguments: the port map, the socket count, and the delay
        # after which each socket's reader sees what this CPU queues
        self._udp_args = (socks.port_map, len(socks),
                          socks.delays(sd.cpu, net.costs.lat_cacheline))
        self.rps_map_only = [rxq.map is not None and not (net.rfs and rxq.flow_table is not None)
                             for rxq in net.rps]
        self._grow(weight)

    def _grow(self, n: int) -> None:
        """The per-poll scratch the compiled paths fill: one poll's skbs and entries."""
        n = max(1, int(n))
        self._skb_buf = np.empty(n, dtype=SKB)
        self._skb_raw = self._skb_buf.view(np.uint8).reshape(n, SKB.itemsize)
        self._ent_buf = np.empty(n, dtype=SOCK_ENTRY)
        self._ent_raw = self._ent_buf.view(np.uint8).reshape(n, SOCK_ENTRY.itemsize)
        self._grp_buf = np.empty(n, dtype=SKB)
        self._grp_raw = self._grp_buf.view(np.uint8).reshape(n, SKB.itemsize)

    def poll(self, n: Napi, budget: int) -> int:
        """The NAPI poll: clean up to budget descriptors of one RX ring."""
        sd, net = self.sd, self.net
        q = n.queue
        ring = self.rings[q]
        hdr = ring.hdr
        t_read = sd.time.t
        counters = sd.counters
        src_drops = counters[_SRC_RING_DROP:_SRC_RING_DROP + MAX_SOURCES]
        ring_size = net.knobs.rx_ring
        late = 0
        while not sd.frames_ready(q, t_read):
            # the slots are full of frames that arrived by now: judge them, free the drops'
            # slots, and let the NIC write the next ones
            late += rx_judge(ring.raw, hdr, t_read, ring_size, src_drops)
            rx_compact(ring.raw, hdr)
            sd.rx_consumed(q)
        if budget > self._skb_buf.shape[0]:
            self._grow(budget)
        work, cons, late2, early = rx_take(ring.raw, hdr, t_read, budget, ring_size,
                                           self._skb_raw, src_drops)
        hdr[CONS] = cons                     # release the slots after reading them
        sd.rx_consumed(q)
        if late or late2 or early:
            counters[_LATE_FRAMES] += late + late2
            counters[_EARLY_FRAMES] += early
        if work:
            gro = net.knobs.gro
            raw = self._skb_raw[:work]
            steered = udp = False
            c = net.costs
            sd.time.charge(work * (c.rx_frame + (c.gro if gro else 0)))
            counters[_NAPI_POLLS] += 1
            if self.udp_fast[q]:
                port_map, nsock, delays = self._udp_args
                udp, counts = udp_entries(raw, port_map, nsock, self._ent_raw[:work], delays,
                                          sd.time.t)
                if udp:                      # the sockets are shared: enqueue at this time
                    sd.sync_readers(net.socks.readers_mask(counts))
            elif self.rps_map_only[q]:
                steered, counts = rps_group(raw, net.rps[q].map, net.ncpus, gro,
                                            self._grp_raw[:work])
            if steered or udp:
                if gro:                      # no TCP: every frame is GRO_NORMAL
                    gro_normal_all(counters, work)
                if steered:
                    netif_receive_steered(sd, net, self._grp_buf, counts)
                else:
                    netif_receive_udp_entries(sd, net, raw, self._ent_buf[:work], counts)
            else:
                skbs = copy_records(self._skb_buf[:work])
                if gro:
                    skbs = gro_receive_batch(skbs, counters, q)
                netif_receive_skb_list(sd, net, skbs, q)
        if work < budget and napi_complete_done(sd, n, work):
            sd.unmask_irq(q, t_read)         # EIMS: the NIC may interrupt again
        return work
