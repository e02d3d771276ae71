"""The emulated host as one object with plain verbs: start, run, stop, close.

The orchestrator owns everything a run creates: the run directory, the one shared-memory
segment, the locks, the control socket and the child processes. close() always leaves
nothing behind, whatever happened before (a crash, Ctrl-C, a failed start): it runs the
shutdown ladder (ask, wait, SIGTERM, wait, SIGKILL) on the pids it started and unlinks the
segment it created.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import secrets
import signal
import time
from dataclasses import dataclass, field

import numpy as np
import zmq

from . import procfs
from .config import Config, dumps_toml
from .counters import C
from .errors import ChildCrashed, EmuError, ProtocolError
from .protocol import Msg, endpoint, pack, unpack
from .shm import Layout, Segment, Views

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
LADDER_WAIT = 3.0


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


@dataclass
class Child:
    role: str
    proc: mp.Process
    error: str = ""
    stopped: dict = field(default_factory=dict)


class Cluster:
    def __init__(self, cfg: Config, run_dir: str | None = None, run_id: str | None = None):
        self.cfg = cfg
        self.run_id = run_id or secrets.token_hex(4)
        self.run_dir = os.path.abspath(run_dir or cfg["run.run_dir"] or os.path.join("runs", self.run_id))
        self.shm_name = f"emu-{self.run_id}"
        self.layout = Layout(cfg)
        self.children: dict[str, Child] = {}
        self.segment: Segment | None = None
        self.views: Views | None = None
        self.ctx: zmq.Context | None = None
        self.ctl = None
        self.t0 = 0
        self.btime = 0
        self.started = False
        self.closed = False
        self._mp = mp.get_context("spawn")
        from nic.affinity import effective_cpus
        self.effective_cpu = effective_cpus([cfg.irq_affinity(q) for q in range(cfg.nqueues)],
                                            (1 << cfg.ncpus) - 1)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Create the run directory, the segment and the children; start traffic."""
        from cpus import process as cpu_process
        from nic import process as nic_process
        os.makedirs(self.run_dir, exist_ok=True)
        cfg_dict = self.cfg.to_dict()
        cfg_dict["run"]["run_dir"] = self.run_dir       # children write files here
        with open(os.path.join(self.run_dir, "config.toml"), "w") as f:
            f.write(dumps_toml(cfg_dict))
        self.segment = Segment.create(self.shm_name, self.layout.size)
        self._write_manifest("starting")
        locks = {}
        for c in range(self.cfg.ncpus):
            locks[("backlog", c)] = self._mp.Lock()
        for i in range(len(self.cfg["udp.sockets"])):
            locks[("sock", i)] = self._mp.Lock()
        self.views = Views(self.cfg, self.layout, self.segment.buf, locks)
        self.views.init_tables()
        self.ctx = zmq.Context()
        self.ctl = self.ctx.socket(zmq.ROUTER)
        self.ctl.setsockopt(zmq.LINGER, 0)
        self.ctl.bind(endpoint(self.run_id, "ctl"))
        me = os.getpid()
        specs = [("nic", nic_process.main, (cfg_dict, self.run_id, self.shm_name, me))]
        for c in range(self.cfg.ncpus):
            specs.append((f"cpu{c}", cpu_process.main,
                          (c, cfg_dict, self.run_id, self.shm_name, locks, me)))
        for role, target, args in specs:
            p = self._mp.Process(target=target, args=args, name=f"emu-{role}", daemon=True)
            p.start()
            self.children[role] = Child(role, p)
            self._write_manifest("starting")
        self._wait_all(Msg.READY, READY_TIMEOUT, "to start")
        self.t0 = time.monotonic_ns() + 20_000_000   # every child starts the same instant
        self.btime = int(time.time())
        for role in self.children:
            self._send(role, Msg.START, {"t0": self.t0})
        self.started = True
        self._write_manifest("running")

    def now_emulated(self) -> int:
        return max(0, int((time.monotonic_ns() - self.t0) / self.cfg["run.tdf"]))

    def check(self) -> None:
        """Fail the run if a child died or reported an error."""
        self._drain_control()
        for ch in self.children.values():
            if ch.error:
                raise ChildCrashed(f"{ch.role} (pid {ch.proc.pid}) failed: {ch.error}")
            code = ch.proc.exitcode
            if code is not None:
                raise ChildCrashed(f"{ch.role} (pid {ch.proc.pid}) {describe_status(code)}; "
                                   f"the run is stopped")

    def stop_traffic(self) -> None:
        self._send("nic", Msg.STOP_TRAFFIC)

    def drain(self, timeout: float) -> bool:
        """Wait until every queue is empty (or timeout); True if it drained."""
        deadline = time.monotonic() + timeout
        quiet = 0
        while time.monotonic() < deadline:
            self.check()
            if self.queued_frames() == 0:
                quiet += 1
                if quiet >= 3:
                    return True
            else:
                quiet = 0
            time.sleep(0.03)
        return False

    def stop(self) -> None:
        """Ask every child to stop where it is; their counters are final after this."""
        for role in self.children:
            self._send(role, Msg.STOP)
        self._wait_all(Msg.STOPPED, STOP_TIMEOUT, "to stop", key="stopped")

    def close(self) -> None:
        """The shutdown ladder, then unlink the segment. Safe to call more than once."""
        if self.closed:
            return
        self.closed = True
        try:
            for role, ch in self.children.items():
                if ch.proc.is_alive() and self.ctl is not None:
                    try:
                        self._send(role, Msg.EXIT)
                    except zmq.ZMQError:
                        pass
            self._join_all(LADDER_WAIT)
            for ch in self.children.values():
                if ch.proc.is_alive():
                    ch.proc.terminate()
            self._join_all(LADDER_WAIT)
            for ch in self.children.values():
                if ch.proc.is_alive():
                    ch.proc.kill()
            self._join_all(LADDER_WAIT)
        finally:
            self.views = None
            if self.segment is not None:
                self.segment.close()
                self.segment.unlink()
            if self.ctl is not None:
                self.ctl.close(0)
            if self.ctx is not None:
                self.ctx.term()
            if os.path.isdir(self.run_dir):
                self._write_manifest("closed")

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
            "rx_rings": sum(len(r) for r in v.rx),
            "backlogs": sum(_ring_segs(b.ring) for b in v.backlogs),
            "process_queues": int(sum(int(c[C.PROCESS_QSEGS]) for c in v.cpu)),
            "sockets": sum(len(s.ring) for s in v.sockets),
        }

    def snapshot(self) -> "procfs.Snapshot":
        v = self.views
        cpu = np.stack([c.copy() for c in v.cpu])
        for i, b in enumerate(v.backlogs):
            cpu[i, C.DROPPED] = b.dropped
            cpu[i, C.INPUT_QLEN] = len(b.ring)
        uptime = max(int(c[C.NOW]) for c in v.cpu) if v.cpu else 0
        return procfs.Snapshot(cpu=cpu, nic=v.nic.copy(), cfg=self.cfg, btime=self.btime,
                               uptime_ns=uptime, effective_cpu=list(self.effective_cpu))

    def render(self) -> None:
        procfs.write_tree(self.run_dir, procfs.tree(self.snapshot()))

    # -- internals ---------------------------------------------------------------------------
    def _send(self, role: str, kind: Msg, body=None) -> None:
        self.ctl.send_multipart([role.encode(), pack(self.run_id, kind, body)])

    def _drain_control(self) -> list[tuple[str, Msg, object]]:
        out = []
        while self.ctl is not None and self.ctl.poll(0):
            ident, data = self.ctl.recv_multipart()
            role = ident.decode()
            try:
                kind, body = unpack(data, self.run_id)
            except ProtocolError as e:
                raise ProtocolError(f"from {role}: {e}") from None
            if kind == Msg.ERROR and role in self.children:
                self.children[role].error = str(body)
            if kind == Msg.READY and role in self.children:
                self._write_manifest("starting")
            out.append((role, kind, body))
        return out

    def _wait_all(self, kind: Msg, timeout: float, what: str, key: str | None = None) -> None:
        waiting = set(self.children)
        deadline = time.monotonic() + timeout
        while waiting:
            for role, k, body in self._drain_control():
                if k == kind and role in waiting:
                    waiting.discard(role)
                    if key == "stopped":
                        self.children[role].stopped = body or {}
            for role in list(waiting):
                ch = self.children[role]
                if ch.error:
                    raise ChildCrashed(f"{role} (pid {ch.proc.pid}) failed {what}: {ch.error}")
                if ch.proc.exitcode is not None:
                    raise ChildCrashed(f"{role} (pid {ch.proc.pid}) {describe_status(ch.proc.exitcode)} "
                                       f"before it was ready {what}")
            if not waiting:
                break
            if time.monotonic() > deadline:
                raise EmuError(f"{', '.join(sorted(waiting))} did not answer within {timeout:.0f} s {what}")
            self.ctl.poll(50)

    def _join_all(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for ch in self.children.values():
            ch.proc.join(max(0.0, deadline - time.monotonic()))

    def _write_manifest(self, state: str) -> None:
        manifest = {
            "run_id": self.run_id,
            "state": state,
            "orchestrator_pid": os.getpid(),
            "pids": {r: ch.proc.pid for r, ch in self.children.items()},
            "shm": [self.shm_name],
            "endpoints": [endpoint(self.run_id, "ctl")] +
                         [endpoint(self.run_id, f"cpu{c}") for c in range(self.cfg.ncpus)],
            "run_dir": self.run_dir,
        }
        path = os.path.join(self.run_dir, "manifest.json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(manifest, f, indent=2)
        os.replace(tmp, path)


def _ring_segs(ring) -> int:
    """Wire frames in a backlog ring (an entry may be a GRO aggregate)."""
    cons, prod = ring.cons, ring.prod
    n = prod - cons
    if n <= 0:
        return 0
    idx = (np.arange(cons, prod) & ring.mask)
    return int(ring.slots["segs"][idx].sum())
