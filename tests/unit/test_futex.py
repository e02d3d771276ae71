"""emu.futex: wait/wake on a shared uint32 word, in one process and across two.

No timing assertion beyond "it returned" and "a timeout never fires early": the machine is
shared and noisy.
"""

import mmap
import multiprocessing as mp
import os
import secrets
import signal
import threading
import time
from multiprocessing import shared_memory

import numpy as np
import pytest

from emu import futex
from emu.futex import futex_wait, futex_wake

MS = 1_000_000


def private_words(n=16):
    return np.frombuffer(bytearray(4 * n), dtype=np.uint32)


@pytest.mark.timeout(60)
def test_wake_with_no_waiter_wakes_nobody():
    assert futex_wake(private_words(), 3) == 0
    assert futex_wake(private_words(), 0, n=2**31 - 1) == 0


@pytest.mark.timeout(60)
def test_wait_returns_at_once_when_the_word_differs():
    w = private_words()
    w[5] = 7
    t0 = time.monotonic()
    assert futex_wait(w, 5, 6) is True                      # no timeout: would hang if it slept
    assert futex_wait(w, 5, np.uint32(8), timeout_ns=10_000 * MS) is True
    assert time.monotonic() - t0 < 5


@pytest.mark.timeout(60)
def test_wait_times_out():
    w = private_words()
    t0 = time.monotonic()
    assert futex_wait(w, 2, 0, timeout_ns=50 * MS) is False
    assert 0.045 <= time.monotonic() - t0 < 30
    assert futex_wait(w, 2, 0, timeout_ns=0) is False


@pytest.mark.timeout(60)
def test_a_signal_does_not_cut_a_timed_wait_short():
    hits = []
    old = signal.signal(signal.SIGUSR1, lambda *_: hits.append(1))
    main = threading.get_ident()
    timer = threading.Timer(0.05, signal.pthread_kill, (main, signal.SIGUSR1))
    try:
        timer.start()
        t0 = time.monotonic()
        assert futex_wait(private_words(), 0, 0, timeout_ns=300 * MS) is False
        assert time.monotonic() - t0 >= 0.29
        assert hits == [1]
    finally:
        timer.cancel()
        timer.join(5)
        signal.signal(signal.SIGUSR1, old)


def test_only_aligned_contiguous_uint32_words():
    with pytest.raises(ValueError):
        futex_wake(np.zeros(4, dtype=np.int32), 0)
    with pytest.raises(ValueError):
        futex_wake(np.zeros((4, 4), dtype=np.uint32)[:, 0], 0)
    with pytest.raises(ValueError):
        futex_wake([0, 0], 0)
    with pytest.raises(ValueError):
        futex_wait(np.frombuffer(bytearray(9), dtype=np.uint32, count=2, offset=1), 0, 0, 0)
    with pytest.raises(IndexError):
        futex_wake(private_words(4), 4)


def test_a_kernel_error_is_raised():
    with pytest.raises(OSError):
        futex.wake_at(2)                     # misaligned: EINVAL
    with pytest.raises(OSError):
        futex.wait_at(4096 * 3 + 4, 0, 0)    # unmapped: EFAULT


def test_the_address_of_a_recycled_array_is_not_reused():
    for _ in range(50):
        w = private_words(2)
        assert futex.word_address(w, 1) == w.ctypes.data + 4
        del w


@pytest.mark.timeout(60)
@pytest.mark.compiled
def test_compiled_versions():
    w = private_words()
    addr = futex.word_address(w, 1)
    assert futex.wake_word(addr, 1) == 0
    assert futex.wait_word(addr, 9, futex.NO_TIMEOUT) == 1  # word is 0: at once
    assert futex.wait_word(addr, 0, 20 * MS) == 0           # timed out
    assert futex.wait_word(2, 0, 0) < 0                       # -EINVAL
    assert futex.publish(addr, 2**32 - 1, 1) == 0
    assert w[1] == 2**32 - 1
    assert futex.wait_change(addr, 5, futex.NO_TIMEOUT) == 2**32 - 1
    assert futex.wait_change(addr, 2**32 - 1, 20 * MS) == 2**32 - 1   # timed out: unchanged
    assert futex._warm_from_njit(w) == 1                     # callable from @njit code


# ------------------------------------------------------------------------------------------
# Across processes: the child maps the same /dev/shm file (at another address).

READY, WORD = 0, 8          # word indices, on separate cache lines


def _waiter(name: str, conn) -> None:
    fd = os.open(os.path.join("/dev/shm", name), os.O_RDWR)
    try:
        mm = mmap.mmap(fd, 0)
    finally:
        os.close(fd)
    w = np.frombuffer(mm, dtype=np.uint32, count=16)
    deadline = time.monotonic() + 30
    wakes = 0
    w[READY] = 1
    futex_wake(w, READY)
    while w[WORD] == 0 and time.monotonic() < deadline:
        wakes += futex_wait(w, WORD, 0, timeout_ns=1000 * MS)
    conn.send({"word": int(w[WORD]), "wakes": wakes})
    del w
    mm.close()


@pytest.mark.timeout(60)
def test_another_process_is_woken():
    name = f"emutest-futex-{os.getpid()}-{secrets.token_hex(3)}"
    shm = shared_memory.SharedMemory(name=name, create=True, size=64)
    w = None
    child = None
    try:
        w = np.ndarray((16,), dtype=np.uint32, buffer=shm.buf)
        w[:] = 0
        ctx = mp.get_context("spawn")
        parent_end, child_end = ctx.Pipe()
        child = ctx.Process(target=_waiter, args=(name, child_end), daemon=True)
        child.start()
        child_end.close()
        deadline = time.monotonic() + 40
        while w[READY] == 0 and time.monotonic() < deadline:
            futex_wait(w, READY, 0, timeout_ns=100 * MS)
        assert w[READY] == 1, "the child never started"
        # Wake without publishing until the kernel reports a sleeper on the word: the child,
        # which re-checks, sleeps again. Then publish and wake.
        while futex_wake(w, WORD) == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert time.monotonic() < deadline, "the child never slept on the shared word"
        w[WORD] = 42
        futex_wake(w, WORD)
        assert parent_end.poll(30), "the child did not report back"
        got = parent_end.recv()
        assert got["word"] == 42
        assert got["wakes"] >= 1
        child.join(10)
        assert child.exitcode == 0
    finally:
        if child is not None:
            child.join(5)
            if child.is_alive():
                child.kill()
                child.join(5)
        w = None
        shm.close()
        shm.unlink()


@pytest.mark.timeout(60)
@pytest.mark.compiled
def test_bump_wake_is_atomic_so_no_wake_up_is_undone():
    """Two threads moving the same word on at once: every step counts (a load, add and store
    would lose some, and a waiter that read a newer value could sleep through a wake-up)."""
    from emu.futexc import bump_wake
    w = private_words(1)
    addr = futex.word_address(w, 0)
    n = 20_000

    def bump():
        for _ in range(n):
            bump_wake(addr, 1)

    threads = [threading.Thread(target=bump) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert int(w[0]) == 2 * n
