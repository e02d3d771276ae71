"""The compiled versions of emu.futex's wait and wake, callable from @njit code and from
Python (see emu.futex for what they cost and why they exist)."""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .futex import (FUTEX_WAIT, FUTEX_WAKE, NO_TIMEOUT, SYS_FUTEX, _EAGAIN, _EINTR,  # noqa: F401
                    _ETIMEDOUT, _NS, word_address)
from .jit import kernel




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


CLOCK_MONOTONIC = 1


@intrinsic
def _monotonic_ns(typingctx):
    """clock_gettime(CLOCK_MONOTONIC) in ns: the clock of time.monotonic_ns()."""
    sig = types.int64()

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        ts = cgutils.alloca_once(builder, ir.ArrayType(i64, 2))   # struct timespec
        clock_gettime = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.IntType(32), [ir.IntType(32), i64]),
            "clock_gettime")
        builder.call(clock_gettime, [ir.Constant(ir.IntType(32), CLOCK_MONOTONIC),
                                     builder.ptrtoint(ts, i64)])
        sec = builder.load(cgutils.gep_inbounds(builder, ts, 0, 0))
        nsec = builder.load(cgutils.gep_inbounds(builder, ts, 0, 1))
        return builder.add(builder.mul(sec, ir.Constant(i64, _NS)), nsec)

    return sig, codegen


@kernel
def monotonic_ns():
    """time.monotonic_ns(), callable from @njit code."""
    return _monotonic_ns()


@kernel
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


@kernel
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


@intrinsic
def _fetch_add_u32(typingctx, addr, value):
    """Atomically add value to the uint32 at addr (lock xadd); the word before."""
    def codegen(context, builder, signature, args):
        ptr = builder.inttoptr(args[0], ir.IntType(32).as_pointer())
        old = builder.atomic_rmw("add", ptr, builder.trunc(args[1], ir.IntType(32)), "seq_cst")
        return builder.zext(old, ir.IntType(64))

    return types.int64(types.int64, types.int64), codegen


@kernel
def bump_wake(addr, n):
    """Move the word at addr on by one, atomically, then wake up to n waiters: a wake-up
    no other waker's can undo. (A load, add and store could: a waker preempted between
    its load and its store puts back an older value, and a waiter that read the newer one
    sleeps through the wake-up that came in between.) The number woken."""
    _fetch_add_u32(addr, 1)
    return _futex(addr, FUTEX_WAKE, n, NO_TIMEOUT)


@kernel
def load_word(addr):
    """The word at addr (a sequentially consistent load), callable from @njit code."""
    return _load_u32(addr)


@kernel
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


@kernel
def publish(addr, value, n):
    """Store ``value`` in the word at addr, then wake up to ``n`` waiters; the number woken."""
    _store_u32(addr, value)
    return _futex(addr, FUTEX_WAKE, n, NO_TIMEOUT)


@kernel
def _warm_from_njit(arr):
    a = arr.ctypes.data
    return (wake_word(a, 1) + wait_word(a, arr[0] + np.uint32(1), 0)
            + publish(a, arr[0], 1) + wait_change(a, arr[0], 0) - arr[0] + monotonic_ns() * 0
            + bump_wake(a, 1) * 0)


def warm() -> None:
    """Compile (or load) the compiled versions for Python ints and for njit addresses."""
    arr = np.zeros(1, dtype=np.uint32)
    a = word_address(arr, 0)
    wake_word(a, 1)
    wait_word(a, 1, 0)
    publish(a, 0, 1)
    wait_change(a, 1, 0)
    monotonic_ns()
    load_word(a)
    bump_wake(a, 1)
    _warm_from_njit(arr)
