"""Static RX interrupt coalescing of one queue (ethtool -C rx-usecs / rx-frames), as a pure
function of the queue's arrivals: when does the next interrupt fire.

The NIC's rule, kept here as a contract because two agents evaluate it on the same stamped
descriptors: the NIC (nic.agent), and the CPU that unmasks the queue when the NIC has
already written the frames that decide it (cpus.agent): same data, same answer, and the
interrupt needs no message.

The generic semantics of struct ethtool_coalesce (include/uapi/linux/ethtool.h) as mlx5's
EQE-based moderation applies them: once a completion is pending while the vector is armed,
raise the queue's MSI-X interrupt when rx-usecs have passed since that first pending one,
or when rx-frames are pending, whichever comes first. While NAPI owns the queue the vector
is masked and nothing is raised; the driver's unmask (after napi_complete_done) re-arms it.

A frame is a completion only if it found a free descriptor. At the unmask the previous poll
had taken every admitted frame that arrived by its read time, and nothing frees a
descriptor before the next interrupt's poll, so the frames after the read time are admitted
in order while fewer than rx_ring are pending: the first rx_ring of them.

Not modelled: the adaptive schemes (net_dim, ixgbe's ITR) and the *-irq / rate-dependent
sets.
"""

from __future__ import annotations

import numpy as np

from .jit import kernel
from .ringcopy import stamp

NEVER = None


def check(rx_usecs: int, rx_frames: int) -> None:
    if rx_usecs < 0 or rx_frames < 0:
        raise ValueError("rx_usecs and rx_frames must be >= 0")
    if rx_usecs == 0 and rx_frames == 0:
        raise ValueError("rx_usecs and rx_frames cannot both be 0 "
                         "(no coalescing is rx_usecs=0 rx_frames=1)")


def irq_time(armed_at: int, read_at: int, arrivals: np.ndarray, known_until: int,
             rx_usecs: int, rx_frames: int, rx_ring: int) -> tuple[int | None, int]:
    """When the armed vector of a queue fires: (T, lower bound).

    armed_at: when the NIC saw the unmask (the driver's write plus its latency); read_at:
    the read time of the poll before it; arrivals: sorted arrival times of the queue's
    frames, every one that arrives in (read_at, known_until] among them (others are
    ignored). T is None while the arrivals known so far do not settle it; the lower bound
    is then the earliest it can still be (known_until + 1 at least, as a later frame could
    trigger it).
    """
    a = np.ascontiguousarray(arrivals)
    # emulated times are below 2**63: a uint64 array reads the same as int64, without a copy
    a = a.view(np.int64) if a.dtype == np.uint64 else a.astype(np.int64, copy=False)
    ok, T, lb = _irq_time(int(armed_at), int(read_at), a, int(known_until),
                          int(rx_usecs), int(rx_frames), int(rx_ring))
    return (int(T) if ok else None), int(lb)


@kernel
def _fires(armed_at, n, first, nth, known_until, rx_usecs, rx_frames, rx_ring):
    """The rule itself, from the pending frames in (read_at, known_until]: n of them (at
    most rx_ring), the first one's arrival and the rx_frames-th's: (settled, T, lb)."""
    has = False
    settled = np.int64(0)
    if n:
        if rx_usecs:
            settled = max(armed_at, first) + rx_usecs * 1000
            has = True
        if rx_frames and n >= rx_frames:
            c = max(armed_at, nth)
            if not has or c < settled:
                settled = c
            has = True
    if has and (settled <= known_until or (rx_frames and n >= rx_frames) or n >= rx_ring):
        return True, settled, settled
    # A frame after known_until may still fire it sooner (the rx_frames-th), or start it.
    lb = max(armed_at, known_until + 1)
    if has and settled < lb:
        lb = settled
    return False, np.int64(0), lb


@kernel
def _irq_time(armed_at, read_at, arrivals, known_until, rx_usecs, rx_frames, rx_ring):
    n = 0
    first = np.int64(0)
    nth = np.int64(0)
    for i in range(arrivals.shape[0]):
        a = np.int64(arrivals[i])
        if a > read_at and a <= known_until:
            if n == 0:
                first = a
            if n == rx_frames - 1:
                nth = a
            n += 1
            if n >= rx_ring:
                break
    return _fires(armed_at, n, first, nth, known_until, rx_usecs, rx_frames, rx_ring)


@kernel
def irq_time_ring(raw, cons, prod, ts_off, armed_at, read_at, known_until, rx_usecs,
                  rx_frames, rx_ring):
    """irq_time over the stamps of an RX ring's written slots cons..prod (raw records, the
    stamp at byte ts_off): (settled, T, lb)."""
    mask = raw.shape[0] - 1
    arrivals = np.empty(max(0, prod - cons), dtype=np.int64)
    for i in range(cons, prod):
        arrivals[i - cons] = np.int64(stamp(raw[i & mask], ts_off))
    return _irq_time(armed_at, read_at, arrivals, known_until, rx_usecs, rx_frames, rx_ring)


def warm() -> None:
    """Compile (or load) this module's kernels with the argument types a run uses."""
    irq_time(0, 0, np.zeros(2, dtype=np.int64), 10, 16, 32, 512)
    irq_time_ring(np.zeros((4, 160), dtype=np.uint8), 1, 3, 8, 0, 0, 10, 16, 32, 512)
    _fires(0, 1, 5, 5, 10, 16, 32, 512)
