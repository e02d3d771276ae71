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
does not cache a function that calls a ctypes pointer). They are plain ``njit(cache=True,
nogil=True)``, not ``emu.jit.kernel``: every kernel must be warmed by one of
emu.jit.WARMERS, and ``warm()`` here is the function to list there.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import sys
import time
import weakref

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

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


# ------------------------------------------------------------------------------------------
# Compiled versions, for numba @njit code.


@intrinsic
def _futex(typingctx, addr, op, val, timeout_ns):
    """syscall(SYS_futex, addr, op, val, timeout or NULL): the result, or -errno."""
    sig = types.int64(types.int64, types.int64, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        addr, op, val, tmo = args
        i64 = ir.IntType(64)
        zero = ir.Constant(i64, 0)
        ts = cgutils.alloca_once(builder, ir.ArrayType(i64, 2))   # struct timespec
        billion = ir.Constant(i64, _NS)
        builder.store(builder.sdiv(tmo, billion), cgutils.gep_inbounds(builder, ts, 0, 0))
        builder.store(builder.srem(tmo, billion), cgutils.gep_inbounds(builder, ts, 0, 1))
        ts_ptr = builder.select(builder.icmp_signed("<", tmo, zero), zero,
                                builder.ptrtoint(ts, i64))
        syscall = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(i64, [i64], var_arg=True), "syscall")
        r = builder.call(syscall, [ir.Constant(i64, SYS_FUTEX), addr, op, val, ts_ptr])
        errno_location = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.IntType(32).as_pointer(), []), "__errno_location")
        err = builder.sext(builder.load(builder.call(errno_location, [])), i64)
        return builder.select(builder.icmp_signed("<", r, zero), builder.neg(err), r)

    return sig, codegen


@njit(cache=True, nogil=True)
def wait_word(addr, expected, timeout_ns):
    """Compiled futex wait: 1 woken or word changed, 0 timed out, -errno on error.

    ``timeout_ns`` < 0 waits for ever. A signal ends the wait (1, as a spurious wake-up):
    Python's handlers can only run once the compiled code returns.
    """
    r = _futex(addr, FUTEX_WAIT, expected, timeout_ns)
    if r == 0 or r == -_EAGAIN or r == -_EINTR:
        return 1
    if r == -_ETIMEDOUT:
        return 0
    return r


@njit(cache=True, nogil=True)
def wake_word(addr, n):
    """Compiled futex wake: the number of processes woken, or -errno."""
    return _futex(addr, FUTEX_WAKE, n, NO_TIMEOUT)


@intrinsic
def _load_u32(typingctx, addr):
    """The uint32 at addr (an atomic, sequentially consistent load)."""
    def codegen(context, builder, signature, args):
        ptr = builder.inttoptr(args[0], ir.IntType(32).as_pointer())
        return builder.zext(builder.load_atomic(ptr, "seq_cst", 4), ir.IntType(64))

    return types.int64(types.int64), codegen


@intrinsic
def _store_u32(typingctx, addr, value):
    """Store value at addr as a uint32 (atomic, sequentially consistent)."""
    def codegen(context, builder, signature, args):
        ptr = builder.inttoptr(args[0], ir.IntType(32).as_pointer())
        builder.store_atomic(builder.trunc(args[1], ir.IntType(32)), ptr, "seq_cst", 4)
        return context.get_dummy_value()

    return types.none(types.int64, types.int64), codegen


@njit(cache=True, nogil=True)
def wait_change(addr, seen, timeout_ns):
    """The word at addr, after sleeping at most once while it equals ``seen``.

    The waiting side of a published word in one compiled call: a result equal to ``seen``
    means nothing new yet (timed out, a signal, or a spurious wake-up); call again.
    """
    v = _load_u32(addr)
    if v != seen:
        return v
    _futex(addr, FUTEX_WAIT, seen, timeout_ns)
    return _load_u32(addr)


@njit(cache=True, nogil=True)
def publish(addr, value, n):
    """Store ``value`` in the word at addr, then wake up to ``n`` waiters; the number woken."""
    _store_u32(addr, value)
    return _futex(addr, FUTEX_WAKE, n, NO_TIMEOUT)


@njit(cache=True, nogil=True)
def _warm_from_njit(arr):
    a = arr.ctypes.data
    return (wake_word(a, 1) + wait_word(a, arr[0] + np.uint32(1), 0)
            + publish(a, arr[0], 1) + wait_change(a, arr[0], 0) - arr[0])


def warm() -> None:
    """Compile (or load) the compiled versions for Python ints and for njit addresses."""
    arr = np.zeros(1, dtype=np.uint32)
    a = word_address(arr, 0)
    wake_word(a, 1)
    wait_word(a, 1, 0)
    publish(a, 0, 1)
    wait_change(a, 1, 0)
    _warm_from_njit(arr)
