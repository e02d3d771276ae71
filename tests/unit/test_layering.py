"""The layers keep their arrows pointing one way, checked over transitive imports.

Core modules (the kernel logic, the NIC model, the contracts and renderers) are every module
of emu/, cpus/ and nic/ except the shells named in SHELLS: a new module is core, and checked,
unless it is added there. A core module may not reach, through any chain of imports (also
inside functions), the OS, real time, processes or sockets, nor a shell module. emu.jit (the
compiler decorator) is a leaf: what it loads to place its cache is not the core's business.

And emu/ does not import cpus/ or nic/, but for the child entry points the orchestrator
starts (by module name: emu.child, emu.preload, emu.jit's warmers).
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("emu", "cpus", "nic")

# The process shells and the tools around them: they bind the core to the OS.
SHELLS = {
    "emu.__main__", "emu.cli", "emu.run", "emu.cluster", "emu.child", "emu.preload",
    "emu.lifecycle", "emu.rundir", "emu.shm", "emu.shmlock", "emu.kcache", "emu.jit",
    "emu.futex", "emu.futexc", "emu.syncwait", "emu.inproc", "cpus.process", "cpus.host",
    "nic.process",
}
LEAVES = {"emu.jit"}
FORBIDDEN_EXTERNAL = {"zmq", "multiprocessing", "time", "os", "threading", "socket", "signal",
                      "subprocess", "psutil", "setproctitle", "fcntl", "mmap", "ctypes",
                      "tempfile", "shutil"}
FORBIDDEN_INTERNAL = {"emu.shm", "emu.shmlock", "emu.child", "emu.cluster", "emu.run",
                      "emu.cli", "emu.rundir", "emu.lifecycle", "emu.preload", "emu.kcache",
                      "cpus.process", "cpus.host", "nic.process"}


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).glob("*.py")):
            name = pkg if f.stem == "__init__" else f"{pkg}.{f.stem}"
            out[name] = f
    return out


MODULES = _modules()
CORE = sorted(m for m in MODULES if m not in SHELLS)


def _imports(name: str) -> set[str]:
    """Every module name an import statement of this module names (absolute)."""
    path = MODULES[name]
    pkg = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            for a in node.names:                   # "from . import x" names a module
                if f"{mod}.{a.name}" in MODULES:
                    out.add(f"{mod}.{a.name}")
    return out


def _closure(name: str) -> tuple[set[str], set[str], dict[str, str]]:
    """(internal modules reached, external top-level names reached, who imported each)."""
    seen, external, via = set(), set(), {}
    todo = [name]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        if m in LEAVES and m != name:
            continue
        for imp in _imports(m):
            top = imp.split(".")[0]
            if top in PACKAGES:
                target = imp if imp in MODULES else top
                via.setdefault(target, m)
                todo.append(target)
            elif top and top != "__future__":
                external.add(top)
                via.setdefault(top, m)
    return seen, external, via


def test_every_module_is_classified():
    assert SHELLS <= set(MODULES), sorted(SHELLS - set(MODULES))
    assert len(CORE) > 25


@pytest.mark.parametrize("name", CORE)
def test_core_module_reaches_no_os_and_no_shell(name):
    internal, external, via = _closure(name)
    bad = sorted((external & FORBIDDEN_EXTERNAL) | (internal & FORBIDDEN_INTERNAL))
    assert not bad, (f"{name} reaches {bad} (through " +
                     ", ".join(f"{b} <- {via.get(b, '?')}" for b in bad) + "): kernel logic "
                     "takes a clock and plain data; the shells bind it to the OS")


ENTRY_POINTS = {"emu.preload": {"cpus.process", "nic.process"}}


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m.startswith("emu")))
def test_emu_imports_nothing_of_cpus_or_nic(name):
    imported = {i for i in _imports(name) if i.split(".")[0] in ("cpus", "nic")}
    assert imported <= ENTRY_POINTS.get(name, set()), f"{name} imports {sorted(imported)}"
