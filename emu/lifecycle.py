"""Cleanup from a manifest: only the pids and segments a run wrote down, never by name.

A pid is signalled only if it still runs one of our titled processes ("emu cpu/N",
"emu nic/eth0"), so a pid the OS has since given to another program is left alone.
"""

from __future__ import annotations

import signal
import time

import psutil

from .shm import unlink_by_name


def _ours(pid: int) -> psutil.Process | None:
    try:
        p = psutil.Process(pid)
        cmd = " ".join(p.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    return p if cmd.startswith("emu ") else None


def clean(manifest: dict, wait: float = 3.0) -> list[str]:
    lines = []
    procs = []
    for role, pid in sorted(manifest.get("pids", {}).items()):
        p = _ours(int(pid))
        if p is None:
            lines.append(f"{role}: pid {pid} is not running")
            continue
        try:
            p.send_signal(signal.SIGTERM)
            procs.append((role, p))
        except psutil.NoSuchProcess:
            lines.append(f"{role}: pid {pid} is not running")
    gone, alive = psutil.wait_procs([p for _, p in procs], timeout=wait)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    if alive:
        psutil.wait_procs(alive, timeout=wait)
    for role, p in procs:
        how = "killed (SIGKILL)" if p in alive else "stopped (SIGTERM)"
        lines.append(f"{role}: pid {p.pid} {how}")
    for name in manifest.get("shm", []):
        if unlink_by_name(name):
            lines.append(f"shared memory /dev/shm/{name} removed")
        else:
            lines.append(f"shared memory /dev/shm/{name} was already gone")
    time.sleep(0)
    return lines
