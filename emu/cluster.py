"""The emulated host as one object with plain verbs: start, run, stop, close.

The orchestrator owns everything a run creates: the run directory (locked while it runs),
the one shared-memory segment (the cross-process locks live inside it), the control socket
and the child processes. close() always leaves nothing behind, whatever happened before (a
crash, Ctrl-C, a failed start): it runs the shutdown ladder (ask, wait, SIGTERM, wait,
SIGKILL) on the pids it started and unlinks the segment it created. The segment's name is
unlinked as soon as every child has mapped it, so from then on nothing of the run can
outlive it, even if the orchestrator is killed with SIGKILL.

Startup, in order: compile the kernels if the cache is not complete (emu.kcache), claim the
run directory, create the segment, start the children from a fork server that has loaded
every kernel (emu.preload), wait until each has reported READY, unlink the segment's name,
send START. Each child reports its startup steps; if the start takes too long, the error
names the child furthest behind and its step.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import json
import multiprocessing as mp
import os
import secrets
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import psutil
import zmq

from . import kcache, placement, procfs
from .child import STEPS
from .config import Config, dumps_toml
from .counters import (MAX_SOURCES, SRC_RING_DROP0, C, Drop, N, Q_BYTES, Q_DROPS, Q_IRQS,
                       Q_PACKETS, nq, src_drop)
from .errors import ChildCrashed, EmuError, ProtocolError
from .protocol import Msg, endpoint, pack, unpack
from .rundir import RunDir, write_tree
from .ring import (BL_DROPPED, RX_BYTES, RX_DROP_PEND, RX_DROPS, RX_IRQS, RX_PACKETS, U_DEFICIT,
                   U_DROPS, U_RMEM, USER0)
from .shm import Layout, Segment, Views, check_fits
from .syncblock import (FINISHED, PACE_T0, PACE_TDF_MILLI, PUB, STATE, STOP_AT, STOPPING,
                        TRAFFIC_END, WAIT_ON)

# From when the children begin to load (the kernels are compiled by then) until every one
# is READY. Measured warm: about 1.5 s on an idle 2-core box; a box whose cores are both
# busy with other work can make it several times that.
START_TIMEOUT = 90.0
STOP_TIMEOUT = 10.0
LADDER_WAIT = 3.0
PROGRESS_EVERY = 2.0

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fork_server() -> tuple:
    """The fork server context (preloading the children's code and kernels once) and the
    server's pid, starting it if it is not running.

    It is started with this process's own copy of the code first on its path and without
    the current directory: run from a source checkout of an installed copy, `python -c`
    would otherwise import the checkout, a different digest of the sources whose kernels are
    not compiled (found on a fresh clone: a second, silent compile inside the start).
    """
    from multiprocessing import forkserver
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["emu.preload"])
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "PYTHONSAFEPATH")}
    try:
        os.environ["PYTHONSAFEPATH"] = "1"
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (_PACKAGE_ROOT, saved["PYTHONPATH"]) if p)
        forkserver.ensure_running()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return ctx, forkserver._forkserver._forkserver_pid


def describe_status(code: int | None) -> str:
    if code is None:
        return "is still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with status {code}"


def _noop(_line: str) -> None:
    return None


def _never() -> int:
    return 0


@dataclass
class Child:
    role: str
    kind: str
    index: int
    title: str
    proc: mp.Process | None = None
    create_time: float = 0.0
    step: str = "spawn"
    since: float = field(default_factory=time.monotonic)
    ready: bool = False
    error: str = ""
    stopped: dict = field(default_factory=dict)
    finished: bool = False          # said STOPPED: its counters are final

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


class Cluster:
    def __init__(self, cfg: Config, run_dir: str | None = None, run_id: str | None = None):
        self.cfg = cfg
        self.run_id = run_id or secrets.token_hex(4)
        self.rundir = RunDir(run_dir or cfg["run.run_dir"] or os.path.join("runs", self.run_id))
        self.run_dir = self.rundir.path
        self.shm_name = f"emu-{self.run_id}"
        self.layout = Layout(cfg)
        check_fits(self.layout)
        self.children: dict[str, Child] = {"nic": Child("nic", "nic", 0, "emu nic/eth0")}
        for c in range(cfg.ncpus):
            self.children[f"cpu{c}"] = Child(f"cpu{c}", "cpu", c, f"emu cpu/{c}")
        self.segment: Segment | None = None
        self.shm_linked = False
        self.views: Views | None = None
        self.ctx: zmq.Context | None = None
        self.ctl = None
        self.t0 = 0
        self.btime = 0
        self.started = False
        self.closed = False
        self._spawner: threading.Thread | None = None
        self._ctx = None
        self._server_pid: int | None = None
        self._spawn_error: BaseException | None = None
        self._abort_spawn = False
        self.effective_cpu = list(cfg.effective_cpu)
        # host cores per child (emu.placement): speed only, the counters are the same
        self.pins = placement.plan(cfg["run.placement"], os.sched_getaffinity(0),
                                   list(self.children))
        self.pins_refused: list[str] = []

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, progress: Callable[[str], None] | None = None,
              stop: Callable[[], int] | None = None) -> None:
        """Compile if needed, create everything, start the children, start traffic.

        ``progress`` gets a line of text now and then; ``stop`` returns a signal number once
        the caller has been asked to stop, and start() then raises kcache.Interrupted."""
        say = progress or _noop
        stop = stop or _never
        kcache.ensure_compiled(say, stop)
        self.rundir.claim()
        cfg_dict = self.cfg.to_dict()
        cfg_dict["run"]["run_dir"] = self.run_dir       # children write files here
        with open(os.path.join(self.run_dir, "config.toml"), "w") as f:
            f.write(dumps_toml(cfg_dict))
        self.segment = Segment.create(self.shm_name, self.layout.size)
        self.shm_linked = True
        self._write_manifest("starting")
        self.views = Views(self.cfg, self.layout, self.segment.buf)
        self.views.init_tables(stop_at=self.cfg.duration_ns + self.cfg.drain_ns)
        self.ctx = zmq.Context()
        self.ctl = self.ctx.socket(zmq.ROUTER)
        self.ctl.setsockopt(zmq.LINGER, 0)
        self.ctl.bind(endpoint(self.run_id, "ctl"))
        say(f"starting {len(self.children)} processes (NIC and {self.cfg.ncpus} CPUs)")
        t_load = time.monotonic()
        for ch in self.children.values():
            ch.since = t_load
        self._ctx, self._server_pid = _fork_server()
        self._spawner = threading.Thread(target=self._spawn_all, args=(cfg_dict,),
                                         name="emu-spawn", daemon=True)
        self._spawner.start()
        self._wait_ready(t_load, say, stop)
        self._check_pins()
        # Every child has mapped the segment: its name can go, and with it any chance that
        # it outlives the run.
        self.segment.unlink()
        self.shm_linked = False
        self.t0 = time.monotonic_ns() + 20_000_000   # every child starts the same instant
        self.btime = int(time.time())
        tdf = self.cfg["run.tdf"]
        if tdf:                                      # paced: emulated time <= wall / tdf
            self.views.sync.glob[PACE_T0] = self.t0
            self.views.sync.glob[PACE_TDF_MILLI] = round(tdf * 1000)
        for role in self.children:
            self._send(role, Msg.START, {"t0": self.t0})
        self.started = True
        self._write_manifest("running")

    def _spawn_all(self, cfg_dict: dict) -> None:
        ctx = self._ctx
        me = os.getpid()
        try:
            for ch in self.children.values():
                if self._abort_spawn:
                    return
                from .child import entry
                cores = sorted(self.pins.get(ch.role, ()))
                p = ctx.Process(target=entry, name=f"emu-{ch.role}", daemon=True,
                                args=(ch.kind, ch.index, cfg_dict, self.run_id, self.shm_name, me,
                                      cores))
                with _main_not_imported():
                    p.start()
                ch.proc = p
                try:
                    ch.create_time = psutil.Process(p.pid).create_time()
                except psutil.Error:
                    ch.create_time = 0.0
        except BaseException as e:  # reported by _wait_ready
            self._spawn_error = e

    def _check_pins(self) -> None:
        """Each child pinned itself (emu.child.pin); one the host refused (a cpuset changed)
        runs where the OS puts it: it leaves self.pins, and self.pins_refused names it."""
        for name in sorted(self.pins):
            try:
                actual = set(psutil.Process(self.children[name].pid).cpu_affinity())
            except (psutil.Error, TypeError, ValueError):
                continue
            if actual != set(self.pins[name]):
                del self.pins[name]
                self.pins_refused.append(name)

    def _wait_ready(self, t_load: float, say, stop) -> None:
        deadline = t_load + START_TIMEOUT
        last_say = time.monotonic()
        pids_known = 0
        while True:
            sig = stop()
            if sig:
                raise kcache.Interrupted(sig)
            self._drain_control()
            if self._spawn_error is not None:
                raise EmuError(f"could not start the emulator's processes: "
                               f"{type(self._spawn_error).__name__}: {self._spawn_error}")
            known = sum(1 for ch in self.children.values() if ch.proc is not None)
            if known != pids_known:
                pids_known = known
                self._write_manifest("starting")
            for ch in self.children.values():
                if ch.error:
                    raise ChildCrashed(f"{ch.role} (pid {ch.pid}) failed while starting "
                                       f"({ch.step}): {ch.error}")
                if ch.proc is not None and ch.proc.exitcode is not None:
                    raise ChildCrashed(f"{ch.role} (pid {ch.pid}) "
                                       f"{describe_status(ch.proc.exitcode)} while starting "
                                       f"({ch.step})")
            waiting = [ch for ch in self.children.values() if not ch.ready]
            if not waiting:
                return
            now = time.monotonic()
            if now > deadline:
                slow = self._slowest(waiting)
                raise EmuError(
                    f"{slow.role} (pid {slow.pid or '-'}) did not start within "
                    f"{START_TIMEOUT:.0f} s: it has been at step '{slow.step}' for "
                    f"{now - slow.since:.0f} s ({len(waiting)} of {len(self.children)} not "
                    f"ready); is the machine overloaded?")
            if now - last_say >= PROGRESS_EVERY:
                last_say = now
                slow = self._slowest(waiting)
                say(f"starting: {len(self.children) - len(waiting)}/{len(self.children)} "
                    f"ready, {now - t_load:.0f} s; waiting for {slow.role} ({slow.step})")
            self.ctl.poll(50)

    @staticmethod
    def _slowest(waiting: list[Child]) -> Child:
        return min(waiting, key=lambda ch: (STEPS.index(ch.step) if ch.step in STEPS
                                            else len(STEPS), ch.since))

    def check(self) -> None:
        """Fail the run if a child died or reported an error."""
        self._drain_control()
        for ch in self.children.values():
            if ch.error:
                raise ChildCrashed(f"{ch.role} (pid {ch.pid}) failed: {ch.error}")
            code = ch.proc.exitcode if ch.proc is not None else None
            if code is not None:
                raise ChildCrashed(f"{ch.role} (pid {ch.pid}) {describe_status(code)}; "
                                   f"the run is stopped")

    # -- emulated time -----------------------------------------------------------------------
    def agents(self) -> list[str]:
        """The sync block's agents by index: the CPUs, then the NIC."""
        return [f"cpu{c}" for c in range(self.cfg.ncpus)] + ["nic"]

    def reached(self) -> int:
        """The emulated time every CPU has reached: the earliest busy CPU's time, or, when
        every CPU is idle, the latest one's (it can only go on from there)."""
        v = self.views
        busy = [int(p) >> 1 for p in v.sync.agents[:self.cfg.ncpus, PUB] if not int(p) & 1]
        t = min(busy) if busy else max(int(c[C.NOW]) for c in v.cpu)
        return min(t, int(v.sync.glob[STOP_AT]))

    def latest(self) -> int:
        """The furthest emulated time any CPU has reached."""
        return max(int(c[C.NOW]) for c in self.views.cpu)

    def stop_at(self) -> int:
        return int(self.views.sync.glob[STOP_AT])

    def end_traffic(self, t: int) -> tuple[int, int]:
        """The ordered stop of Ctrl-C: the NIC generates nothing from emulated time t on
        (what it has generated is still delivered), and every agent stops after the drain
        that follows (if sooner than planned). Wakes every agent so each sees it; returns
        (traffic end, run end)."""
        sync = self.views.sync
        nic = int(sync.agents[sync.nic, PUB])
        if not nic & 1:
            t = max(t, nic >> 1)       # what the NIC has generated ahead is delivered too
        t = min(t, self.cfg.duration_ns)
        if t < int(sync.glob[TRAFFIC_END]):
            sync.glob[TRAFFIC_END] = t
        end = t + self.cfg.drain_ns
        if end < int(sync.glob[STOP_AT]):
            sync.glob[STOP_AT] = end
        self._wake_all()
        return int(sync.glob[TRAFFIC_END]), int(sync.glob[STOP_AT])

    def _wake_all(self) -> None:
        from . import futex
        sync = self.views.sync
        for a in range(sync.nagents):
            sync.wake[a] = (int(sync.wake[a]) + 1) & 0xFFFFFFFF
            futex.futex_wake(sync.wake_base, 16 * a, 4)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) each child process has used so far."""
        out = {}
        for ch in self.children.values():
            try:
                t = psutil.Process(ch.pid).cpu_times()
                out[ch.role] = t.user + t.system
            except (psutil.Error, TypeError):
                pass
        return out

    def finished(self) -> bool:
        """Every agent has reached the end of the run."""
        return bool(np.all(self.views.sync.agents[:, STATE] == FINISHED))

    def held_by(self) -> tuple[str, str] | None:
        """(who, what) if the agents wait for one that does not move: the agent at the
        root of the waits, and what its process is doing (psutil)."""
        ag = self.views.sync.agents
        names = self.agents()
        waiting = [a for a in range(len(names)) if int(ag[a, WAIT_ON]) and
                   int(ag[a, STATE]) != FINISHED]
        if not waiting:
            return None
        counts: dict[int, int] = {}
        for a in waiting:
            seen = set()
            r = a
            while int(ag[r, WAIT_ON]) and r not in seen:
                seen.add(r)
                nxt = int(ag[r, WAIT_ON]) - 1
                if nxt == r:
                    break
                r = nxt
            counts[r] = counts.get(r, 0) + 1
        root = max(counts, key=lambda r: (counts[r], -r))
        # The chain of waits is a snapshot of bounds that move: a waiter registered on an
        # agent that has since re-registered elsewhere points past the real root until it
        # wakes. An agent whose process cannot run (stopped, exited) is the root for sure.
        states = {a: self._process_state(names[a]) for a in range(len(names))}
        stuck = [a for a, (_ch, what) in states.items()
                 if what in ("stopped (SIGSTOP?)", "stopped by a tracer", "exited", "gone")]
        if stuck and root not in stuck:
            root = stuck[0]
        ch, what = states[root]
        if ch is None:
            return names[root], what
        return f"{names[root]} ({ch.title}, pid {ch.pid})", what

    def _process_state(self, name: str):
        """(the child, what its process is doing, in words)."""
        ch = self.children.get(name)
        what = "running"
        if ch is not None and ch.pid:
            try:
                st = psutil.Process(ch.pid).status()
                what = {"stopped": "stopped (SIGSTOP?)", "tracing-stop": "stopped by a tracer",
                        "zombie": "exited", "disk-sleep": "in uninterruptible sleep"}.get(st, st)
            except psutil.Error:
                what = "gone"
        return ch, what

    def stop(self) -> None:
        """Ask every child to stop where it is; their counters are final after this. A
        child stopped by a signal (SIGSTOP) is continued first: it is ours to end."""
        for ch in self.children.values():
            if ch.pid and not ch.finished:
                try:
                    if psutil.Process(ch.pid).status() == psutil.STATUS_STOPPED:
                        os.kill(ch.pid, signal.SIGCONT)
                except (psutil.Error, ProcessLookupError):
                    pass
        if self.views is not None:
            self.views.sync.glob[STOPPING] = 1       # seen at an agent's next wait
        for role in self.children:
            self._send(role, Msg.STOP)
        if self.views is not None:
            self._wake_all()
        deadline = time.monotonic() + STOP_TIMEOUT
        while True:
            self._drain_control()
            waiting = {r for r, ch in self.children.items() if not ch.finished}
            if not waiting:
                break
            for role in list(waiting):
                ch = self.children[role]
                if ch.error:
                    raise ChildCrashed(f"{role} (pid {ch.pid}) failed to stop: {ch.error}")
                if ch.proc.exitcode is not None:
                    raise ChildCrashed(f"{role} (pid {ch.pid}) {describe_status(ch.proc.exitcode)} "
                                       f"before it stopped")
            if time.monotonic() > deadline:
                raise EmuError(f"{', '.join(sorted(waiting))} did not stop within "
                               f"{STOP_TIMEOUT:.0f} s")
            self.ctl.poll(50)

    def close(self) -> None:
        """The shutdown ladder, then unlink the segment. Safe to call more than once."""
        if self.closed:
            return
        self.closed = True
        try:
            self._abort_spawn = True
            if self._spawner is not None:
                self._spawner.join(1.0)
                if self._spawner.is_alive() and self._server_pid:
                    # Stopped while the fork server still loads: end it rather than wait
                    # (multiprocessing starts a new one when it is next needed).
                    try:
                        os.kill(self._server_pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                self._spawner.join(30)
            procs = [ch.proc for ch in self.children.values() if ch.proc is not None]
            for role, ch in self.children.items():
                if ch.proc is not None and ch.proc.is_alive() and self.ctl is not None:
                    try:
                        self._send(role, Msg.EXIT)
                    except zmq.ZMQError:
                        pass
            _join_all(procs, LADDER_WAIT)
            for p in procs:
                if p.is_alive():
                    p.terminate()
            _join_all(procs, LADDER_WAIT)
            for p in procs:
                if p.is_alive():
                    p.kill()
            _join_all(procs, LADDER_WAIT)
        finally:
            self.views = None
            if self.segment is not None:
                self.segment.close()
                if self.shm_linked:
                    self.segment.unlink()
                    self.shm_linked = False
            if self.ctl is not None:
                self.ctl.close(0)
            if self.ctx is not None:
                self.ctx.term()
            if self.rundir.fd >= 0:
                if self.started:
                    self._write_manifest("closed")
                else:
                    self.rundir.discard()     # nothing ran: leave nothing of it behind
            self.rundir.release()

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- observation -------------------------------------------------------------------------
    def queued_frames(self) -> int:
        """Wire frames still in a ring, a backlog, a process queue or a socket."""
        return sum(self.queues().values())

    def queues(self) -> dict[str, int]:
        v = self.views
        return {
            "nic": int(v.nic[N.BUFFERED]),
            "rx_rings": sum(len(r) - int(r.hdr[USER0 + RX_DROP_PEND]) for r in v.rx),
            "backlogs": sum(_ring_segs(b) for b in v.backlogs),
            "process_queues": int(sum(int(c[C.PROCESS_QSEGS]) for c in v.cpu)),
            "sockets": sum(len(s) for s in v.sockets),
        }

    def snapshot(self) -> "procfs.Snapshot":
        v = self.views
        cpu = np.stack([c.copy() for c in v.cpu])
        for i, b in enumerate(v.backlogs):
            cpu[i, C.DROPPED] = b.user(BL_DROPPED)
            cpu[i, C.INPUT_QLEN] = len(b)
        nic = nic_view(v.nic, v.rx, cpu)
        uptime = max(int(c[C.NOW]) for c in v.cpu) if v.cpu else 0
        socks = tuple(procfs.SockStat(index=i, port=sc["port"], connect=sc["connect"],
                                      rmem=r.user(U_RMEM), drops=r.user(U_DROPS),
                                      reader_cpu=sc["reader_cpu"], deficit=r.user(U_DEFICIT))
                      for i, (r, sc) in enumerate(zip(v.sockets, self.cfg["udp.sockets"])))
        return procfs.Snapshot(cpu=cpu, nic=nic, cfg=self.cfg, btime=self.btime,
                               uptime_ns=uptime, effective_cpu=list(self.effective_cpu),
                               sockets=socks)

    def render(self) -> None:
        write_tree(self.run_dir, procfs.tree(self.snapshot()))

    # -- internals ---------------------------------------------------------------------------
    def _send(self, role: str, kind: Msg, body=None) -> None:
        self.ctl.send_multipart([role.encode(), pack(self.run_id, kind, body)])

    def _drain_control(self) -> list[tuple[str, Msg, object]]:
        out = []
        while self.ctl is not None and self.ctl.poll(0):
            ident, data = self.ctl.recv_multipart()
            role = ident.decode(errors="replace")
            try:
                kind, body = unpack(data, self.run_id)
            except ProtocolError as e:
                raise ProtocolError(f"from {role}: {e}") from None
            ch = self.children.get(role)
            if ch is not None:
                if kind == Msg.ERROR:
                    ch.error = str(body)
                elif kind == Msg.STEP and isinstance(body, dict):
                    ch.step = str(body.get("step", ch.step))
                    ch.since = time.monotonic()
                elif kind == Msg.READY:
                    ch.ready = True
                elif kind == Msg.STOPPED:
                    ch.finished = True
                    ch.stopped = body or {}
            out.append((role, kind, body))
        return out

    def _write_manifest(self, state: str) -> None:
        manifest = {
            "run_id": self.run_id,
            "state": state,
            "orchestrator": {"pid": os.getpid(), "create_time": _create_time(os.getpid())},
            "pids": {ch.role: {"pid": ch.pid, "create_time": ch.create_time, "title": ch.title}
                     for ch in self.children.values() if ch.proc is not None},
            # The name is listed until it is unlinked (all children attached); emu clean
            # removes a segment of a run killed before that.
            "shm": [self.shm_name] if self.shm_linked else [],
            "endpoints": [endpoint(self.run_id, "ctl")] +
                         [endpoint(self.run_id, f"cpu{c}") for c in range(self.cfg.ncpus)],
            "run_dir": self.run_dir,
        }
        path = os.path.join(self.run_dir, "manifest.json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(manifest, f, indent=2)
        os.replace(tmp, path)


_MAIN_SPEC = importlib.machinery.ModuleSpec("__main__", None)


@contextlib.contextmanager
def _main_not_imported():
    """Start a child without making it import this process's main module.

    multiprocessing has a new child import the parent's __main__ (a script is run again,
    as __mp_main__), which a script without an `if __name__ == "__main__":` guard turns
    into a second cluster. The children's code is all importable, so the main module is
    named as one that prepare() skips. Only the pickled preparation data sees the name.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = getattr(main, "__spec__", None)
    main.__spec__ = _MAIN_SPEC
    try:
        yield
    finally:
        main.__spec__ = saved


