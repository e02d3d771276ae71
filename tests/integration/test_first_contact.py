"""First contact: an empty kernel cache on a machine whose cores are busy with other work.

What a newcomer meets: the README's first command on a fresh install. Both cores are kept
busy by two spinning processes; the cache directory is empty, so the run must compile the
kernels once, say so while it does, and then run. The bound on the first progress line is
the one the README states.
"""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from .conftest import ROOT, Spinners, emu_cmd, report

pytestmark = [pytest.mark.integration]

FIRST_LINE_BOUND_S = 10.0      # README: "within 10 s, even with both cores busy"
LONGEST_SILENCE_S = 15.0


def _timed_lines(proc: subprocess.Popen, t0: float, out: list) -> None:
    for line in proc.stderr:
        out.append((time.monotonic() - t0, line.rstrip("\n")))


def _start(args, env, run_dir):
    t0 = time.monotonic()
    p = subprocess.Popen(emu_cmd("run", "--run-dir", run_dir, *args), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
                         start_new_session=True)
    lines: list = []
    t = threading.Thread(target=_timed_lines, args=(p, t0, lines), daemon=True)
    t.start()
    return p, t, lines


def _stop(p, t):
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
    p.wait(30)
    t.join(10)


def _ctrl_c_once_said(p, lines, word: str, within_s: float, settle: float = 0.0):
    """Ctrl-C (to the process group) once the run has said word; (its descendants as they
    were then, seconds it took to exit)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline and not any(word in ln for _, ln in lines):
        time.sleep(0.01)
    assert any(word in ln for _, ln in lines), lines
    time.sleep(settle)
    kids = psutil.Process(p.pid).children(recursive=True)
    t_int = time.monotonic()
    os.killpg(p.pid, signal.SIGINT)
    p.wait(60)
    return kids, time.monotonic() - t_int


@pytest.fixture
def cold_cache(tmp_path):
    env = dict(os.environ)
    env["EMU_NUMBA_CACHE"] = str(tmp_path / "cache")
    return env


@pytest.mark.timeout(600)
def test_first_run_on_a_cold_cache_and_busy_cores(tmp_path, cold_cache):
    run_dir = str(tmp_path / "run")
    with Spinners():
        p, t, lines = _start(["--duration", "5ms"], cold_cache, run_dir)
        try:
            p.wait(540)
        finally:
            _stop(p, t)
    text = "\n".join(f"{s:6.1f} {ln}" for s, ln in lines)
    assert p.returncode == 0, text
    progress = [(s, ln) for s, ln in lines[1:] if ln.startswith("emu: ")]
    assert progress, text
    assert progress[0][0] <= FIRST_LINE_BOUND_S, text
    assert "compiling the receive-path kernels once" in progress[0][1], text
    times = [0.0] + [s for s, _ in lines]
    assert max(b - a for a, b in zip(times, times[1:])) <= LONGEST_SILENCE_S, text
    assert any("kernels compiled in" in ln for _, ln in lines), text
    assert report(run_dir)["conservation"]["unaccounted"] == 0
    assert "Traceback" not in text


@pytest.mark.timeout(600)
def test_two_runs_at_once_on_a_cold_cache_both_succeed(tmp_path, cold_cache):
    runs = [_start(["--duration", "2ms"], cold_cache, str(tmp_path / f"run{i}")) for i in range(2)]
    try:
        for p, _t, _lines in runs:
            p.wait(540)
    finally:
        for p, t, _lines in runs:
            _stop(p, t)
    texts = ["\n".join(ln for _, ln in lines) for _p, _t, lines in runs]
    for (p, _t, _lines), text in zip(runs, texts):
        assert p.returncode == 0, text
        assert "Traceback" not in text
    compiled = [("kernels compiled in" in text) for text in texts]
    waited = [("waiting for another emu" in text) for text in texts]
    assert sorted(compiled) == [False, True], texts      # exactly one of them compiled
    assert waited[compiled.index(False)], texts           # the other said it was waiting


@pytest.mark.timeout(300)
def test_ctrl_c_during_the_compile_ends_at_once_leaving_nothing(tmp_path, cold_cache):
    run_dir = str(tmp_path / "run")
    p, t, lines = _start(["--duration", "5ms"], cold_cache, run_dir)
    try:
        workers, took = _ctrl_c_once_said(p, lines, "compiling", 120, settle=1.0)
    finally:
        _stop(p, t)
    assert p.returncode == 130, lines
    assert took < 5.0, f"took {took:.1f} s to stop"
    for w in workers:
        assert not psutil.pid_exists(w.pid) or w.status() == psutil.STATUS_ZOMBIE
    cache = tmp_path / "cache"
    assert not list(cache.rglob("*.tmp.*")), "a half-written cache file was left"
    assert not list(cache.rglob("complete")), "an interrupted compile marked the cache complete"
    assert not os.path.exists(run_dir), "the run directory was created before the compile ended"
    assert not any("Traceback" in ln for _, ln in lines), lines


@pytest.mark.timeout(120)
def test_ctrl_c_while_the_processes_start_ends_at_once_leaving_nothing(tmp_path):
    run_dir = str(tmp_path / "run")
    p, t, lines = _start(["--duration", "2s"], dict(os.environ), run_dir)
    try:
        kids, took = _ctrl_c_once_said(p, lines, "starting", 90)
    finally:
        _stop(p, t)
    assert p.returncode == 130, lines
    assert took < 5.0, f"took {took:.1f} s to stop"
    assert "SIGINT while preparing the run" in lines[-1][1], lines
    assert not os.path.exists(run_dir), os.listdir(run_dir)
    for k in kids:
        assert not psutil.pid_exists(k.pid) or k.status() == psutil.STATUS_ZOMBIE


@pytest.mark.timeout(180)
def test_the_children_run_this_copy_of_the_code_whatever_the_current_directory(tmp_path):
    """The command started from a directory holding another copy of the packages (a source
    checkout next to an installed copy): the fork server must import the orchestrator's
    copy, not the one in the current directory."""
    other = tmp_path / "checkout"
    marker = tmp_path / "imported-the-other-copy"
    for pkg in ("emu", "cpus", "nic"):
        shutil.copytree(os.path.join(ROOT, pkg), other / pkg,
                        ignore=shutil.ignore_patterns("__pycache__"))
    with open(other / "emu" / "__init__.py", "a") as f:
        f.write(f"\nopen({str(marker)!r}, 'w').close()\n")
    launcher = tmp_path / "bin" / "emu-launcher.py"       # like a console script: not in cwd
    launcher.parent.mkdir()
    launcher.write_text(f"import sys\nsys.path.insert(0, {ROOT!r})\n"
                        "from emu.cli import main\nsys.exit(main())\n")
    run_dir = str(tmp_path / "run")
    r = subprocess.run([sys.executable, str(launcher), "run", "--duration", "2ms", "--no-progress",
                        "--run-dir", run_dir], capture_output=True, text=True, cwd=str(other),
                       timeout=150)
    assert r.returncode == 0, r.stderr
    assert not marker.exists(), "a child imported the copy in the current directory"
    assert report(run_dir)["conservation"]["unaccounted"] == 0

