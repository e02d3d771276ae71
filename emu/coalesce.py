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
    ts = arrivals[arrivals > read_at]
    ts = ts[ts <= known_until][:rx_ring]
    cands = []
    if len(ts):
        if rx_usecs:
            cands.append(max(armed_at, int(ts[0])) + rx_usecs * 1000)
        if rx_frames and len(ts) >= rx_frames:
            cands.append(max(armed_at, int(ts[rx_frames - 1])))
    settled = min(cands) if cands else None
    if settled is not None and (settled <= known_until
                                or (rx_frames and len(ts) >= rx_frames)
                                or len(ts) >= rx_ring):
        return settled, settled
    # A frame after known_until may still fire it sooner (the rx_frames-th), or start it.
    lb = max(armed_at, known_until + 1)
    if settled is not None:
        lb = min(lb, settled)
    return None, lb
