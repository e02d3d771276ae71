"""The run directory: checked before anything starts, owned by one live run at a time.

A run directory holds what a run writes (config.toml, manifest.json, proc/, sys/,
report.json, seqs-cpuN.npy) and a lock file (run.lock) that the run holds with flock for its
whole life: the kernel drops the lock when the process ends, however it ends, so a second
run pointed at a directory in use is refused (naming the holder's pid) and a directory
left by a dead run is taken over. A reused directory loses the previous run's outputs, so
nothing of an older run can be read as this one's. Only those names are ever removed, and
only in a directory that an earlier run wrote (it has a manifest.json or run.lock).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile

from .errors import ConfigError

LOCK = "run.lock"
OUTPUTS = ("report.json", "manifest.json", "config.toml")
TREES = ("proc", "sys")
FORBIDDEN = ("/proc", "/sys", "/dev")


def check(path: str) -> str:
    """The absolute run directory, or ConfigError naming what is wrong with it."""
    if not path:
        raise ConfigError("--run-dir: the path is empty")
    if "\0" in path:
        raise ConfigError("--run-dir: the path contains a NUL byte")
    full = os.path.abspath(path)
    real = os.path.realpath(full)
    for top in FORBIDDEN:
        if real == top or real.startswith(top + "/"):
            raise ConfigError(f"--run-dir {path}: inside {top}, which is the real kernel's; "
                              f"choose a directory of your own")
    if os.path.exists(full) and not os.path.isdir(full):
        raise ConfigError(f"--run-dir {path}: is a file, not a directory")
    # The nearest existing ancestor must be a directory we can create entries in.
    probe = full
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise ConfigError(f"--run-dir {path}: {probe} is a file, so nothing can be created "
                          f"under it")
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "the directory" if probe == full else f"{probe}"
        raise ConfigError(f"--run-dir {path}: {what} is not writable by this user")
    if probe == full and not _ours(full):
        raise ConfigError(f"--run-dir {path}: is not empty and no earlier run wrote it; "
                          f"choose a new or empty directory")
    holder = _holder(full)
    if holder:
        raise ConfigError(_in_use(full, holder))
    return full


def _in_use(path: str, holder: str) -> str:
    return f"--run-dir {path}: in use by a live run (pid {holder}); choose another directory or stop that run"


def _holder(path: str) -> str:
    """The pid written by the live run that holds the directory's lock, or ""."""
    try:
        fd = os.open(os.path.join(path, LOCK), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return ""
    except BlockingIOError:
        return os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
    finally:
        os.close(fd)


def _ours(path: str) -> bool:
    """Empty, or written by an earlier run: only then may its outputs be replaced."""
    try:
        names = os.listdir(path)
    except OSError:
        return False
    return not names or LOCK in names or "manifest.json" in names


class RunDir:
    """A checked run directory, locked for this run; release() (or process exit) frees it."""

    def __init__(self, path: str):
        self.path = check(path)
        self.fd = -1
        self.created = False

    def claim(self) -> None:
        """Create, lock and clear the directory; ConfigError if a live run holds it."""
        if os.path.isdir(self.path) and not _ours(self.path):
            check(self.path)                      # raises: not empty, not a run's
        self.created = not os.path.exists(self.path)
        try:
            os.makedirs(self.path, exist_ok=True)
            fd = os.open(os.path.join(self.path, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                         0o644)
        except OSError as e:
            raise ConfigError(f"--run-dir {self.path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(_in_use(self.path, holder)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        self._clear()

    def _clear(self) -> None:
        for name in OUTPUTS:
            try:
                os.unlink(os.path.join(self.path, name))
            except FileNotFoundError:
                pass
        for name in TREES:
            p = os.path.join(self.path, name)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
        for name in os.listdir(self.path):
            if name.startswith("seqs-cpu") and name.endswith(".npy"):
                os.unlink(os.path.join(self.path, name))

    def discard(self) -> None:
        """For a run that never started: remove what it wrote, the directory if it made it."""
        self._clear()
        try:
            os.unlink(os.path.join(self.path, LOCK))
        except FileNotFoundError:
            pass
        if self.created:
            try:
                os.rmdir(self.path)
            except OSError:
                pass                          # somebody put something there meanwhile

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def write_tree(root: str, files: dict[str, str], in_place: bool = False) -> None:
    """Write `files` (relative path -> text) under `root`, creating directories.

    Each file is replaced atomically (a temporary file in the same directory, then
    os.replace), so a reader sees either the old or the new text, never a mix. With
    ``in_place`` the existing file is truncated and rewritten instead, which keeps its inode:
    needed when the file is bind-mounted over the real /proc (sysstat, top), at the cost of
    a reader possibly catching it half-written.
    """
    for rel, text in files.items():
        path = os.path.join(root, rel)
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        data = text.encode()
        if in_place and os.path.exists(path):
            with open(path, "r+b") as f:
                f.write(data)
                f.truncate()
            continue
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
