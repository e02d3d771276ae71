"""Cross-process locks that live inside the run's shared-memory segment.

Each lock is a glibc pthread mutex, process-shared and robust, in a 64-byte slot of the
segment. A multiprocessing.Lock is a named POSIX semaphore (/dev/shm/sem.mp-*) that only
the creating process's resource tracker removes, so killing the orchestrator and its
tracker left them behind; a mutex inside the segment goes with the segment. Robust: if a
process dies holding one, the next locker gets EOWNERDEAD, marks it consistent and goes on
(the run is failing anyway, but nobody hangs on a dead holder).

acquire() spins a few times with trylock before it blocks, as a kernel spinlock would: the
holders (socket enqueue, rmem release, backlog enqueue) keep it for microseconds, and
blocking at once costs a futex sleep and wake-up. A lock that counts (StatLock) records
acquisitions, contended acquisitions and the real time waited, in a counter block.
"""

from __future__ import annotations

import ctypes
import errno
import time

import numpy as np

LOCK_BYTES = 64               # one cache line per lock; pthread_mutex_t is 40 (x86_64) or 48
PTHREAD_PROCESS_SHARED = 1
PTHREAD_MUTEX_ROBUST = 1
SPIN_TRIES = 64               # trylock attempts before a contended lock blocks

_libc = ctypes.CDLL(None, use_errno=True)


def _fn(name: str, *argtypes):
    f = getattr(_libc, name)
    f.argtypes = list(argtypes)
    f.restype = ctypes.c_int
    return f


_vp = ctypes.c_void_p
_attr_init = _fn("pthread_mutexattr_init", _vp)
_attr_pshared = _fn("pthread_mutexattr_setpshared", _vp, ctypes.c_int)
_attr_robust = _fn("pthread_mutexattr_setrobust", _vp, ctypes.c_int)
_attr_destroy = _fn("pthread_mutexattr_destroy", _vp)
_init = _fn("pthread_mutex_init", _vp, _vp)
_lock = _fn("pthread_mutex_lock", _vp)
_trylock = _fn("pthread_mutex_trylock", _vp)
_unlock = _fn("pthread_mutex_unlock", _vp)
_consistent = _fn("pthread_mutex_consistent", _vp)


def address(buf, offset: int) -> int:
    """The address of byte `offset` of a buffer (a memoryview of the mapped segment)."""
    return np.frombuffer(buf, dtype=np.uint8, count=1, offset=offset).ctypes.data


def init_lock(buf, offset: int) -> None:
    """Owner only, before any other process maps the segment: a fresh mutex at offset."""
    attr = ctypes.create_string_buffer(64)
    for rc in (_attr_init(attr), _attr_pshared(attr, PTHREAD_PROCESS_SHARED),
               _attr_robust(attr, PTHREAD_MUTEX_ROBUST), _init(address(buf, offset), attr)):
        if rc:
            raise OSError(rc, f"pthread mutex init: {errno.errorcode.get(rc, rc)}")
    _attr_destroy(attr)


class ShmLock:
    """A robust, process-shared mutex in the segment; acquire() spins, then blocks."""

    __slots__ = ("addr",)

    def __init__(self, buf, offset: int):
        self.addr = address(buf, offset)

    def acquire(self, blocking: bool = True) -> bool:
        addr = self.addr
        for _ in range(SPIN_TRIES if blocking else 1):
            rc = _trylock(addr)
            if rc == 0:
                return True
            if rc == errno.EOWNERDEAD:
                _consistent(addr)
                return True
        if not blocking:
            return False
        rc = _lock(addr)
        if rc == errno.EOWNERDEAD:
            _consistent(addr)
        elif rc:
            raise OSError(rc, f"pthread_mutex_lock: {errno.errorcode.get(rc, rc)}")
        return True

    def release(self) -> None:
        _unlock(self.addr)

    def locked(self) -> bool:
        """Whether some process holds it now (a try and an immediate release)."""
        if self.acquire(False):
            self.release()
            return False
        return True


class StatLock(ShmLock):
    """A lock that counts acquisitions, contended ones and the real time waited.

    The counter slots are indexes into ``counters`` (one process's counter block)."""

    __slots__ = ("counters", "i_acq", "i_cont", "i_wait")

    def __init__(self, buf, offset: int, counters: np.ndarray, i_acq: int, i_cont: int,
                 i_wait: int):
        super().__init__(buf, offset)
        self.counters = counters
        self.i_acq, self.i_cont, self.i_wait = i_acq, i_cont, i_wait

    def acquire(self, blocking: bool = True) -> bool:
        c = self.counters
        c[self.i_acq] += 1
        if ShmLock.acquire(self, False):
            return True
        c[self.i_cont] += 1
        t = time.monotonic_ns()
        ShmLock.acquire(self, True)
        c[self.i_wait] += time.monotonic_ns() - t
        return True
