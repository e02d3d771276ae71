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

from emu.counters import C
from emu.jit import kernel
from emu.ring import CONS, PROD, RX_IRQ_MASKED, RX_NAPI_STATE, USER0, Ring
from emu.ringcopy import ring_read
from emu.skb import SKB, SOCK_ENTRY

from .dev import netif_receive_skb_list, netif_receive_steered, netif_receive_udp_entries
from .gro import _any_tcp, gro_normal_all, gro_receive_batch
from .ip import _sock_entries, ip_rcv_core_check
from .napi import Napi, napi_complete_done
from .rps import rps_map_cpu
from .net import Net
from .softnet import SoftnetData

_NAPI_POLLS = int(C.NAPI_POLLS)


_HASH = SKB.fields["hash"][1]
_L4_HASH = SKB.fields["l4_hash"][1]
_SW_HASH = SKB.fields["sw_hash"][1]


@kernel
def rx_clean(ring_raw, cons, n, out) -> None:
    """Copy the n descriptors from slot index cons on (raw ring rows) into out[:n]."""
    ring_read(ring_raw, cons, n, out)


@kernel
def rx_clean_udp(ring_raw, cons, n, out, port_map, nsock, ent_out):
    """rx_clean, then: (all valid UDP, entries per group).

    When the first is True, ent_out[:n] holds the socket entries grouped as _sock_entries
    groups them (no socket first, then socket 0, 1, ...) and the counts are per group.
    """
    rx_clean(ring_raw, cons, n, out)
    raw = out[:n]
    if not ip_rcv_core_check(raw, np.empty(n, dtype=np.uint8)):
        return False, np.zeros(nsock + 1, dtype=np.int64)
    return True, _sock_entries(raw, np.empty(0, dtype=np.int64), port_map, nsock, ent_out[:n])


@kernel
def rx_clean_rps(ring_raw, cons, n, out, rps_map, ncpus, gro, grouped):
    """rx_clean, then get_rps_cpu by the RPS map alone, the skbs grouped by where they go.

    Only for batches that GRO leaves as they are (no TCP while GRO is on) and whose skbs all
    carry a hash already (the NIC's L4 hash, or a software one: skb_get_hash has nothing to
    compute). Per skb, as get_rps_cpu without a flow table: hash 0 -> no steering; else
    cpu = map[(hash * len(map)) >> 32] (reciprocal_scale), used if it is online.
    Returns (taken, counts): counts[0] skbs for this CPU's own stack (no steering), then
    counts[1 + c] for CPU c's backlog, each group in grouped in that order, skb order kept.
    taken is False (nothing grouped) for a batch this path does not cover.
    """
    rx_clean(ring_raw, cons, n, out)
    counts = np.zeros(ncpus + 1, dtype=np.int64)
    raw = out[:n]
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
    ring = np.zeros((2, SKB.itemsize), dtype=np.uint8)
    out = np.zeros((2, SKB.itemsize), dtype=np.uint8)
    ent = np.zeros((2, SOCK_ENTRY.itemsize), dtype=np.uint8)
    rx_clean(ring, 0, 1, out)
    rx_clean_udp(ring, np.int64(0), 1, out, np.full(65536, -1, dtype=np.int16), 1, ent)
    rx_clean_rps(ring, 0, 1, out, np.zeros(1, dtype=np.int64), 1, True, out.copy())


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

    def unmask_irq(self, queue: int) -> None:
        """The driver's write to the NIC's interrupt mask (EIMS) after napi_complete_done."""
        self.rings[queue].set_user(RX_IRQ_MASKED, 0)

    def poll(self, n: Napi, budget: int) -> int:
        """The NAPI poll: clean up to budget descriptors of one RX ring."""
        sd, net = self.sd, self.net
        q = n.queue
        ring = self.rings[q]
        hdr = ring.hdr
        cons = int(hdr[CONS])
        work = min(budget, int(hdr[PROD]) - cons)
        if work > 0:
            counters = sd.counters
            if work > self._skb_buf.shape[0]:
                self._grow(work)
            gro = net.knobs.gro
            steered = udp = False
            if self.udp_fast[q]:
                udp, counts = rx_clean_udp(ring.raw, cons, work, self._skb_raw,
                                           net.socks.port_map, len(net.socks), self._ent_raw)
            elif self.rps_map_only[q]:
                steered, counts = rx_clean_rps(ring.raw, cons, work, self._skb_raw,
                                               net.rps[q].map, net.ncpus, gro, self._grp_raw)
            else:
                rx_clean(ring.raw, cons, work, self._skb_raw)
            hdr[CONS] = cons + work          # release the slots after reading them
            c = net.costs
            sd.time.charge(work * (c.rx_frame + (c.gro if gro else 0)))
            counters[_NAPI_POLLS] += 1
            if steered or udp:
                if gro:                      # no TCP: every frame is GRO_NORMAL
                    gro_normal_all(counters, work)
                if steered:
                    netif_receive_steered(sd, net, self._grp_buf, counts)
                else:
                    netif_receive_udp_entries(sd, net, self._skb_raw[:work],
                                              self._ent_buf[:work], counts)
            else:
                skbs = self._skb_buf[:work].copy()
                if gro:
                    skbs = gro_receive_batch(skbs, counters, q)
                netif_receive_skb_list(sd, net, skbs, q)
        elif work < 0:
            raise AssertionError(f"RX ring {q}: producer index behind consumer index")
        if work < budget and napi_complete_done(sd, n, work):
            sd.unmask_irq(q)
        return work

