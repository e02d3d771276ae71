"""Static RX interrupt coalescing of one queue (ethtool -C rx-usecs / rx-frames).

Mirrors the generic semantics of struct ethtool_coalesce (include/uapi/linux/ethtool.h) as
mlx5's EQE-based moderation applies them: once a completion is pending, raise the queue's
MSI-X interrupt when rx-usecs have passed since the first one, or when rx-frames are
pending, whichever comes first. While the vector is masked (NAPI owns the queue) nothing is
raised and the timer is idle; it restarts with the first pending frame seen after unmask.

Deviations: the timer starts at the first evaluation that sees a pending descriptor, not at
the descriptor's DMA time, so the NIC loop should evaluate when it writes descriptors; the
adaptive schemes (net_dim, ixgbe ITR) and the *-irq / rate-dependent sets are not modelled.
"""

from __future__ import annotations


class Coalescer:
    """The interrupt moderation state machine of one RX queue."""

    __slots__ = ("rx_usecs", "rx_frames", "_delay_ns", "t_first")

    def __init__(self, rx_usecs: int, rx_frames: int):
        if rx_usecs < 0 or rx_frames < 0:
            raise ValueError("rx_usecs and rx_frames must be >= 0")
        if rx_usecs == 0 and rx_frames == 0:
            raise ValueError("rx_usecs and rx_frames cannot both be 0 (no coalescing is rx_usecs=0 rx_frames=1)")
        self.rx_usecs = int(rx_usecs)
        self.rx_frames = int(rx_frames)
        self._delay_ns = self.rx_usecs * 1000
        self.t_first: int | None = None  # emulated ns the timer started, None when idle

    def update(self, now_ns: int, pending: int, masked: bool) -> bool:
        """True when the NIC must raise the queue's interrupt now (the caller then masks it).

        pending: descriptors written by the NIC and not yet consumed by the driver.
        """
        if masked or pending <= 0:
            self.t_first = None
            return False
        if self.t_first is None:
            self.t_first = now_ns
        if (self._delay_ns and now_ns - self.t_first >= self._delay_ns) or \
                (self.rx_frames and pending >= self.rx_frames):
            self.t_first = None
            return True
        return False

    def next_deadline(self) -> int | None:
        """Emulated ns at which the rx-usecs timer fires, None if it is not running."""
        if self.t_first is None or not self._delay_ns:
            return None
        return self.t_first + self._delay_ns
