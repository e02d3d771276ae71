"""emu.coalesce.irq_time: when an armed RX vector fires (rx-usecs / rx-frames), and what
it can still be while the arrivals known so far do not settle it."""

import numpy as np
import pytest

from emu.coalesce import check, irq_time

RING = 512


def ts(*xs):
    return np.array(xs, dtype=np.uint64)


def test_timer_starts_at_the_first_frame_after_arming():
    # armed at 1000, first frame at 5000: rx_usecs 16 -> 21000, rx_frames never reached
    T, lb = irq_time(1000, 0, ts(5000, 6000), 30_000, 16, 32, RING)
    assert (T, lb) == (21_000, 21_000)


def test_a_frame_pending_at_arming_starts_the_timer_at_the_arming():
    T, _ = irq_time(10_000, 0, ts(5000), 40_000, 16, 32, RING)
    assert T == 26_000


def test_frames_before_the_read_time_were_taken_by_the_poll():
    T, _ = irq_time(10_000, 6000, ts(5000, 6000, 20_000), 40_000, 16, 32, RING)
    assert T == 36_000


def test_rx_frames_fires_at_the_nth_pending_frame():
    arr = ts(*range(1000, 33_000, 1000))                 # 32 frames, 1 us apart
    T, _ = irq_time(0, 0, arr, 40_000, 100, 32, RING)
    assert T == 32_000
    T, _ = irq_time(0, 0, arr, 40_000, 100, 4, RING)
    assert T == 4000


def test_rx_usecs_zero_fires_per_frames_only():
    T, _ = irq_time(0, 0, ts(7000, 9000), 20_000, 0, 1, RING)
    assert T == 7000
    T, lb = irq_time(0, 0, ts(7000), 20_000, 0, 2, RING)
    assert T is None and lb == 20_001


def test_not_settled_until_the_arrivals_cover_the_timer():
    # the timer would fire at 21000, but arrivals are only known up to 15000: a frame in
    # (15000, 21000] could still be the 2nd and fire it sooner
    T, lb = irq_time(0, 0, ts(5000), 15_000, 16, 2, RING)
    assert T is None and lb == 15_001
    # once they are known, it is settled either way
    assert irq_time(0, 0, ts(5000), 21_000, 16, 2, RING)[0] == 21_000
    assert irq_time(0, 0, ts(5000, 18_000), 30_000, 16, 2, RING)[0] == 18_000


def test_no_frame_yet_gives_a_lower_bound_past_what_is_known():
    T, lb = irq_time(3000, 0, ts(), 2000, 16, 32, RING)
    assert T is None and lb == 3000
    T, lb = irq_time(3000, 0, ts(), 9000, 16, 32, RING)
    assert T is None and lb == 9001


def test_only_frames_that_find_a_descriptor_are_pending():
    # a 4-descriptor ring: the 5th frame is dropped and cannot complete rx_frames=5
    arr = ts(1000, 2000, 3000, 4000, 5000)
    T, _ = irq_time(0, 0, arr, 100_000, 50, 5, 4)
    assert T == 51_000


@pytest.mark.parametrize("seed", range(20))
def test_matches_a_step_by_step_reference(seed):
    """Against the state machine ticked every ns (small times)."""
    rng = np.random.default_rng(seed)
    arr = np.sort(rng.integers(1, 400, int(rng.integers(0, 12)))).astype(np.uint64)
    armed, read = int(rng.integers(0, 200)), int(rng.integers(0, 100))
    usecs, frames = int(rng.integers(0, 3)), int(rng.integers(0, 5))
    if usecs == 0 and frames == 0:
        frames = 1
    ring = int(rng.integers(1, 8))

    def ref():
        pend = [int(t) for t in arr if t > read][:ring]
        start = None
        for t in range(armed, 10_000):
            n = sum(1 for a in pend if a <= t)
            if n and start is None:
                start = t
            if (frames and n >= frames) or (usecs and start is not None
                                            and t - start >= usecs * 1000):
                return t
        return None
    want = ref()
    T, lb = irq_time(armed, read, arr, 10_000, usecs, frames, ring)
    assert T == want
    if want is not None:
        assert lb == want


def test_check_refuses_what_ethtool_refuses():
    with pytest.raises(ValueError, match="cannot both be 0"):
        check(0, 0)
    with pytest.raises(ValueError):
        check(-1, 4)
