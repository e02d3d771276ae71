"""Fixtures for tests that start real processes: every one is reaped and nothing leaks.

The `no_leaks` fixture (autouse here) records this test process's descendants before the
test; afterwards it kills any descendant still alive (by pid, never by name) and removes any
segment named by a manifest of a run the test started (under its tmp_path), and fails the
test if it had to. It never touches segments of runs it did not start, so a benchmark or
another run on the same machine is left alone.
"""

import json
import os
import subprocess
import sys
import time

import psutil
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _manifest_segments(root) -> set[str]:
    """The segment name of every run under root (a run's segment is emu-<run id>)."""
    names = set()
    for dirpath, _dirs, files in os.walk(root):
        if "manifest.json" in files:
            try:
                with open(os.path.join(dirpath, "manifest.json")) as f:
                    m = json.load(f)
                names.update(n for n in m.get("shm", []) if isinstance(n, str) and "/" not in n)
                if isinstance(m.get("run_id"), str) and "/" not in m["run_id"]:
                    names.add(f"emu-{m['run_id']}")
            except (OSError, ValueError, AttributeError):
                pass
    return names


def _semaphores() -> set[str]:
    try:
        return {n for n in os.listdir("/dev/shm") if n.startswith("sem.")}
    except OSError:
        return set()


def _descendants() -> set[int]:
    try:
        return {p.pid for p in psutil.Process().children(recursive=True)}
    except psutil.Error:
        return set()


@pytest.fixture(autouse=True)
def no_leaks(tmp_path):
    kids_before = _descendants()
    sems_before = _semaphores()
    yield
    deadline = time.monotonic() + 10
    leaked = _descendants() - kids_before
    while leaked and time.monotonic() < deadline:
        time.sleep(0.1)
        leaked = {p for p in leaked if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE}
    for pid in leaked:
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass
    new_shm = {n for n in _manifest_segments(tmp_path) if os.path.exists(os.path.join("/dev/shm", n))}
    for name in new_shm:
        try:
            os.unlink(os.path.join("/dev/shm", name))
        except FileNotFoundError:
            pass
    new_sems = _semaphores() - sems_before
    assert not leaked, f"processes left behind: {sorted(leaked)}"
    assert not new_shm, f"shared memory left behind: {sorted(new_shm)}"
    assert not new_sems, f"named semaphores left behind: {sorted(new_sems)}"


class Spinners:
    """Two busy loops that keep both cores busy (killed by pid in any case)."""

    def __enter__(self):
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                      for _ in range(2)]
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
            p.wait(10)


def emu_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "emu", *args]


def run_emu(*args: str, timeout: float = 120, cwd: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(emu_cmd(*args), capture_output=True, text=True, timeout=timeout,
                          cwd=cwd or ROOT)


def start_emu(*args: str, cwd: str | None = None) -> subprocess.Popen:
    return subprocess.Popen(emu_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=cwd or ROOT, start_new_session=True)


def wait_manifest(run_dir: str, state: str = "running", timeout: float = 60) -> dict:
    path = os.path.join(run_dir, "manifest.json")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                m = json.load(f)
            if m.get("state") == state:
                return m
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{path} did not reach state {state!r} within {timeout} s")


def report(run_dir: str) -> dict:
    with open(os.path.join(run_dir, "report.json")) as f:
        return json.load(f)
