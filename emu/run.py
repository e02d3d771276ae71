"""`emu run`: start the host, let it run to the end of its emulated time, show progress,
stop in order, report.

The run ends when every agent has reached run.duration + run.drain of emulated time (the
sources stop at run.duration; the drain lets the queues empty). However long that takes on
this host is the slowdown the report shows.

Ctrl-C (SIGINT), SIGTERM and SIGHUP all end the run the same way: every agent stops at the
emulated time the furthest CPU has reached, the children stop, the report is printed and
written, and the exit status says which signal it was (128 + the signal number). A second
signal stops every child where it is (the report then says drained: false). During the
compile or the start nothing has run yet: the run ends at once with nothing left behind.
Whatever happens, Cluster.close() leaves no process and no segment behind.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from . import placement
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
        tdf = cfg["run.tdf"]
        pace = f", paced at TDF {tdf:g}" if tdf else ""
        print(f"emu: run {cluster.run_id}: {cfg.ncpus} CPUs, {cfg.nqueues} RX queues, "
              f"{_ms(cfg.duration_ns)} of traffic + {_ms(cfg.drain_ns)} drain (emulated){pace}; "
              f"tree in {cluster.run_dir}", file=err, flush=True)
        cluster.start(progress=say, stop=stop.requested)
        say(f"placement ({cfg['run.placement']}): "
            f"{placement.describe(cluster.pins, cluster.pins_refused)}")
        refresh = cfg["run.refresh"]
        t_start = time.monotonic()
        next_render = t_start
        last_line = 0.0
        watch = _Stall()
        asked = 0
        while not cluster.finished():
            now = time.monotonic()
            if stop.count and not asked:
                asked = 1
                t, end = cluster.end_traffic(cluster.latest())
                say(f"traffic stops at {_ms(t)} emulated, then drains until {_ms(end)} "
                    f"(again to stop at once)")
            if stop.count >= 2:
                break
            cluster.check()
            if now >= next_render:
                cluster.render()
                next_render = now + refresh
            reached = cluster.reached()
            stalled = watch.update(reached, now)
            if live and (inplace or now - last_line >= 1.0):
                _progress(cluster, reached, now - t_start, err, inplace,
                          cluster.held_by() if stalled else None)
                last_line = now
            time.sleep(0.02)
        wall = time.monotonic() - t_start
        cpu_s = cluster.cpu_seconds()
        interrupted = stop.count > 0
        if inplace:
            err.write("\n")
        drained = cluster.finished() and cluster.queued_frames() == 0
        cluster.check()
        cluster.stop()
        snap = cluster.snapshot()
        cluster.render()
        rep = report_mod.build(snap, cluster.queues(), cluster, interrupted=interrupted,
                               drained=drained, wall_s=wall, cpu_s=cpu_s)
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


STALL_S = 2.0       # wall seconds without progress before the line names who holds it


class _Stall:
    """Whether emulated time has stood still for STALL_S wall seconds."""

    def __init__(self):
        self.t = -1
        self.since = time.monotonic()

    def update(self, reached: int, now: float) -> bool:
        if reached != self.t:
            self.t = reached
            self.since = now
            return False
        return now - self.since >= STALL_S


def _ms(ns: int) -> str:
    return f"{ns / 1e6:g} ms" if ns < 10**10 else f"{ns / 1e9:g} s"


def exit_status(rep: dict) -> int:
    """128 + the signal that ended the run early, 1 if conservation failed, else 0."""
    if rep.get("signal"):
        return 128 + int(signal.Signals[rep["signal"]])
    return 0 if rep["conservation"]["ok"] else 1


def _progress(cluster: Cluster, reached: int, elapsed: float, err, inplace: bool,
              held) -> None:
    v = cluster.views
    gen = int(v.nic[0])
    delivered = int(sum(int(c[SRC_DELIVERED0:SRC_DELIVERED0 + 16].sum()) for c in v.cpu))
    processed = int(sum(int(c[C.PROCESSED]) for c in v.cpu))
    end = cluster.stop_at()
    slow = f"{elapsed / (reached / 1e9):,.0f}x" if reached > 0 else "-"
    line = (f"emu: emulated {reached / 1e6:8.3f}/{end / 1e6:g} ms  wall {elapsed:5.1f} s  "
            f"slowdown {slow}  generated {gen:,}  processed {processed:,}  "
            f"delivered {delivered:,}")
    if held is not None:
        who, what = held
        line += f"  -- no progress for {STALL_S:.0f} s: waiting for {who}, {what}"
    if inplace:
        err.write("\r" + line + "\x1b[K")      # in place, a stall too: no scrolling flood
    else:
        err.write(line + "\n")
    err.flush()
