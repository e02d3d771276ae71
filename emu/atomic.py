"""Atomic read-modify-write on a u64 word of a numpy array (shared memory across processes).

Plain numpy ``a[i] += 1`` is a load and a store: two processes doing it at once can lose an
increment. ``fetch_add`` compiles to one ``lock xadd`` (LLVM ``atomicrmw add``, sequentially
consistent), so every increment lands whoever else is adding, in the way the kernel's
atomic_long_add_return() does.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .jit import kernel


@intrinsic
def _atomic_add(typingctx, ary, idx, val):
    if not (isinstance(ary, types.Array) and ary.dtype == types.uint64):
        return None
    sig = types.uint64(ary, types.intp, types.uint64)

    def codegen(context, builder, signature, args):
        a, i, v = args
        arrayty = signature.args[0]
        arr = context.make_array(arrayty)(context, builder, a)
        ptr = cgutils.get_item_pointer(context, builder, arrayty, arr, [i])
        return builder.atomic_rmw("add", ptr, v, "seq_cst")

    return sig, codegen


@kernel
def _fetch_add(ary, i, v):
    return _atomic_add(ary, i, v)


def fetch_add(ary: np.ndarray, i: int, v: int = 1) -> int:
    """Atomically add v to ary[i] (a uint64 array); return the value before."""
    if not 0 <= i < ary.shape[0]:
        raise IndexError(f"index {i} out of range for {ary.shape[0]} words")
    if numba.config.DISABLE_JIT:
        # Debugging without compilation only: not atomic. A lost increment can leave one
        # message in a CPU's inbox until its next idle wait (see cpus/process.py).
        old = int(ary[i])
        ary[i] = (old + int(v)) & 0xFFFFFFFFFFFFFFFF
        return old
    return int(_fetch_add(ary, i, np.uint64(v)))


def warm() -> None:
    fetch_add(np.zeros(1, dtype=np.uint64), 0, 0)


# -- for compiled code: sequentially consistent loads, stores and a full fence -------------
# The time-synchronization words (emu.timesync) are read by one process while others write
# them; a plain numpy load in a compiled function may be merged with an earlier one or moved
# by the compiler, so those words are read and written with these.

def _u64_ptr(context, builder, arrayty, a, i):
    arr = context.make_array(arrayty)(context, builder, a)
    return cgutils.get_item_pointer(context, builder, arrayty, arr, [i])


@intrinsic
def load(typingctx, ary, idx):
    """ary[idx] (a uint64 array), an atomic seq_cst load."""
    if not (isinstance(ary, types.Array) and ary.dtype == types.uint64):
        return None
    sig = types.uint64(ary, types.intp)

    def codegen(context, builder, signature, args):
        ptr = _u64_ptr(context, builder, signature.args[0], args[0], args[1])
        return builder.load_atomic(ptr, "seq_cst", 8)

    return sig, codegen


@intrinsic
def store(typingctx, ary, idx, val):
    """ary[idx] = val (a uint64 array), an atomic seq_cst store (a full barrier on x86)."""
    if not (isinstance(ary, types.Array) and ary.dtype == types.uint64):
        return None
    sig = types.none(ary, types.intp, types.uint64)

    def codegen(context, builder, signature, args):
        ptr = _u64_ptr(context, builder, signature.args[0], args[0], args[1])
        builder.store_atomic(args[2], ptr, "seq_cst", 8)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def add(typingctx, ary, idx, val):
    """Atomically add val to ary[idx] (uint64); the value before. For compiled callers."""
    if not (isinstance(ary, types.Array) and ary.dtype == types.uint64):
        return None
    sig = types.uint64(ary, types.intp, types.uint64)

    def codegen(context, builder, signature, args):
        ptr = _u64_ptr(context, builder, signature.args[0], args[0], args[1])
        return builder.atomic_rmw("add", ptr, args[2], "seq_cst")

    return sig, codegen


@intrinsic
def fence(typingctx):
    """A full memory barrier (mfence): no load moves before an earlier store."""
    sig = types.none()

    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return sig, codegen


if numba.config.DISABLE_JIT:
    # Debugging without compilation (one process, or the in-process runner's threads, which
    # hold the GIL): plain numpy reads and writes are all there is to it.
    def load(ary, idx):                      # noqa: F811
        return ary[idx]

    def store(ary, idx, val):                # noqa: F811
        ary[idx] = val

    def add(ary, idx, val):                  # noqa: F811
        old = ary[idx]
        ary[idx] = old + np.uint64(val)
        return old

    def fence():                             # noqa: F811
        return None
