"""The IPv4 header checksum, once, for the NIC that writes it and the CPUs that check it.

ip_fast_csum (arch/x86/include/asm/checksum_64.h): the ones' complement sum of the header's
ihl 32-bit words, folded to 16 bits and complemented. Over a valid header (checksum field
included) it is 0; over a header whose checksum field is 0 it is the value to store there.
The header is read from a row of raw bytes at an offset, as every per-frame loop here holds
frames (an SKB record's bytes, a template's head).
"""

from __future__ import annotations

import numpy as np

from .jit import kernel


@kernel
def ip_fast_csum(row, off, ihl):
    """The folded, complemented sum of the ihl 32-bit words at row[off:] (0: valid)."""
    acc = np.int64(0)
    for w in range(2 * ihl):
        acc += (np.int64(row[off + 2 * w]) << 8) | np.int64(row[off + 2 * w + 1])
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return (~acc) & 0xFFFF


@kernel
def ip_send_check(row, off):
    """ip_send_check: fill in the checksum of the IPv4 header at row[off:] (its own ihl)."""
    row[off + 10] = 0
    row[off + 11] = 0
    c = ip_fast_csum(row, off, row[off] & 0xF)
    row[off + 10] = c >> 8
    row[off + 11] = c & 0xFF


@kernel
def ip_send_check_rows(rows, off):
    """ip_send_check of the header at offset off of every row."""
    for i in range(rows.shape[0]):
        ip_send_check(rows[i], off)


@kernel
def ip_csum_ok_rows(rows, off, ihl, ok):
    """ok[i]: whether row i's header of ihl[i] words at offset off has a valid checksum."""
    for i in range(rows.shape[0]):
        ok[i] = ip_fast_csum(rows[i], off, ihl[i]) == 0


def warm() -> None:
    """Compile (or load) this module's kernels with the argument types a run uses."""
    rows = np.zeros((1, 160), dtype=np.uint8)
    rows[0, 46] = 0x45
    ip_send_check_rows(rows, 46)
    ip_csum_ok_rows(rows, 46, np.full(1, 5, dtype=np.int64), np.zeros(1, dtype=np.bool_))
    ip_send_check(rows[0], 46)
    ip_fast_csum(rows[0], 46, 5)
