"""What every child process (NIC, CPU) does first and last, and its one entry point.

Children are forked from a fork server (multiprocessing 'forkserver') whose preload
(emu/preload.py) has already imported the NIC and CPU code and loaded every compiled
kernel, so a child starts in milliseconds. The fork server leaves the orchestrator's session
first: Ctrl-C, SIGHUP and a SIGTERM sent to the orchestrator's process group reach only the
orchestrator, which runs the ordered stop and reports; the children never see them.

A child takes its whole config from its arguments and never reads files or the environment.
It reports each startup step (import, cache load, attach, handshake) on the control channel,
so a slow start names the child and the step. It exits on SIGTERM (the shutdown ladder,
`emu clean`) without a traceback, asks the kernel for SIGTERM if its parent dies
(PR_SET_PDEATHSIG, plus a parent-pid check), and leaves with os._exit once its final report
is acknowledged: interpreter shutdown would cost it most of a second for nothing.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import signal
import sys
import time
import traceback

import zmq
from setproctitle import setproctitle

from .protocol import Msg, endpoint, pack, unpack

PR_SET_PDEATHSIG = 1
PR_SET_TIMERSLACK = 29
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3      # glibc mallopt parameters
MMAP_THRESHOLD = 32 << 20                         # glibc's largest allowed value (64-bit)
TRIM_THRESHOLD = 128 << 20
EX_SOFTWARE = 70

# The startup steps a child reports, in order (the orchestrator names the one a slow child
# is in). "spawn" is the orchestrator's own: the child has not said anything yet.
STEPS = ("spawn", "import", "cache load", "attach", "handshake")
ROLE_MODULES = {"nic": "nic.process", "cpu": "cpus.process"}


class Orphaned(SystemExit):
    pass


def _on_term(signum, frame):
    raise SystemExit(128 + signum)


def bootstrap(title: str, parent_pid: int) -> None:
    setproctitle(title)
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_term)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        libc = None
    if libc is not None:
        try:
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            # Short sleeps pace the NIC and throttle CPUs to their modelled cost: with the
            # default 50 us slack a 50 us sleep takes ~106 us, with 1 ns ~59 us.
            libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
        except AttributeError:
            pass
        _keep_heap(libc)
    if not _alive(parent_pid):
        raise Orphaned(1)


def pin(cores) -> bool:
    """Pin this process to the host ``cores`` (None or empty: leave it; emu.placement);
    False if the host refused (a cpuset changed under the run): the process then runs where
    the OS puts it, as placement decides speed only."""
    if not cores:
        return True
    try:
        os.sched_setaffinity(0, set(cores))
        return True
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _keep_heap(libc) -> None:
    """Serve every numpy temporary from the heap and keep freed memory in the process.

    A NIC turn allocates arrays of a few MB; with glibc's defaults each one is a fresh
    mmap whose pages fault in one by one on first touch and go back to the kernel on free,
    which made a 10 000-frame turn 5x slower than the work itself (measured: 2.0 ms -> 0.37
    ms). Not glibc (no mallopt): left as it is.
    """
    try:
        mallopt = libc.mallopt
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    except AttributeError:
        pass


def entry(role: str, index: int, cfg_dict: dict, run_id: str, shm_name: str,
          parent_pid: int, cores: list[int] | None = None) -> None:
    """The target of every child process: role 'nic' or 'cpu' (index: the CPU); cores: the
    host cores it runs on (emu.placement; None or empty: where the OS puts it)."""
    name = "nic" if role == "nic" else f"cpu{index}"
    title = "emu nic/eth0" if role == "nic" else f"emu cpu/{index}"
    ctl = None
    code = 0
    try:
        bootstrap(title, parent_pid)
        pin(cores)
        ctx = zmq.Context()
        ctl = Control(ctx, run_id, name, parent_pid)
        ctl.step("import")
        mod = importlib.import_module(ROLE_MODULES[role])
        mod.main(ctl, index, cfg_dict, run_id, shm_name)
    except Orphaned:
        code = 1
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0
    except BaseException as e:  # a crash: say why, then die with a non-zero status
        traceback.print_exc()
        report_crash(ctl, name, e)
        code = EX_SOFTWARE
    finally:
        for f in (sys.stdout, sys.stderr):
            try:
                f.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


class Control:
    """The child's end of the control channel (a DEALER named after its role)."""

    def __init__(self, ctx: zmq.Context, run_id: str, identity: str, parent_pid: int):
        self.ctx = ctx
        self.run_id = run_id
        self.identity = identity
        self.parent_pid = parent_pid
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.IDENTITY, identity.encode())
        self.sock.setsockopt(zmq.LINGER, 2000)
        self.sock.connect(endpoint(run_id, "ctl"))
        self._stop = False

    def send(self, kind: Msg, body=None) -> None:
        self.sock.send(pack(self.run_id, kind, body))

    def step(self, name: str) -> None:
        """Tell the orchestrator which startup step this child is in."""
        self.send(Msg.STEP, {"step": name, "pid": os.getpid()})

    def stop_requested(self) -> bool:
        """True once the orchestrator has said STOP (or EXIT): the run ends at once."""
        if not self._stop:
            msg = self.poll(0)
            if msg is not None and msg[0] in (Msg.STOP, Msg.EXIT):
                self._stop = True
        return self._stop

    def ticker(self, every_ns: int, also=None):
        """A function for an agent's loop: every every_ns of real time, raise
        emu.timesync.Stopped if the orchestrator said STOP, then call also()."""
        from .timesync import Stopped
        state = [0]

        def tick() -> None:
            now = time.monotonic_ns()
            if now < state[0]:
                return
            state[0] = now + every_ns
            if self.stop_requested():
                raise Stopped()
            if also is not None:
                also()
        return tick

    def poll(self, timeout_ms: int = 0):
        """One message (kind, body) or None; exits if the orchestrator is gone."""
        if self.sock.poll(timeout_ms):
            return unpack(self.sock.recv(), self.run_id)
        if os.getppid() == 1 or not _alive(self.parent_pid):
            raise Orphaned(1)
        return None

    def handshake(self, timeout_s: float = 300.0) -> int:
        """Say READY, wait for START, sleep until its t0 (every child begins then); t0."""
        self.step("handshake")
        self.send(Msg.READY, {"pid": os.getpid()})
        t0 = self.wait_for(Msg.START, timeout_s)["t0"]
        time.sleep(max(0.0, (t0 - time.monotonic_ns()) / 1e9))
        return t0

    def finish(self, now: int, timeout_s: float = 30.0) -> None:
        """Say STOPPED (counters are final), then wait for EXIT."""
        self.send(Msg.STOPPED, {"now": now})
        self.wait_for(Msg.EXIT, timeout_s)

    def wait_for(self, kind: Msg, timeout_s: float):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = self.poll(100)
            if msg is None:
                continue
            if msg[0] == kind:
                return msg[1]
            if msg[0] == Msg.EXIT:
                raise SystemExit(0)
        raise Orphaned(1)


def report_crash(ctl: Control | None, role: str, exc: BaseException) -> None:
    """Tell the orchestrator why this child is going down, then let it die."""
    print(f"emu {role}: {type(exc).__name__}: {exc}", file=sys.stderr)
    if ctl is not None:
        try:
            ctl.send(Msg.ERROR, f"{type(exc).__name__}: {exc}")
        except zmq.ZMQError:
            pass
