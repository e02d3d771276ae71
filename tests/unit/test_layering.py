"""The kernel-logic modules stay pure: no zmq, no shared memory, no time, no processes."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CORE = [
    "cpus/napi.py", "cpus/softnet.py", "cpus/softirq.py", "cpus/netrx.py", "cpus/sched.py",
    "cpus/backlog.py", "cpus/kernel.py", "cpus/rps.py", "cpus/flow_limit.py", "cpus/gro.py",
    "cpus/ip.py", "cpus/sock.py",
    "nic/rss.py", "nic/frames.py", "nic/traffic.py", "nic/coalesce.py", "emu/affinity.py",
    "emu/clock.py", "emu/ring.py", "emu/skb.py", "emu/counters.py", "emu/config.py",
    "emu/cpumask.py", "emu/procfs.py", "emu/report.py",
]
FORBIDDEN = {"zmq", "time", "multiprocessing", "threading", "socket", "signal", "subprocess"}


def imported(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
            if node.module == "multiprocessing":
                names.add("multiprocessing")
    return names


@pytest.mark.parametrize("rel", CORE)
def test_core_module_is_pure(rel):
    bad = imported(ROOT / rel) & FORBIDDEN
    assert not bad, f"{rel} imports {sorted(bad)}: kernel logic must take a Clock and plain data"
