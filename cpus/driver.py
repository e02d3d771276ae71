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

from .ip import _sock_entries, _udp4_ok


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


def warm(skb_size: int, entry_size: int) -> None:
    ring = np.zeros((2, skb_size), dtype=np.uint8)
    out = np.zeros((2, skb_size), dtype=np.uint8)
    ent = np.zeros((2, entry_size), dtype=np.uint8)
    rx_clean(ring, 0, 1, out)
    rx_clean_udp(ring, np.int64(0), 1, out, np.full(65536, -1, dtype=np.int16), 1, ent)
