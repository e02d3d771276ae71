"""emu.atomic.fetch_add: one atomic increment, also against another process adding at once."""

import multiprocessing as mp
import secrets
from multiprocessing import shared_memory

import numpy as np
import pytest

from emu.atomic import fetch_add

N = 200_000


def test_returns_the_old_value_and_adds():
    a = np.zeros(4, dtype=np.uint64)
    assert fetch_add(a, 2) == 0
    assert fetch_add(a, 2, 5) == 1
    assert a.tolist() == [0, 0, 6, 0]


def test_wraps_like_a_u64():
    a = np.array([2**64 - 1], dtype=np.uint64)
    assert fetch_add(a, 0) == 2**64 - 1
    assert a[0] == 0


def test_index_out_of_range_is_refused():
    with pytest.raises(IndexError):
        fetch_add(np.zeros(2, dtype=np.uint64), 2)


@pytest.mark.compiled
def test_only_u64_words():
    with pytest.raises(Exception):
        fetch_add(np.zeros(2, dtype=np.int32), 0)


def _adder(name: str, n: int) -> None:
    from emu.atomic import _fetch_add
    shm = shared_memory.SharedMemory(name=name)
    try:
        a = np.ndarray((1,), dtype=np.uint64, buffer=shm.buf)
        one = np.uint64(1)
        for _ in range(n):
            _fetch_add(a, 0, one)
        del a
    finally:
        shm.close()


@pytest.mark.timeout(120)
@pytest.mark.compiled
def test_two_processes_and_this_one_lose_no_increment():
    name = f"emutest-atomic-{secrets.token_hex(4)}"
    shm = shared_memory.SharedMemory(name=name, create=True, size=8)
    procs = []
    try:
        a = np.ndarray((1,), dtype=np.uint64, buffer=shm.buf)
        a[0] = 0
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_adder, args=(name, N)) for _ in range(2)]
        for p in procs:
            p.start()
        for _ in range(N):
            fetch_add(a, 0)
        for p in procs:
            p.join(100)
        assert all(p.exitcode == 0 for p in procs)
        assert int(a[0]) == 3 * N
        del a
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
        shm.close()
        shm.unlink()
