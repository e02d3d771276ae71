"""`emu run`: start the host, let traffic flow, show progress, stop in order, report.

Ctrl-C (SIGINT) ends the traffic early and still produces the report; a second Ctrl-C skips
the drain. Whatever happens, Cluster.close() leaves no process and no segment behind.
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


class _Interrupt:
    def __init__(self):
        self.count = 0

    def __call__(self, signum, frame):
        self.count += 1


def run(cfg: Config, run_dir: str | None = None, out=sys.stdout, err=sys.stderr,
        progress: bool | None = None) -> dict:
    """Run one emulated host to completion; return the report (also in report.json)."""
    interrupt = _Interrupt()
    old = signal.signal(signal.SIGINT, interrupt)
    progress = err.isatty() if progress is None else progress
    cluster = Cluster(cfg, run_dir)
    try:
        print(f"emu: run {cluster.run_id}: {cfg.ncpus} CPUs, {cfg.nqueues} RX queues, "
              f"TDF {cfg['run.tdf']:g}, {cfg['run.duration']:g} s; tree in {cluster.run_dir}",
              file=err, flush=True)
        cluster.start()
        duration = cfg["run.duration"]
        refresh = cfg["run.refresh"]
        t_start = time.monotonic()
        next_render = t_start
        last_line = 0.0
        while not interrupt.count:
            now = time.monotonic()
            if now - t_start >= duration:
                break
            cluster.check()
            if now >= next_render:
                cluster.render()
                next_render = now + refresh
            if progress or now - last_line >= 1.0:
                _progress(cluster, now - t_start, duration, err, progress)
                last_line = now
            time.sleep(min(0.05, max(0.0, duration - (now - t_start))))
        interrupted = interrupt.count > 0
        if progress:
            err.write("\n")
        cluster.stop_traffic()
        drained = True
        if interrupt.count < 2:
            drained = cluster.drain(cfg["run.drain"])
        cluster.check()
        cluster.stop()
        snap = cluster.snapshot()
        cluster.render()
        rep = report_mod.build(snap, cluster.queues(), cluster, interrupted=interrupted,
                               drained=drained)
        with open(os.path.join(cluster.run_dir, "report.json"), "w") as f:
            json.dump(rep, f, indent=2)
        out.write(report_mod.text(rep))
        out.flush()
        return rep
    finally:
        cluster.close()
        signal.signal(signal.SIGINT, old)


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
