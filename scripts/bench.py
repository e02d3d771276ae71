#!/usr/bin/env python3
"""Benchmark: the bare shared-memory ring against the full emulated receive path.

One invocation measures, and prints one JSON object on stdout (progress goes to stderr):

  bare  a numpy producer process and a consumer process moving 64-descriptor batches of
        emu.skb.SKB through ONE shared-memory emu.ring.Ring, sequence numbers checked:
        the transport limit every emulated path is built on.
  full  the whole emulator (NIC process -> RX rings -> CPU processes -> sockets -> the user
        task reading) with every [cost] set to 0 and TDF 1, so it measures the emulator's
        own Python work, not the cost model; at 1, 2 and 4 CPUs, one RX queue and one UDP
        socket per CPU, one saturating UDP source of 64-byte frames.
  rps   at 2 CPUs, one RX queue (IRQ on CPU 0): RPS over CPUs 0-1 against no RPS.

Every figure is frames per wall-clock second over a measuring window that starts after a
warm-up (counters are read at the start and at the end of the window). Nothing is left
behind: every process is reaped and every shared-memory segment unlinked, on error and on
Ctrl-C too. See docs/benchmarks.md.

    python3 scripts/bench.py              # full benchmark (about 40 s)
    python3 scripts/bench.py --quick      # short windows (smoke test)
    python3 scripts/bench.py --seconds 10 # longer measuring windows
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
import tomllib
from multiprocessing import shared_memory
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))   # spawn children get the parent's sys.path

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from emu import report as report_mod  # noqa: E402
from emu.child import bootstrap  # noqa: E402
from emu.cluster import Cluster  # noqa: E402
from emu.config import default_text, resolve  # noqa: E402
from emu.counters import MAX_SOURCES, Q_IRQS, SRC_DELIVERED0, SRC_RING_DROP0, T0, C, N, nq  # noqa: E402
from emu.ring import Ring, ring_bytes  # noqa: E402
from emu.shm import Segment  # noqa: E402
from emu.skb import SKB  # noqa: E402

BATCH = 64
DONE = 0          # ring user word: total frames pushed, written by the producer when it is done
JOIN_TIMEOUT = 5.0


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------
# (a) the bare transport: one producer, one consumer, one shared-memory Ring


def _bare_producer(name: str, capacity: int, nframes: int, conn, parent_pid: int) -> None:
    bootstrap("emu-bench producer", parent_pid)
    seg = Segment.attach(name)           # no resource tracker: the parent owns the segment
    ring = Ring(seg.buf, SKB, capacity)
    batch = np.zeros(BATCH, dtype=SKB)   # pre-built; only the sequence numbers change
    batch["len"] = 64
    batch["segs"] = 1
    batch["hash"] = np.arange(BATCH, dtype=np.uint32) * 2654435761
    batch["head"] = np.arange(128, dtype=np.uint8)
    seqv = batch["seq"]
    ar = np.arange(BATCH, dtype=np.uint64)
    conn.send("ready")
    conn.recv()                          # go
    seq = 0
    stalls = 0
    t0 = time.perf_counter()
    while seq < nframes:
        n = min(BATCH, nframes - seq)
        np.add(ar, np.uint64(seq), out=seqv)
        off = 0
        while off < n:
            w = ring.push(batch[off:n])
            if w == 0:
                stalls += 1
                os.sched_yield()
            off += w
        seq += n
    t1 = time.perf_counter()
    ring.set_user(DONE, seq + 1)         # +1: 0 means "not done"
    conn.send({"pushed": seq, "seconds": t1 - t0, "full_ring_stalls": stalls})
    conn.recv()                          # exit when the parent has the result


def _bare_consumer(name: str, capacity: int, nframes: int, conn, parent_pid: int) -> None:
    bootstrap("emu-bench consumer", parent_pid)
    seg = Segment.attach(name)
    ring = Ring(seg.buf, SKB, capacity)
    ar = np.arange(BATCH, dtype=np.uint64)
    conn.send("ready")
    conn.recv()
    expected = 0
    received = 0
    errors = 0
    stalls = 0
    t_first = t_last = None
    while True:
        out = ring.pop(BATCH)
        n = len(out)
        if n == 0:
            if ring.user(DONE) and len(ring) == 0:
                break
            stalls += 1
            os.sched_yield()
            continue
        if t_first is None:
            t_first = time.perf_counter()
        s = out["seq"]
        if int(s[0]) != expected or not np.array_equal(s - np.uint64(expected), ar[:n]):
            errors += 1
        expected = int(s[-1]) + 1
        received += n
        t_last = time.perf_counter()
    pushed = ring.user(DONE) - 1
    conn.send({"received": received, "pushed": pushed, "seq_errors": errors,
               "seconds": (t_last - t_first) if t_first is not None else 0.0,
               "empty_ring_stalls": stalls})
    conn.recv()


def _reap(procs: list) -> None:
    for p in procs:
        p.join(JOIN_TIMEOUT)
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(JOIN_TIMEOUT)
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(JOIN_TIMEOUT)


def bare_once(nframes: int, capacity: int, shm_names: list[str]) -> dict:
    ctx = mp.get_context("spawn")
    name = f"emubench-{os.getpid()}-{secrets.token_hex(3)}"
    shm_names.append(name)
    shm = shared_memory.SharedMemory(name=name, create=True, size=ring_bytes(SKB, capacity))
    procs = []
    pipes = []
    try:
        np.ndarray((ring_bytes(SKB, capacity),), dtype=np.uint8, buffer=shm.buf)[:] = 0
        me = os.getpid()
        for target in (_bare_consumer, _bare_producer):
            parent_end, child_end = ctx.Pipe()
            p = ctx.Process(target=target, args=(name, capacity, nframes, child_end, me),
                            name=target.__name__, daemon=True)
            p.start()
            child_end.close()
            procs.append(p)
            pipes.append(parent_end)
        for c in pipes:
            if not c.poll(60):
                raise RuntimeError("a bare-ring child did not start within 60 s")
            c.recv()
        t0 = time.perf_counter()
        for c in pipes:
            c.send("go")
        limit = 120.0 + nframes / 100_000
        results = []
        for c, p in zip(pipes, procs):
            if not c.poll(limit):
                raise RuntimeError(f"{p.name} gave no result within {limit:.0f} s "
                                   f"(alive: {p.is_alive()}, exit code {p.exitcode})")
            results.append(c.recv())
        wall = time.perf_counter() - t0
        for c in pipes:
            c.send("exit")
        cons, prod = results
        if cons["received"] != nframes or cons["seq_errors"] or cons["pushed"] != nframes:
            raise RuntimeError(f"bare ring lost or reordered frames: {cons}")
        return {
            "frames": nframes,
            "frames_per_s": nframes / cons["seconds"] if cons["seconds"] > 0 else 0.0,
            "consumer_seconds": cons["seconds"],
            "producer_seconds": prod["seconds"],
            "wall_seconds": wall,
            "seq_errors": cons["seq_errors"],
            "full_ring_stalls": prod["full_ring_stalls"],
            "empty_ring_stalls": cons["empty_ring_stalls"],
        }
    finally:
        for c in pipes:
            try:
                c.send("exit")
            except (OSError, ValueError):
                pass
        _reap(procs)
        for c in pipes:
            c.close()
        shm.close()
        try:
            shm.unlink()
        except FileNotFoundError:
            pass


def bench_bare(nframes: int, capacity: int, repeats: int, shm_names: list[str]) -> dict:
    runs = []
    for i in range(repeats):
        r = bare_once(nframes, capacity, shm_names)
        log(f"bare ring run {i + 1}/{repeats}: {r['frames_per_s'] / 1e6:.2f} M frames/s "
            f"({nframes} frames, {r['consumer_seconds']:.2f} s)")
        runs.append(r)
    fps = [r["frames_per_s"] for r in runs]
    return {
        "frames_per_s": statistics.median(fps),
        "runs_frames_per_s": fps,
        "frames_per_run": nframes,
        "batch": BATCH,
        "ring_capacity": capacity,
        "seq_errors": sum(r["seq_errors"] for r in runs),
        "full_ring_stalls": [r["full_ring_stalls"] for r in runs],
        "empty_ring_stalls": [r["empty_ring_stalls"] for r in runs],
    }


# ------------------------------------------------------------------------------------------
# (b), (c) the full emulator


def cost_keys() -> list[str]:
    return list(tomllib.loads(default_text())["cost"])


def make_config(ncpus: int, rx_queues: int, rate_pps: float, flows: int, extra=()):
    """One saturating UDP source of 64-byte frames, one socket per CPU, every cost 0, TDF 1."""
    ports = [9000 + i for i in range(ncpus)]
    lines = []
    for p in ports:
        lines += ["[[udp.sockets]]", f"port = {p}", ""]
    lines += ["[[traffic.sources]]", 'name = "udp-flood"', 'pattern = "constant"',
              'proto = "udp"', f"rate_pps = {float(rate_pps)!r}", f"flows = {flows}",
              f"dst_ports = {ports}", "frame_len = 64", ""]
    sets = [f"run.cpus={ncpus}", f"ethtool.rx_queues={rx_queues}", "run.tdf=1"]
    sets += [f"cost.{k}=0" for k in cost_keys()]
    sets += list(extra)
    return resolve("\n".join(lines), sets, file_name="bench")


def _proc_cpu(cl: Cluster) -> dict:
    """Real CPU seconds (user + system) each child process has used so far."""
    out = {}
    for role, ch in cl.children.items():
        try:
            t = psutil.Process(ch.proc.pid).cpu_times()
            out[role] = t.user + t.system
        except psutil.Error:
            out[role] = 0.0
    return out


def _counters(cl: Cluster) -> dict:
    v = cl.views
    cpu = np.stack([c.copy() for c in v.cpu]).astype(np.int64)
    nic = v.nic.copy().astype(np.int64)
    return {
        "t": time.monotonic(),
        "processed": cpu[:, C.PROCESSED].copy(),
        "delivered": int(cpu[:, SRC_DELIVERED0:SRC_DELIVERED0 + MAX_SOURCES].sum()),
        "generated": int(nic[N.GENERATED]),
        "ring_full": int(nic[SRC_RING_DROP0:SRC_RING_DROP0 + MAX_SOURCES].sum()),
        "loops": cpu[:, C.LOOPS].copy(),
        "nic_loops": int(nic[N.LOOPS]),
        "irqs": int(sum(nic[nq(q, Q_IRQS)] for q in range(len(v.rx)))),
        "res": int(cpu[:, C.RES].sum()),
        "polls": int(cpu[:, C.NAPI_POLLS].sum() + cpu[:, C.BACKLOG_POLLS].sum()),
        "times": cpu[:, T0:T0 + 7].copy(),
        "proc_cpu": _proc_cpu(cl),
    }


def _sleep_checking(cl: Cluster, seconds: float) -> None:
    end = time.monotonic() + seconds
    while True:
        cl.check()
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(0.1, left))


def measure(label: str, cfg, warmup: float, window: float, drain: float, run_root: str,
            shm_names: list[str]) -> dict:
    run_id = f"bench{os.getpid()}{secrets.token_hex(2)}"
    cl = Cluster(cfg, run_dir=os.path.join(run_root, run_id), run_id=run_id)
    shm_names.append(cl.shm_name)
    try:
        t_start = time.monotonic()
        cl.start()
        startup = time.monotonic() - t_start
        _sleep_checking(cl, warmup)
        a = _counters(cl)
        _sleep_checking(cl, window)
        b = _counters(cl)
        cl.stop_traffic()
        drained = cl.drain(drain)
        cl.check()
        cl.stop()
        snap = cl.snapshot()
        rep = report_mod.build(snap, cl.queues(), cl, drained=drained)
    finally:
        cl.close()
    secs = b["t"] - a["t"]
    processed = b["processed"] - a["processed"]
    dt = b["times"] - a["times"]
    share = dt / np.maximum(dt.sum(axis=1, keepdims=True), 1)
    cons = rep["conservation"]
    out = {
        "cpus": cfg.ncpus,
        "rx_queues": cfg.nqueues,
        "window_s": round(secs, 3),
        "startup_s": round(startup, 3),
        "frames_per_s": float(processed.sum()) / secs,
        "delivered_per_s": (b["delivered"] - a["delivered"]) / secs,
        "offered_per_s": (b["generated"] - a["generated"]) / secs,
        "nic_ring_drops_per_s": (b["ring_full"] - a["ring_full"]) / secs,
        "frames_per_poll": round(float(processed.sum()) / max(1, b["polls"] - a["polls"]), 1),
        "per_cpu_frames_per_s": [round(float(x) / secs, 1) for x in processed],
        "per_cpu_loops_per_s": [round(float(x) / secs, 1) for x in (b["loops"] - a["loops"])],
        "nic_loops_per_s": round((b["nic_loops"] - a["nic_loops"]) / secs, 1),
        "irqs_per_s": round((b["irqs"] - a["irqs"]) / secs, 1),
        "resched_ipis_per_s": round((b["res"] - a["res"]) / secs, 1),
        "per_cpu_idle_share": [round(float(s[5]), 3) for s in share],
        "real_core_share": {r: round((b["proc_cpu"][r] - a["proc_cpu"].get(r, 0.0)) / secs, 3)
                            for r in b["proc_cpu"]},
        "unaccounted": cons["unaccounted"],
        "conservation_ok": cons["ok"],
        "drained": drained,
        "generated_total": cons["generated"],
        "delivered_total": cons["delivered"],
        "dropped_total": {k: v for k, v in cons["dropped"].items() if v},
        "received_rps": sum(c["received_rps"] for c in rep["cpus"]),
        "ipi_sent": sum(c["rps"]["ipi_sent"] for c in rep["cpus"]),
    }
    log(f"{label}: processed {out['frames_per_s'] / 1e3:.1f} k frames/s, delivered "
        f"{out['delivered_per_s'] / 1e3:.1f} k/s, offered {out['offered_per_s'] / 1e3:.1f} k/s "
        f"over {secs:.2f} s; unaccounted {out['unaccounted']}")
    return out


# ------------------------------------------------------------------------------------------


def machine() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "loadavg_at_start": list(os.getloadavg()),
    }


def _on_term(signum, frame):
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short windows (smoke test)")
    ap.add_argument("--seconds", type=float, default=None,
                    help="measuring window per emulator run (default 5, --quick 1)")
    ap.add_argument("--warmup", type=float, default=None,
                    help="seconds of traffic before the window opens (default 1, --quick 0.3)")
    ap.add_argument("--bare-frames", type=int, default=None,
                    help="frames per bare-ring run (default 16777216, --quick 1048576)")
    ap.add_argument("--bare-repeats", type=int, default=None,
                    help="bare-ring runs; the median is reported (default 3, --quick 1)")
    ap.add_argument("--ring", type=int, default=4096,
                    help="ring capacity of the bare ring and of every emulated RX ring "
                         "(ethtool.rx_ring; default 4096, as ethtool -G for a throughput "
                         "test: the NIC process refills rings once per turn, and a turn can "
                         "wait ~1 ms for a real core)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config setting for every emulator run (repeatable), as emu run --set")
    ap.add_argument("--rate", type=float, default=5e6,
                    help="offered load in emulated frames/s (default 5e6, more than the "
                         "emulator processes, so the RX rings overflow)")
    ap.add_argument("--flows", type=int, default=256, help="flows of the UDP source")
    ap.add_argument("--cpus", default="1,2,4", help="CPU counts for the full path")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: bare,full,rps")
    args = ap.parse_args(argv)
    quick = args.quick
    window = args.seconds if args.seconds is not None else (1.0 if quick else 5.0)
    warmup = args.warmup if args.warmup is not None else (0.3 if quick else 1.0)
    bare_frames = args.bare_frames or (1 << 20 if quick else 1 << 24)
    repeats = args.bare_repeats or (1 if quick else 3)
    drain = 1.0
    skip = {s for s in args.skip.split(",") if s}
    cpu_counts = [int(x) for x in args.cpus.split(",") if x]
    extra = [f"ethtool.rx_ring={args.ring}"] + list(args.set)

    signal.signal(signal.SIGTERM, _on_term)
    shm_names: list[str] = []
    run_root = tempfile.mkdtemp(prefix="emu-bench-")
    result: dict = {"machine": machine(), "shm_names": shm_names}
    t_all = time.monotonic()
    try:
        if "bare" not in skip:
            log(f"bare ring: {repeats} x {bare_frames} frames, batches of {BATCH}, "
                f"ring of {args.ring}")
            result["bare"] = bench_bare(bare_frames, args.ring, repeats, shm_names)
        if "full" not in skip:
            full = {}
            for n in cpu_counts:
                cfg = make_config(n, n, args.rate, args.flows, extra)
                full[str(n)] = measure(f"full path, {n} CPU(s)", cfg, warmup, window, drain,
                                       run_root, shm_names)
            result["full"] = full
        if "rps" not in skip:
            direct = measure("one queue, 2 CPUs, no RPS",
                             make_config(2, 1, args.rate, args.flows, extra),
                             warmup, window, drain, run_root, shm_names)
            rps = measure("one queue, 2 CPUs, RPS on 0-1",
                          make_config(2, 1, args.rate, args.flows,
                                      extra + ["sys.class.net.eth0.queues.rx-0.rps_cpus=3"]),
                          warmup, window, drain, run_root, shm_names)
            result["rps"] = {
                "direct": direct["frames_per_s"],
                "rps": rps["frames_per_s"],
                "ratio": (rps["frames_per_s"] / direct["frames_per_s"]
                          if direct["frames_per_s"] else 0.0),
                "direct_run": direct,
                "rps_run": rps,
            }
        bare_fps = result.get("bare", {}).get("frames_per_s")
        full2 = result.get("full", {}).get("2", {}).get("frames_per_s")
        if bare_fps and full2 is not None:
            result["ratio_full2_over_bare"] = full2 / bare_fps
        result["settings"] = {
            "quick": quick, "window_s": window, "warmup_s": warmup, "drain_s": drain,
            "rate_pps": args.rate, "flows": args.flows, "frame_len": 64, "tdf": 1,
            "costs": "all 0", "ring": args.ring, "sets": list(args.set),
        }
        result["total_seconds"] = round(time.monotonic() - t_all, 1)
    finally:
        shutil.rmtree(run_root, ignore_errors=True)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; every process was reaped and every segment unlinked")
        sys.exit(130)
