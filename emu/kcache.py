"""Where the compiled kernels live, and compiling them once per install, before any child.

numba's on-disk cache is checked against the source file of the decorated function only,
so every kernel of this project caches into one directory named after a digest of all the
project's sources and the numba and Python versions (``$EMU_NUMBA_CACHE`` if set, else
``$XDG_CACHE_HOME/emu/numba``, default ``~/.cache/emu/numba``): an edit or an upgrade starts
an empty directory.

``ensure_compiled()`` fills that directory once, in one worker process (``python -m
emu.jit``), under an exclusive lock, and marks it complete; children of a run only load
what is there. Compiling in every child at once (five compiles racing on two cores and on
one cache) is what made a first run fail on a busy machine. Two runs that start together
on an empty cache: one compiles, the other waits for the lock and then finds the mark.

This module does not import numba: a run whose cache is complete never loads the compiler
in the orchestrator.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from .errors import EmuError

_ROOT = Path(__file__).resolve().parent.parent
_PACKAGES = ("emu", "cpus", "nic")
COMPLETE = "complete"          # written (atomically) once every kernel is in the directory
POLL_S = 0.2                   # how often a wait looks at Ctrl-C and reports progress
HEARTBEAT_S = 2.0              # a progress line at least this often while compiling


def _numba_version() -> str:
    from importlib import metadata
    try:
        return metadata.version("numba")
    except metadata.PackageNotFoundError:
        return "none"


def source_digest() -> str:
    h = hashlib.sha256()
    h.update(f"{_numba_version()} {sys.version_info[:3]}".encode())
    for pkg in _PACKAGES:
        for f in sorted((_ROOT / pkg).glob("*.py")):
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    base = os.environ.get("EMU_NUMBA_CACHE")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "emu", "numba")
    return Path(base)


def cache_dir() -> Path:
    return cache_root() / source_digest()


def is_complete(directory: Path | None = None) -> bool:
    return ((directory or cache_dir()) / COMPLETE).is_file()


class Interrupted(EmuError):
    """A signal asked the run to stop while it was still preparing."""

    def __init__(self, signum: int):
        super().__init__("interrupted")
        self.signum = signum
        self.exit_status = 128 + signum


Progress = Callable[[str], None]


def ensure_compiled(progress: Progress | None = None, stop: Callable[[], int] | None = None,
                    timeout_s: float = 900.0) -> bool:
    """Compile every kernel into the cache once; True if this call compiled them.

    ``progress`` gets one line of text per step; ``stop`` returns a signal number when the
    caller was asked to stop (0 otherwise), and the compile then ends at once, raising
    Interrupted, with its worker killed and its temporary files removed.
    """
    directory = cache_dir()
    if is_complete(directory):
        return False
    say = progress or (lambda _line: None)
    stop = stop or (lambda: 0)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EmuError(f"cannot create the kernel cache {directory}: {e.strerror} "
                       f"(set EMU_NUMBA_CACHE to a writable directory)") from None
    lock_path = directory.parent / f"{directory.name}.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _lock(fd, lock_path, say, stop)
        if is_complete(directory):
            return False               # another process compiled while we waited
        _run_worker(directory, say, stop, timeout_s)
        tmp = directory / f".{COMPLETE}.{os.getpid()}"
        tmp.write_text(json.dumps({"digest": directory.name, "at": time.time()}))
        os.replace(tmp, directory / COMPLETE)
        return True
    finally:
        os.close(fd)                   # releases the lock


def _lock(fd: int, lock_path: Path, say: Progress, stop: Callable[[], int]) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return
    except BlockingIOError:
        pass
    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
    say(f"waiting for another emu (pid {holder}) that is compiling the receive-path kernels")
    t0 = time.monotonic()
    last = t0
    while True:
        sig = stop()
        if sig:
            raise Interrupted(sig)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        now = time.monotonic()
        if now - last >= 5.0:
            say(f"still waiting for pid {holder} to finish compiling ({now - t0:.0f} s)")
            last = now
        time.sleep(POLL_S)


def _run_worker(directory: Path, say: Progress, stop: Callable[[], int], timeout_s: float) -> None:
    env = dict(os.environ)
    env["EMU_NUMBA_CACHE"] = str(directory.parent)
    t0 = time.monotonic()
    say("compiling the receive-path kernels once after install (a fresh cache); "
        "later runs load them")
    # start_new_session: a Ctrl-C in the terminal reaches the orchestrator, which kills
    # the worker itself (at once, not after the kernel it is compiling).
    proc = subprocess.Popen([sys.executable, "-m", "emu.jit"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=str(_ROOT),
                            start_new_session=True)
    os.set_blocking(proc.stdout.fileno(), False)
    buf = b""
    err = b""
    state = _Progress(t0)
    last = time.monotonic()
    try:
        while True:
            sig = stop()
            if sig:
                raise Interrupted(sig)
            now = time.monotonic()
            if now - t0 > timeout_s:
                raise EmuError(f"compiling the kernels took more than {timeout_s:.0f} s; "
                               f"giving up (run `emu compile` alone to see it through)")
            chunk = _read_some(proc.stdout)
            if chunk:
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if state.update(line):
                        say(state.line())
                        last = time.monotonic()
            elif proc.poll() is not None:
                break
            else:
                if now - last >= HEARTBEAT_S:     # a kernel can take seconds: keep talking
                    say(state.line())
                    last = now
                time.sleep(0.05)
        err = proc.stderr.read() or b""
        if proc.returncode != 0:
            tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
            raise EmuError(f"compiling the kernels failed (exit {proc.returncode}): {tail[0]}")
        say(f"kernels compiled in {time.monotonic() - t0:.1f} s; cached in {directory}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
            _remove_partial(directory)
        for f in (proc.stdout, proc.stderr):
            f.close()


def _read_some(f) -> bytes:
    try:
        return f.read(65536) or b""
    except BlockingIOError:
        return b""


class _Progress:
    """Kernels compiled so far, and an estimate of the time left from their pace.

    The first kernel also pays for loading the compiler, so the pace is taken from the
    kernels after it, once there are two; the estimate then counts down between kernels
    instead of growing while one takes long.
    """

    def __init__(self, t0: float):
        self.t0 = t0
        self.done = self.total = 0
        self.t_first = 0.0
        self.eta = 0.0

    def update(self, line: bytes) -> bool:
        """Take one line of the worker; True if a new kernel was done."""
        try:
            msg = json.loads(line)
            done, total = int(msg["done"]), int(msg["total"])
        except (ValueError, KeyError, TypeError):
            return False
        if done == self.done and total == self.total:
            return False
        now = time.monotonic()
        self.done, self.total = done, total
        if done == 1:
            self.t_first = now
        elif done > 1:
            self.eta = now + (now - self.t_first) / (done - 1) * (total - done)
        return True

    def line(self) -> str:
        now = time.monotonic()
        head = "compiling the receive-path kernels once after install"
        if not self.total:
            return f"{head}: loading the compiler, {now - self.t0:.0f} s"
        left = ""
        if self.done > 1 and self.done < self.total:
            left = f", ~{max(1.0, self.eta - now):.0f} s left"
        return f"{head}: {self.done}/{self.total}, {now - self.t0:.0f} s{left}"


def _remove_partial(directory: Path) -> None:
    """Temporary files of a killed compile (numba writes to *.tmp.<uid>, then renames)."""
    for p in directory.glob("*.tmp.*"):
        try:
            p.unlink()
        except OSError:
            pass
