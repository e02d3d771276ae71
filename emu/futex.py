"""Linux futex wait/wake on a 32-bit word of a numpy array, shared between processes.

A process that has nothing to do until a peer publishes a new value in shared memory blocks
in the kernel with ``futex_wait(arr, i, seen)``; the peer stores the new value and calls
``futex_wake(arr, i)``, which wakes exactly the processes waiting on that word. The kernel
compares the word with ``seen`` under its own lock, so a store + wake that happens between
the waiter's read and its sleep is never lost: the wait returns at once instead.

The word is ``arr``'s data pointer + 4*index: ``arr`` must be a C-contiguous, aligned,
native uint32 array (a view of a MAP_SHARED mapping of a /dev/shm file, or private memory,
which then works between threads only). The operations are FUTEX_WAIT and FUTEX_WAKE
WITHOUT FUTEX_PRIVATE_FLAG: the kernel keys the wait queue on the page's inode and offset,
which is what lets two processes that map the same file at different addresses meet.

Every wake-up can be spurious (a wake aimed at an earlier value, a signal): callers loop,
re-reading the word, until it differs from what they saw or their deadline passes.

Cost of one call from Python with nothing to wait for (2-core x86_64 VM, Python 3.11; best
batch, scripts/sync_bench.py): ``futex_wake`` with no waiter 2.0 us; ``futex_wait`` whose
word has already changed (the kernel answers EAGAIN) 2.4 us, 3.4 us with a timeout. Most of
it is the ctypes call itself (~1.5 us): the prototypes pass only the arguments each operation
reads (every extra ctypes argument costs ~0.15 us; the kernel ignores the rest), and the
word's address is cached per array (``arr.ctypes.data`` alone costs ~1.5 us). ``wake_at`` /
``wait_at`` on an address taken once with ``word_address`` save ~0.3 us more.

The compiled versions are cheaper from Python too: ``wake_word`` 0.84 us, ``wait_word``
0.98 us, and ``wait_change`` 0.35 us when the word has changed (no system call). The gap
widens when the caller has just been woken with cold caches: passing a token round 5
processes on 2 cores costs ~33 us of CPU per hop through futex_wait/futex_wake, ~13 us
through publish/wait_change, ~10 us with an eventfd. So a hot path posts with ``publish``
(store + wake, one call) and waits with ``wait_change`` (check + sleep, one call).

``wait_word``, ``wake_word``, ``wait_change`` and ``publish`` are numba functions, callable
from ``@njit`` code (``addr`` is ``arr.ctypes.data + 4 * i`` there) and from Python. They
call libc's ``syscall`` and ``__errno_location`` by symbol name rather than through a ctypes
function pointer, so they carry no process-specific address and can be cached on disk (numba
does not cache a function that calls a ctypes pointer). They are ``emu.jit.kernel``s,
warmed by ``warm()`` here (listed in emu.jit.WARMERS).
"""

from __future__ import annotations

import ctypes
import errno
import platform
import sys
import time
import weakref

import numpy as np

_SYSCALL_NUMBERS = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98}
_machine = platform.machine().lower()
if not sys.platform.startswith("linux") or _machine not in _SYSCALL_NUMBERS:
    raise ImportError(f"emu.futex: futex(2) is supported on Linux x86_64 and aarch64 only, "
                      f"not {sys.platform} {platform.machine()}")
SYS_FUTEX = _SYSCALL_NUMBERS[_machine]
FUTEX_WAIT = 0
FUTEX_WAKE = 1
NO_TIMEOUT = -1          # timeout_ns of wait_word that waits for ever

_U32 = np.dtype(np.uint32)
_NS = 1_000_000_000
_EAGAIN, _EINTR, _ETIMEDOUT = errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT

_libc = ctypes.CDLL(None, use_errno=True)
_L = ctypes.c_long
# Prototypes of our own (not libc.syscall's shared attributes, which another module may set).
_sys_wake = ctypes.CFUNCTYPE(_L, _L, _L, _L, _L, use_errno=True)(("syscall", _libc))
_sys_wait = ctypes.CFUNCTYPE(_L, _L, _L, _L, _L, _L, use_errno=True)(("syscall", _libc))


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


