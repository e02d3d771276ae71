"""The one way this project compiles a kernel: ``@kernel`` (numba njit, cached, GIL released).

numba's on-disk cache is checked against the source file of the decorated function only.
A kernel that reads a constant from another module (a counter slot, a ring header word) or
calls a kernel of another module keeps the compiled old value after that other file
changes, silently. So every kernel of this project shares one cache directory named after
a digest of all the project's sources (and the numba and Python versions): any change to
any of them starts a new, empty cache.

The directory is ``$EMU_NUMBA_CACHE`` if set, else ``$XDG_CACHE_HOME/emu/numba`` (default
``~/.cache/emu/numba``), then the digest. Compiling from scratch takes a few seconds once;
each process then loads the cache in about half a second.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numba
from numba import njit

_ROOT = Path(__file__).resolve().parent.parent
_PACKAGES = ("emu", "cpus", "nic")


def source_digest() -> str:
    h = hashlib.sha256()
    h.update(f"{numba.__version__} {sys.version_info[:3]}".encode())
    for pkg in _PACKAGES:
        for f in sorted((_ROOT / pkg).glob("*.py")):
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    base = os.environ.get("EMU_NUMBA_CACHE")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "emu", "numba")
    return Path(base) / source_digest()


CACHE_DIR = cache_dir()
# Read by numba when a cached function is decorated (not only at import), so setting it
# here works whoever imported numba first.
numba.config.CACHE_DIR = str(CACHE_DIR)


def kernel(fn):
    """numba.njit(cache=True, nogil=True) with the project's versioned cache."""
    return njit(cache=True, nogil=True)(fn)
