"""Traffic sources: when frames of one [[traffic.sources]] entry reach the wire, and which flow.

Not kernel code: this is the far end of the link. Times are emulated nanoseconds. A source is
active on (start, stop]. Patterns:

* constant: arrival k (k = 1, 2, ...) at start + k / rate, so (a, b] holds exactly
  N(b) - N(a) frames with N(t) = floor(rate * (t - start)) and splitting an interval never
  gains or loses a frame.
* onoff: the same clock, but it only runs during the on phases (start + c(on+off),
  start + c(on+off) + on]: N counts on-time only, so the rate holds while on and the off
  phases are silent.
* poisson: a Poisson count for the active part of the interval, uniform integer timestamps,
  sorted (rng seeded with seed + index).

Timestamps are integer ns: arrival k is stamped at the first ns its real time has been
reached (ceil).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from .frames import Flows, build, flow_templates
from .rss import Rss

NSEC_PER_MSEC = 1_000_000
NSEC_PER_SEC = 1_000_000_000


class Source:
    """One traffic source: its flows (frame templates) and its arrival process."""

    def __init__(self, cfg: dict, index: int, rss: Rss, seed: int):
        self.cfg = dict(cfg)
        self.index = int(index)
        self.rss = rss
        self.pattern = cfg["pattern"]
        if self.pattern not in ("constant", "poisson", "onoff"):
            raise ValueError(f"unknown traffic pattern {self.pattern!r}")
        # Exact rational rate: the count formula must not drift over a long run.
        self.rate = Fraction(cfg["rate_pps"])
        self.start_ns = round(float(cfg.get("start_ms", 0.0)) * NSEC_PER_MSEC)
        stop = float(cfg.get("stop_ms", -1.0))
        self.stop_ns: int | None = None if stop < 0 else round(stop * NSEC_PER_MSEC)
        self.on_ns = self.off_ns = 0
        if self.pattern == "onoff":
            self.on_ns = round(float(cfg["on_ms"]) * NSEC_PER_MSEC)
            self.off_ns = round(float(cfg["off_ms"]) * NSEC_PER_MSEC)
            if self.on_ns <= 0 or self.off_ns < 0:
                raise ValueError("pattern 'onoff' needs on_ms > 0 and off_ms >= 0")
        self.flows: Flows = flow_templates(cfg, int(cfg["flows"]), seed, self.index, rss)
        self.frame_len = self.flows.frame_len
        w = np.asarray(cfg.get("weights") or [], dtype=np.float64)
        self.p = w / w.sum() if w.size else None
        self._rng = np.random.default_rng(int(seed) + self.index)
        # A stream of its own, so the flow choice does not shift the arrival times.
        self._rng_flow = np.random.default_rng([int(seed) + self.index, 1])
        # The RSS input (addresses, ports) is fixed per flow, so each flow's hash and queue
        # are computed once; the NIC uses flow_queue to drop what a full ring cannot take
        # before building it.
        self.flow_hash, self.flow_l4 = rss.hash_heads(self.flows.heads)
        self.flow_queue = rss.queue_of(self.flow_hash)

    # -- arrival process -------------------------------------------------------------

    def _count(self, t: int) -> int:
        """N(t): deterministic arrivals in (start, t]."""
        if self.stop_ns is not None:
            t = min(t, self.stop_ns)
        elapsed = t - self.start_ns
        if elapsed <= 0:
            return 0
        if self.pattern == "onoff":
            cyc = self.on_ns + self.off_ns
            elapsed = (elapsed // cyc) * self.on_ns + min(elapsed % cyc, self.on_ns)
        return (elapsed * self.rate.numerator) // (self.rate.denominator * NSEC_PER_SEC)

    def _deterministic(self, a: int, b: int) -> np.ndarray:
        k1, k2 = self._count(a) + 1, self._count(b)
        if k2 < k1:
            return np.zeros(0, dtype=np.uint64)
        # c: the first whole ns of on-time by which arrival k is due, ceil(k / rate).
        scale = NSEC_PER_SEC * self.rate.denominator
        if k2 * scale < 1 << 62:
            k = np.arange(k1, k2 + 1, dtype=np.int64)
            c = -((-k * scale) // self.rate.numerator)
        else:
            # Rates that are not short fractions: float64 is within ~1e-3 ns here, and the
            # clip below keeps a rounding slip inside (a, b].
            k = np.arange(k1, k2 + 1, dtype=np.float64)
            c = np.ceil(k * (NSEC_PER_SEC / float(self.rate))).astype(np.int64)
        c = np.maximum(c, 1)
        if self.pattern == "onoff":
            m = (c - 1) // self.on_ns
            t = self.start_ns + m * (self.on_ns + self.off_ns) + (c - m * self.on_ns)
        else:
            t = self.start_ns + c
        hi = b if self.stop_ns is None else min(b, self.stop_ns)
        return np.clip(t, a + 1, hi).astype(np.uint64)

    def _poisson(self, a: int, b: int) -> np.ndarray:
        lo = max(a, self.start_ns)
        hi = b if self.stop_ns is None else min(b, self.stop_ns)
        if hi <= lo or self.rate == 0:
            return np.zeros(0, dtype=np.uint64)
        n = int(self._rng.poisson(float(self.rate) * (hi - lo) / NSEC_PER_SEC))
        ts = self._rng.integers(lo + 1, hi + 1, n, dtype=np.int64)
        ts.sort()
        return ts.astype(np.uint64)

    def arrivals(self, t_from_ns: int, t_to_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """Frames reaching the wire in (t_from_ns, t_to_ns]: (ts uint64[n] sorted, flow int64[n])."""
        a, b = int(t_from_ns), int(t_to_ns)
        if b <= a or self.rate == 0:
            ts = np.zeros(0, dtype=np.uint64)
        elif self.pattern == "poisson":
            ts = self._poisson(a, b)
        else:
            ts = self._deterministic(a, b)
        n = ts.shape[0]
        nflows = len(self.flows)
        if self.p is not None:
            flow = self._rng_flow.choice(nflows, size=n, p=self.p).astype(np.int64)
        else:
            flow = self._rng_flow.integers(0, nflows, n, dtype=np.int64)
        return ts, flow

    # -- frames -----------------------------------------------------------------------

    def make_batch(self, ts: np.ndarray, flow_idx: np.ndarray, seq0,
                   keep: np.ndarray | None = None) -> np.ndarray:
        """SKB records for frames in sending order, as the NIC sees them after RSS.

        seq0 is the first sequence number (consecutive after it) or one per frame. With
        ``keep`` only the kept frames are built. Advances the flows' sender state (IPv4 id,
        TCP seq) for every frame: call once per arrival batch, in time order.
        """
        return build(self.flows, flow_idx, ts, seq0, keep, flow_hash=self.flow_hash,
                     flow_l4=self.flow_l4, flow_queue=self.flow_queue, src_index=self.index)
