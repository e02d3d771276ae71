"""A fixed-size descriptor ring over any buffer (shared memory in a run, bytearray in tests).

One producer index and one consumer index, each in its own cache line, both monotonically
increasing u64 counters (slot = index & mask). The producer writes the slots, then publishes
the index; the consumer reads the slots, then publishes its index. Indices are written as
aligned 8-byte stores through a numpy u64 view, which x86 makes atomic and ordered (TSO);
struct.pack_into was seen to let a reader observe a torn index.

Single-producer rings (an RX ring: the NIC produces, the NAPI poller consumes) need no lock.
Multi-producer rings (a CPU's input_pkt_queue, a socket's receive queue) are written only
under their owner's lock; the consumer side stays single.

Words 16..31 of the header are free for the ring's user (IRQ mask, NAPI state, rmem ...).
"""

from __future__ import annotations

import numpy as np

HEADER_BYTES = 256
PROD, CONS = 0, 8
USER0 = 16

# The user words each kind of ring keeps in its header (indexes from USER0), the state every
# process that touches the ring must see.
# An RX ring. Its slots hold what the NIC has DMA'd, stamped with each frame's arrival time
# (the NIC writes ahead of the CPUs' time; a frame exists for the driver from its stamp on).
# The emulated ring (ethtool rx descriptors) is smaller than the slots: the driver judges
# each frame as its time comes, admitting it while fewer than rx_ring descriptors are in use
# and dropping it otherwise (rx_missed / DROP_EN), so a full ring drops exactly as at the
# frame's arrival, whatever the real order of the processes.
# - interrupts raised (the hardware counter), and the queue's NAPI state word;
# - the driver's unmask record (EIMS write after napi_complete_done): how many, the time of
#   the last one, and the read time of the poll before it (every frame that arrived by then
#   was taken); the NIC answers each with one interrupt, or none, unless the driver's CPU
#   already settled it (RX_SETTLED: the unmask number it settled itself, emu.coalesce);
# - the NIC's frontier: every frame of the queue arriving by this time is in the slots;
# - the driver's judging state: frames judged, descriptors in use, judged drops still in
#   the slots; and the queue's hardware counters (rx_packets, rx_bytes, drops);
# - 1 while the NIC waits for room in the slots (the driver wakes it when it frees some);
# - the read time of the driver's last poll and the producer index it saw then (a frame
#   judged later that arrived by that time came late: a causality check).
RX_IRQS, RX_NAPI_STATE, RX_UNMASK_GEN, RX_UNMASK_AT, RX_READ_AT, RX_FRONTIER = 0, 1, 2, 3, 4, 5
RX_JUDGED, RX_OCC, RX_DROP_PEND, RX_PACKETS, RX_BYTES, RX_DROPS = 6, 7, 8, 9, 10, 11
RX_NIC_WAITS, RX_LAST_READ, RX_SEEN, RX_SETTLED = 12, 13, 14, 15
# A CPU's backlog (input_pkt_queue): its backlog NAPI's state word, input_queue_head (the
# owner's dequeue count, read by RFS), and the owner's softnet `dropped` (charged by the
# enqueuing CPU); all three change under the backlog lock (the head: by the owner only).
BL_STATE, BL_HEAD, BL_DROPPED = 0, 1, 2
# A UDP socket's receive queue: sk_rmem_alloc and sk_drops (under the socket lock),
# sk_rxhash of a connected socket, and the reader's forward_deficit and reader_queue length
# (udp_rmem_release's lazy state, the reader's only).
U_RMEM, U_DROPS, U_RXHASH, U_DEFICIT, U_READER_Q = 0, 1, 2, 3, 4


def ring_bytes(dtype: np.dtype, capacity: int) -> int:
    return HEADER_BYTES + np.dtype(dtype).itemsize * capacity


def rx_written_by(ring: "Ring", t: int) -> bool:
    """Every frame of an RX queue arriving by t is in its slots (the NIC's frontier has
    reached t), or the slots are full: what a driver waiting for frames waits for."""
    hdr = ring.hdr
    return (int(hdr[USER0 + RX_FRONTIER]) >= t
            or int(hdr[PROD]) - int(hdr[CONS]) >= ring.capacity)


class Ring:
    __slots__ = ("hdr", "slots", "raw", "capacity", "mask")

    def __init__(self, buf, dtype: np.dtype, capacity: int, offset: int = 0):
        if capacity <= 0 or capacity & (capacity - 1):
            raise ValueError(f"ring capacity must be a power of two (got {capacity})")
        self.hdr = np.ndarray((HEADER_BYTES // 8,), dtype="<u8", buffer=buf, offset=offset)
        self.slots = np.ndarray((capacity,), dtype=dtype, buffer=buf, offset=offset + HEADER_BYTES)
        self.raw = np.ndarray((capacity, np.dtype(dtype).itemsize), dtype=np.uint8, buffer=buf,
                              offset=offset + HEADER_BYTES)
        self.capacity = capacity
        self.mask = capacity - 1

    @classmethod
    def local(cls, dtype: np.dtype, capacity: int) -> "Ring":
        """A ring in private memory (tests, single-process mode)."""
        return cls(bytearray(ring_bytes(dtype, capacity)), dtype, capacity)

    # -- both sides ----------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.hdr[PROD]) - int(self.hdr[CONS])

    @property
    def prod(self) -> int:
        return int(self.hdr[PROD])

    @property
    def cons(self) -> int:
        return int(self.hdr[CONS])

    # -- producer side -------------------------------------------------------------------
    def free(self) -> int:
        return self.capacity - len(self)

    def push(self, batch: np.ndarray) -> int:
        """Copy as much of batch as fits; publish; return how many were written."""
        prod = int(self.hdr[PROD])
        n = min(len(batch), self.capacity - (prod - int(self.hdr[CONS])))
        if n <= 0:
            return 0
        if batch.dtype != self.slots.dtype:
            batch = batch.astype(self.slots.dtype)
        rows = np.ascontiguousarray(batch[:n]).view(np.uint8).reshape(n, self.raw.shape[1])
        _copy().ring_write(self.raw, prod, rows, n)
        self.hdr[PROD] = prod + n      # publish after the slots are written
        return n

    # -- consumer side -------------------------------------------------------------------
    def pop(self, max_n: int) -> np.ndarray:
        """Copy out up to max_n entries (oldest first) and release their slots."""
        cons = int(self.hdr[CONS])
        n = min(max_n, int(self.hdr[PROD]) - cons)
        if n <= 0:
            return self.slots[:0].copy()
        out = np.empty((n, self.raw.shape[1]), dtype=np.uint8)
        _copy().ring_read(self.raw, cons, n, out)
        self.hdr[CONS] = cons + n      # release after the slots are read
        return out.view(self.slots.dtype).reshape(n)

    def user(self, i: int) -> int:
        return int(self.hdr[USER0 + i])

    def set_user(self, i: int, value: int) -> None:
        self.hdr[USER0 + i] = value


_RINGCOPY = None


def _copy():
    """emu.ringcopy, imported on first use: the orchestrator reads rings but never copies
    records, and need not load the compiler."""
    global _RINGCOPY
    if _RINGCOPY is None:
        from . import ringcopy
        _RINGCOPY = ringcopy
    return _RINGCOPY