# id(arr) -> (weakref to arr, data address, words). The weak reference keeps no mapping
# alive (SharedMemory.close() refuses while a view exists) and tells a reused id apart.
_bases: dict[int, tuple[weakref.ref, int, int]] = {}


def _register(arr) -> tuple[weakref.ref, int, int]:
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"futex word must be in a numpy array, not {type(arr).__name__}")
    if arr.dtype != _U32:
        raise ValueError(f"futex array must be native uint32, not {arr.dtype}")
    if not arr.flags.c_contiguous:
        raise ValueError("futex array must be C-contiguous")
    addr = arr.ctypes.data
    if addr % 4:
        raise ValueError("futex array must be 4-byte aligned")
    key = id(arr)
    entry = (weakref.ref(arr, lambda _r: _bases.pop(key, None)), addr, arr.size)
    _bases[key] = entry
    return entry


def word_address(arr: np.ndarray, index: int) -> int:
    """The address of word ``index`` (flat, C order) of ``arr``, checked."""
    e = _bases.get(id(arr))
    if e is None or e[0]() is not arr:
        e = _register(arr)
    if not 0 <= index < e[2]:
        raise IndexError(f"futex word {index} out of range for {e[2]} words")
    return e[1] + 4 * index


def wait_at(addr: int, expected: int, timeout_ns: int | None = None) -> bool:
    """futex_wait on the word at ``addr`` (see futex_wait)."""
    if timeout_ns is None:
        while True:
            if _sys_wait(SYS_FUTEX, addr, FUTEX_WAIT, expected, 0) == 0:
                return True
            err = ctypes.get_errno()
            if err == _EAGAIN:
                return True
            if err != _EINTR:            # after EINTR Python has run the signal handlers
                _fail("wait", err)
    deadline = time.monotonic_ns() + timeout_ns
    ts = _Timespec()
    ts_addr = ctypes.addressof(ts)
    left = max(0, timeout_ns)
    while True:
        ts.tv_sec, ts.tv_nsec = divmod(left, _NS)
        if _sys_wait(SYS_FUTEX, addr, FUTEX_WAIT, expected, ts_addr) == 0:
            return True
        err = ctypes.get_errno()
        if err == _EAGAIN:
            return True
        if err == _ETIMEDOUT:
            return False
        if err != _EINTR:
            _fail("wait", err)
        left = deadline - time.monotonic_ns()
        if left <= 0:
            return False


def wake_at(addr: int, n: int = 1) -> int:
    """futex_wake on the word at ``addr`` (see futex_wake)."""
    r = _sys_wake(SYS_FUTEX, addr, FUTEX_WAKE, n)
    if r < 0:
        _fail("wake", ctypes.get_errno())
    return r


def _fail(op: str, err: int):
    raise OSError(err, f"futex {op}: {errno.errorcode.get(err, err)}")


def futex_wait(arr: np.ndarray, index: int, expected: int, timeout_ns: int | None = None) -> bool:
    """Sleep while ``arr[index] == expected``, until woken or ``timeout_ns`` has passed.

    True when woken (perhaps spuriously) or when the word no longer equals ``expected``
    (then at once); False on timeout. A signal does not end the wait early: the handler runs
    and the wait goes on for the time that is left.
    """
    return wait_at(word_address(arr, index), expected, timeout_ns)


def futex_wake(arr: np.ndarray, index: int, n: int = 1) -> int:
    """Wake up to ``n`` processes waiting on ``arr[index]``; the number woken."""
    r = _sys_wake(SYS_FUTEX, word_address(arr, index), FUTEX_WAKE, n)
    if r < 0:
        _fail("wake", ctypes.get_errno())
    return r


# The compiled versions (wait_word, wake_word, wait_change, publish) are in emu.futexc,
# loaded on first use: importing the compiler costs a third of a second, which the
# orchestrator (it only wakes agents, rarely) does not pay.
_COMPILED = ("wait_word", "wake_word", "wait_change", "publish", "_warm_from_njit", "warm")


def __getattr__(name: str):
    if name in _COMPILED:
        from . import futexc
        return getattr(futexc, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
