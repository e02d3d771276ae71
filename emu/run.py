"""`emu run`: start the host, let traffic flow, show progress, stop in order, report.

Ctrl-C (SIGINT), SIGTERM and SIGHUP all end the run the same way: traffic stops, the queues
drain, the children stop, the report is printed and written, and the exit status says which
signal it was (128 + the signal number). A second signal skips the drain (the report then
says drained: false). During the compile or the start nothing has run yet: the run ends at
once with nothing left behind. Whatever happens, Cluster.close() leaves no process and no
segment behind.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from . import report as report_mod
from .cluster import Cluster
from .config import Config
from .counters import SRC_DELIVERED0, C

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stop:
    """Counts the stop signals received; the first one's number gives the exit status."""

    def __init__(self):
        self.count = 0
        self.first = 0

    def __call__(self, signum, frame):
        self.count += 1
        if not self.first:
            self.first = signum

    def requested(self) -> int:
        return self.first if self.count else 0


def run(cfg: Config, run_dir: str | None = None, out=None, err=None,
        progress: bool | None = None) -> dict:
    """Run one emulated host to completion; return the report (also in report.json).

    progress: None shows live lines (in place on a terminal, one a second otherwise);
    False shows none. The report's "signal" is the signal that ended the run early, if any.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    stop = Stop()
    old = {s: signal.signal(s, stop) for s in SIGNALS}
    live = progress is not False
    inplace = err.isatty() and live

    def say(line: str) -> None:
        if live:
            err.write(f"emu: {line}\n")
            err.flush()

    cluster = Cluster(cfg, run_dir)
    try:
        print(f"emu: run {cluster.run_id}: {cfg.ncpus} CPUs, {cfg.nqueues} RX queues, "
              f"TDF {cfg['run.tdf']:g}, {cfg['run.duration']:g} s; tree in {cluster.run_dir}",
              file=err, flush=True)
        cluster.start(progress=say, stop=stop.requested)
        duration = cfg["run.duration"]
        refresh = cfg["run.refresh"]
        t_start = time.monotonic()
        next_render = t_start
        last_line = 0.0
        while not stop.count:
            now = time.monotonic()
            if now - t_start >= duration:
                break
            cluster.check()
            if now >= next_render:
                cluster.render()
                next_render = now + refresh
            if live and (inplace or now - last_line >= 1.0):
                _progress(cluster, now - t_start, duration, err, inplace)
                last_line = now
            time.sleep(min(0.05, max(0.0, duration - (now - t_start))))
        interrupted = stop.count > 0
        if inplace:
            err.write("\n")
        cluster.stop_traffic()
        drained = False
        if stop.count < 2:
            drained = cluster.drain(cfg["run.drain"], stop=lambda: stop.count >= 2)
        cluster.check()
        cluster.stop()
        snap = cluster.snapshot()
        cluster.render()
        rep = report_mod.build(snap, cluster.queues(), cluster, interrupted=interrupted,
                               drained=drained)
        rep["signal"] = signal.Signals(stop.first).name if stop.first else ""
        with open(os.path.join(cluster.run_dir, "report.json"), "w") as f:
            json.dump(rep, f, indent=2)
        out.write(report_mod.text(rep))
        out.flush()
        return rep
    finally:
        cluster.close()
        for s, h in old.items():
            signal.signal(s, h)


def exit_status(rep: dict) -> int:
    """128 + the signal that ended the run early, 1 if conservation failed, else 0."""
    if rep.get("signal"):
        return 128 + int(signal.Signals[rep["signal"]])
    return 0 if rep["conservation"]["ok"] else 1


def _progress(cluster: Cluster, elapsed: float, duration: float, err, inplace: bool) -> None:
    v = cluster.views
    gen = int(v.nic[0])
    delivered = int(sum(int(c[SRC_DELIVERED0:SRC_DELIVERED0 + 16].sum()) for c in v.cpu))
    processed = int(sum(int(c[C.PROCESSED]) for c in v.cpu))
    steal = sum(int(c[C.T_STEAL]) for c in v.cpu)
    total = sum(int(c[C.NOW]) for c in v.cpu) or 1
    line = (f"emu: {elapsed:5.1f}/{duration:g} s  emulated {cluster.now_emulated() / 1e6:8.2f} ms  "
            f"generated {gen:,}  processed {processed:,}  delivered {delivered:,}  "
            f"behind {100.0 * steal / total:4.1f}%")
    if inplace:
        err.write("\r" + line)
    else:
        err.write(line + "\n")
    err.flush()
