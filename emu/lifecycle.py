"""`emu clean`: cleanup from a run's manifest, trusting nothing in it.

A manifest is a file anybody can edit, so every name and pid in it is checked before it is
acted on:
- a shared-memory name is removed only if it is exactly the name this project gives a run's
  segment (``emu-<run id>``, the run id 8 hex digits, the manifest's own run id), so no path
  and no other program's segment can be named;
- a pid is signalled only if that process still is the one the run started: its start time
  matches the one recorded in the manifest and its title is the one recorded ("emu cpu/3"),
  so a pid the system has since given to another program is left alone;
- a run whose orchestrator is still alive (checked the same way) is refused: stop it with
  Ctrl-C or SIGTERM and it cleans up after itself.
A malformed manifest (not JSON, not an object, a key missing, a pid that is not a positive
integer ...) is bad input: one line, exit 2, nothing touched.
"""

from __future__ import annotations

import json
import os
import re
import signal

import psutil

from .errors import ConfigError
from .shm import SHM_DIR, unlink_by_name

RUN_ID = re.compile(r"[0-9a-f]{8}")
ROLE = re.compile(r"nic|cpu[0-9]{1,2}")
START_TIME_SLACK = 0.05       # s: /proc's start time has clock-tick (10 ms) resolution


def load(run_dir: str) -> dict:
    """The validated manifest of run_dir, or ConfigError naming what is wrong."""
    if not os.path.exists(run_dir):
        raise ConfigError(f"{run_dir}: no such directory")
    if not os.path.isdir(run_dir):
        raise ConfigError(f"{run_dir}: is a file, not a run directory")
    path = os.path.join(run_dir, "manifest.json")
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except FileNotFoundError:
        raise ConfigError(f"{run_dir}: no manifest.json here; emu clean only removes what a "
                          f"manifest names") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a manifest") from None
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    try:
        m = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not a valid manifest (not JSON: {e})") from None
    return validate(m, path)


def _bad(path: str, what: str) -> ConfigError:
    return ConfigError(f"{path}: not a valid manifest: {what}")


def _proc(entry, where: str, path: str) -> dict:
    if not isinstance(entry, dict):
        raise _bad(path, f"{where} must be an object with pid, create_time and title")
    pid = entry.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 1:
        raise _bad(path, f"{where}.pid must be a process id (an integer > 1), got {pid!r}")
    ct = entry.get("create_time")
    if isinstance(ct, bool) or not isinstance(ct, (int, float)) or ct <= 0:
        raise _bad(path, f"{where}.create_time must be a positive number, got {ct!r}")
    return {"pid": pid, "create_time": float(ct), "title": entry.get("title")}


def validate(m, path: str = "manifest.json") -> dict:
    if not isinstance(m, dict):
        raise _bad(path, f"expected a JSON object, got {type(m).__name__}")
    for key in ("run_id", "orchestrator", "pids", "shm"):
        if key not in m:
            raise _bad(path, f"the key '{key}' is missing")
    rid = m["run_id"]
    if not isinstance(rid, str) or not RUN_ID.fullmatch(rid):
        raise _bad(path, f"run_id must be 8 hex digits, got {rid!r}")
    orch = _proc(m["orchestrator"], "orchestrator", path)
    if not isinstance(m["pids"], dict):
        raise _bad(path, "pids must be an object of role -> process")
    pids = {}
    for role, entry in m["pids"].items():
        if not isinstance(role, str) or not ROLE.fullmatch(role):
            raise _bad(path, f"pids has an unknown role {role!r} (nic, cpu0, cpu1 ...)")
        p = _proc(entry, f"pids.{role}", path)
        want = "emu nic/eth0" if role == "nic" else f"emu cpu/{role[3:]}"
        if p["title"] != want:
            raise _bad(path, f"pids.{role}.title must be {want!r}, got {p['title']!r}")
        pids[role] = p
    if not isinstance(m["shm"], list):
        raise _bad(path, "shm must be a list of segment names")
    for name in m["shm"]:
        if name != f"emu-{rid}":
            raise _bad(path, f"shm names {name!r}: a run's only segment is 'emu-{rid}'")
    return {"run_id": rid, "orchestrator": orch, "pids": pids, "shm": list(m["shm"])}


def _same_process(entry: dict, title: str | None) -> psutil.Process | None:
    """The process the run started, if it still runs (same start time, same title)."""
    try:
        p = psutil.Process(entry["pid"])
        if abs(p.create_time() - entry["create_time"]) > START_TIME_SLACK:
            return None
        if title is not None and " ".join(a for a in p.cmdline() if a) != title:
            return None
        if p.status() == psutil.STATUS_ZOMBIE:
            return None
        return p
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def clean(m: dict, wait: float = 3.0) -> list[str]:
    """Stop the run's leftover processes and remove its segment; one line per action."""
    if _same_process(m["orchestrator"], None) is not None:
        raise ConfigError(f"run {m['run_id']} is still running (orchestrator pid "
                          f"{m['orchestrator']['pid']}); stop it with Ctrl-C or "
                          f"`kill -TERM {m['orchestrator']['pid']}` and it cleans up itself")
    procs = []
    for role, entry in sorted(m["pids"].items()):
        p = _same_process(entry, entry["title"])
        if p is not None:
            procs.append((role, p))
    segments = [n for n in m["shm"] if os.path.exists(os.path.join(SHM_DIR, n))]
    if not procs and not segments:
        return [f"nothing to clean: run {m['run_id']}'s processes have all exited and it "
                f"left no shared memory"]
    lines = []
    for role, p in list(procs):
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            procs.remove((role, p))
            lines.append(f"{role}: pid {p.pid} had exited")
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
    for name in segments:
        if unlink_by_name(name):
            lines.append(f"shared memory {SHM_DIR}/{name} removed")
    return lines
