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
