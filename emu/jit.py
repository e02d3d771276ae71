"""The one way this project compiles a kernel: ``@kernel`` (numba njit, cached, GIL released).

Every kernel caches into emu.kcache.cache_dir() (a directory per digest of all the sources;
see emu/kcache.py for why) and is listed in REGISTRY. WARMERS names the functions that call
every kernel once with the argument types a run uses: a process that runs them before
traffic never compiles (or even loads) a kernel inside traffic, and ``python -m emu.jit``
(the worker emu.kcache.ensure_compiled starts) runs them all to fill the cache, printing one
JSON line per kernel compiled: {"done": k, "total": n, "name": ...}.
"""

from __future__ import annotations

import importlib
import json
import sys

import numba
from numba import njit

from .kcache import cache_dir

CACHE_DIR = cache_dir()
# Read by numba when a cached function is decorated (not only at import), so setting it
# here works whoever imported numba first.
numba.config.CACHE_DIR = str(CACHE_DIR)

REGISTRY: list = []

# (module, function): each calls its package's kernels with a run's argument types.
WARMERS = (("emu.atomic", "warm"), ("emu.futexc", "warm"), ("emu.inet", "warm"),
           ("emu.ringcopy", "warm"), ("emu.timesync", "warm"), ("emu.syncwait", "warm"),
           ("emu.coalesce", "warm"),
           ("cpus.rps", "warm"), ("cpus.driver", "warm"), ("cpus.ip", "warm"),
           ("cpus.gro", "warm"), ("cpus.sock", "warm"), ("nic.dma", "warm_default"))


def kernel(fn):
    """numba.njit(cache=True, nogil=True) with the project's versioned cache, registered."""
    d = njit(cache=True, nogil=True)(fn)
    REGISTRY.append(d)
    return d


def name_of(d) -> str:
    return f"{d.py_func.__module__}.{d.py_func.__qualname__}"


def warm_all() -> None:
    """Compile (or load) every kernel with the argument types a run uses."""
    for module, fn in WARMERS:
        getattr(importlib.import_module(module), fn)()


# Modules whose import does something: the fork server's preload (leaves the session and
# loads every kernel) and the command line's entry point.
_SIDE_EFFECTS = ("emu.preload",)


def import_all() -> None:
    """Import every module of the project, so REGISTRY lists every kernel there is."""
    import pkgutil
    for pkg in ("emu", "cpus", "nic"):
        mod = importlib.import_module(pkg)
        for info in pkgutil.iter_modules(mod.__path__, pkg + "."):
            if info.name not in _SIDE_EFFECTS and not info.name.endswith("__main__"):
                importlib.import_module(info.name)


def _compile_with_progress(out) -> int:
    from numba.core import event
    import_all()
    total = len(REGISTRY)
    mine = {id(d) for d in REGISTRY}
    done: set[int] = set()

    class Listener(event.Listener):
        def on_start(self, ev):
            pass

        def on_end(self, ev):
            d = ev.data.get("dispatcher") if isinstance(ev.data, dict) else None
            if d is not None and id(d) in mine and id(d) not in done:
                done.add(id(d))
                out.write(json.dumps({"done": len(done), "total": total,
                                      "name": name_of(d)}) + "\n")
                out.flush()

    with event.install_listener("numba:compile", Listener()):
        warm_all()
    missing = [name_of(d) for d in REGISTRY if not d.signatures]
    if missing:
        print(f"emu.jit: warm() left kernels uncompiled: {', '.join(missing)}", file=sys.stderr)
        return 1
    out.write(json.dumps({"done": total, "total": total, "name": ""}) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    # Run as a script, this file is __main__; the kernels register in the module emu.jit.
    from emu import jit as _jit
    sys.exit(_jit._compile_with_progress(sys.stdout))
