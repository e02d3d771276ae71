"""Static interrupt coalescing: rx-usecs timer, rx-frames threshold, masking."""

import pytest

from nic.coalesce import Coalescer

US = 1000


def test_nothing_pending_never_fires():
    c = Coalescer(16, 32)
    assert not c.update(0, 0, False)
    assert not c.update(10**9, 0, False)
    assert c.next_deadline() is None


def test_usecs_timer_from_first_pending():
    c = Coalescer(16, 0)
    assert not c.update(1000, 1, False)
    assert c.next_deadline() == 1000 + 16 * US
    assert not c.update(1000 + 16 * US - 1, 5, False)
    assert c.update(1000 + 16 * US, 5, False)
    assert c.next_deadline() is None


def test_frames_threshold():
    c = Coalescer(0, 4)
    assert c.next_deadline() is None
    assert not c.update(0, 1, False)
    assert c.next_deadline() is None  # no timer with rx_usecs 0
    assert not c.update(10**9, 3, False)
    assert c.update(10**9 + 1, 4, False)


def test_whichever_comes_first():
    c = Coalescer(16, 32)
    assert not c.update(0, 1, False)
    assert c.update(1 * US, 32, False)          # frames first
    assert not c.update(2 * US, 1, False)       # timer restarted by the new pending frame
    assert c.next_deadline() == 18 * US
    assert c.update(18 * US, 2, False)          # then the timer


def test_no_coalescing_fires_on_every_frame():
    c = Coalescer(0, 1)
    assert c.update(5, 1, False)
    assert c.update(6, 1, False)
    assert not c.update(7, 0, False)


def test_masked_never_fires_and_timer_restarts_after_unmask():
    c = Coalescer(16, 4)
    assert not c.update(0, 1, False)
    assert not c.update(20 * US, 100, True)     # NAPI owns the queue
    assert c.next_deadline() is None
    assert not c.update(30 * US, 2, False)      # unmasked: the timer starts again here
    assert c.next_deadline() == 46 * US
    assert not c.update(45 * US, 3, False)
    assert c.update(46 * US, 3, False)


def test_consumed_frames_stop_the_timer():
    c = Coalescer(16, 0)
    c.update(0, 2, False)
    assert not c.update(5 * US, 0, False)
    assert c.next_deadline() is None
    assert not c.update(17 * US, 1, False)
    assert c.next_deadline() == 33 * US


def test_both_zero_is_illegal():
    with pytest.raises(ValueError):
        Coalescer(0, 0)
    with pytest.raises(ValueError):
        Coalescer(-1, 4)
