"""The emulated driver's RX clean loop, compiled: descriptors out of an RX ring, in one call.

A NAPI poll of a driver queue copies up to its weight of descriptors out of the ring. When
the queue has no RPS and every UDP socket is a wildcard one (the common case), the same call
also runs the checks that decide whether the whole batch takes the UDP fast path (every skb
a valid IPv4/UDP datagram: ip_rcv_core and the UDP length checks pass, no TCP for GRO to
hold) and builds the batch's socket entries, so the poll costs one compiled call instead of
a dozen numpy ones. Anything else goes up the general path (cpus.gro, cpus.ip) unchanged.

The caller releases the ring slots (stores the consumer index) after the call returns: the
store then follows every read of the slots in program order, which x86 keeps (TSO).
"""

from __future__ import annotations

import numpy as np

from emu.jit import kernel
from emu.skb import SKB

from .gro import _any_tcp
from .ip import _sock_entries, _udp4_ok


_HASH = SKB.fields["hash"][1]
_L4_HASH = SKB.fields["l4_hash"][1]
_SW_HASH = SKB.fields["sw_hash"][1]


@kernel
def rx_clean(ring_raw, cons, n, out) -> None:
    """Copy the n descriptors from slot index cons on (raw ring rows) into out[:n]."""
    cap = ring_raw.shape[0]
    start = cons & (cap - 1)
    first = min(n, cap - start)
    out[:first] = ring_raw[start:start + first]       # at most two block copies
    if first < n:
        out[first:n] = ring_raw[:n - first]


@kernel
def rx_clean_udp(ring_raw, cons, n, out, port_map, nsock, ent_out):
    """rx_clean, then: (all valid UDP, entries per group, every skb no longer than RX_BUF).

    When the first is True, ent_out[:n] holds the socket entries grouped as _sock_entries
    groups them (no socket first, then socket 0, 1, ...) and the counts are per group.
    """
    rx_clean(ring_raw, cons, n, out)
    raw = out[:n]
    if not _udp4_ok(raw):
        return False, np.zeros(nsock + 1, dtype=np.int64), False
    counts, small = _sock_entries(raw, np.empty(0, dtype=np.int64), port_map, nsock,
                                  ent_out[:n])
    return True, counts, small


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
    mlen = np.int64(rps_map.shape[0])
    for i in range(n):
        r = raw[i]
        if r[_L4_HASH] == 0 and r[_SW_HASH] == 0:
            return False, np.zeros(ncpus + 1, dtype=np.int64)
        h = (np.int64(r[_HASH]) | (np.int64(r[_HASH + 1]) << 8) | (np.int64(r[_HASH + 2]) << 16)
             | (np.int64(r[_HASH + 3]) << 24))
        g = 0
        if h != 0:
            pick = rps_map[(h * mlen) >> 32]
            if pick < ncpus:
                g = pick + 1
        group[i] = g
        counts[g] += 1
    at = np.zeros(ncpus + 1, dtype=np.int64)
    for g in range(1, ncpus + 1):
        at[g] = at[g - 1] + counts[g - 1]
    for i in range(n):
        grouped[at[group[i]]] = raw[i]
        at[group[i]] += 1
    return True, counts


def warm(skb_size: int, entry_size: int) -> None:
    ring = np.zeros((2, skb_size), dtype=np.uint8)
    out = np.zeros((2, skb_size), dtype=np.uint8)
    ent = np.zeros((2, entry_size), dtype=np.uint8)
    rx_clean(ring, 0, 1, out)
    rx_clean_udp(ring, np.int64(0), 1, out, np.full(65536, -1, dtype=np.int16), 1, ent)
    rx_clean_rps(ring, 0, 1, out, np.zeros(1, dtype=np.int64), 1, True, out.copy())
