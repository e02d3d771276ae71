"""Copying records into and out of a ring's slots, wrapping around its end: once, compiled.

Every ring here is a power-of-two array of fixed-size slots indexed by free-running
counters; a run of n records starting at index i occupies slots i & mask onward and wraps
to slot 0. The NIC's DMA, the driver's clean, the backlogs and the sockets all copy through
these two functions (raw byte rows in, raw byte rows out).
"""

from __future__ import annotations

import numpy as np

from .jit import kernel


@kernel
def ring_read(raw, cons, n, out):
    """Copy the n records from index cons on (raw: the ring's slots as byte rows) to out[:n]."""
    cap = raw.shape[0]
    start = cons & (cap - 1)
    first = min(n, cap - start)
    out[:first] = raw[start:start + first]      # at most two block copies
    if first < n:
        out[first:n] = raw[:n - first]


@kernel
def ring_write(raw, prod, src, n):
    """Copy src[:n] (byte rows) into the slots from index prod on."""
    cap = raw.shape[0]
    start = prod & (cap - 1)
    first = min(n, cap - start)
    raw[start:start + first] = src[:first]
    if first < n:
        raw[:n - first] = src[first:n]


@kernel
def stamp(r, off):
    """The little-endian u64 stamp at byte off of one raw record (an emulated time)."""
    ts = np.int64(0)
    for b in range(8):
        ts |= np.int64(r[off + b]) << (8 * b)
    return ts


@kernel
def ring_visible(raw, cons, prod, ts_off, now):
    """(k, next): how many records from index cons on are visible at time now (their u64
    stamp at byte ts_off is at most now), and the stamp of the first one that is not (0 if
    all are). Producers append in real-time order, so the visible part is a prefix."""
    mask = raw.shape[0] - 1
    k = 0
    i = cons
    while i < prod:
        ts = stamp(raw[i & mask], ts_off)
        if ts > now:
            return k, ts
        k += 1
        i += 1
    return k, np.int64(0)


def warm() -> None:
    """Compile (or load) this module's kernels with the argument types a run uses."""
    for width in (160, 24):          # SKB and SOCK_ENTRY records
        raw = np.zeros((4, width), dtype=np.uint8)
        rows = np.zeros((2, width), dtype=np.uint8)
        ring_write(raw, 3, rows, 2)
        ring_read(raw, 3, 2, rows)
        ring_visible(raw, 3, 5, 8, 0)
        stamp(raw[0], 8)