def _create_time(pid: int) -> float:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return 0.0


def _join_all(procs: list, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))


def nic_view(nic: np.ndarray, rings: list, cpu: np.ndarray) -> np.ndarray:
    """The NIC's counters as ethtool shows them: its own block, with each queue's packets,
    bytes, drops (counted where the driver judges each frame) and interrupts (counted by
    whoever settled each), all in the ring's header, and each source's ring drops (counted
    per judging CPU)."""
    out = nic.copy()
    for q, r in enumerate(rings):
        out[nq(q, Q_PACKETS)] = r.hdr[USER0 + RX_PACKETS]
        out[nq(q, Q_BYTES)] = r.hdr[USER0 + RX_BYTES]
        out[nq(q, Q_DROPS)] = r.hdr[USER0 + RX_DROPS]
        out[nq(q, Q_IRQS)] = r.hdr[USER0 + RX_IRQS]
    base = src_drop(Drop.RING_FULL, 0)
    out[SRC_RING_DROP0:SRC_RING_DROP0 + MAX_SOURCES] = cpu[:, base:base + MAX_SOURCES].sum(axis=0)
    return out


def _ring_segs(ring) -> int:
    """Wire frames in a backlog ring (an entry may be a GRO aggregate)."""
    cons, prod = ring.cons, ring.prod
    n = prod - cons
    if n <= 0:
        return 0
    idx = (np.arange(cons, prod) & ring.mask)
    return int(ring.slots["segs"][idx].sum())
