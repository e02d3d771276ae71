"""Unit tests run twice in CI: compiled, and once more with NUMBA_DISABLE_JIT=1, where every
kernel is the plain Python it is written in. Tests about compilation itself (the cache, the
warmers, a lock-free atomic) are marked `compiled` and skipped in the second run."""

import numba
import pytest


def pytest_collection_modifyitems(config, items):
    if not numba.config.DISABLE_JIT:
        return
    skip = pytest.mark.skip(reason="about compiled code; NUMBA_DISABLE_JIT=1 runs kernels as Python")
    for item in items:
        if "compiled" in item.keywords:
            item.add_marker(skip)
