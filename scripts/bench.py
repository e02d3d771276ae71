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
import io
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
from multiprocessing import shared_memory
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))   # spawn children get the parent's sys.path

import numpy as np  # noqa: E402

from emu import scenarios  # noqa: E402
from emu.child import bootstrap  # noqa: E402
from emu.config import resolve  # noqa: E402
from emu.counters import IRQ0, N, NET_RX_SOFTIRQ, SOFTIRQ0  # noqa: E402
from emu.run import run  # noqa: E402
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
# (b) the emulated host: slowdown of each built-in config, and what bounds it

CONFIGS = ["default", "elephant-mice", "gro-bulk", "rfs-pinned", "rps-spread"]


def config_for(name: str, duration: str | None, extra=()):
    text = None if name == "default" else scenarios.text(name)
    sets = ["run.cpus=4"] + ([f"run.duration={duration}"] if duration else []) + list(extra)
    return resolve(text, sets, file_name=name)


def slowdown_once(name: str, cfg, run_root: str) -> dict:
    """One whole run (every process started, reaped and unlinked by emu.run), its figures."""
    t0 = time.perf_counter()
    rep = run(cfg, run_dir=os.path.join(run_root, name), out=io.StringIO(), progress=False)
    wall = time.perf_counter() - t0
    t = rep["time"]
    gen = rep["conservation"]["generated"]
    cpu_s = sum(a["cpu_s"] for a in t["agents"])
    waits = sum(a["waits"] for a in t["agents"])
    events = sum(c["hardirqs"] + c["net_rx_softirqs"] for c in rep["cpus"])
    out = {
        "emulated_ms": t["emulated_ms"],
        "wall_s": t["wall_s"],
        "wall_s_with_start_and_exit": round(wall, 2),
        "slowdown": t["slowdown"],
        "frames": gen,
        "processed": sum(c["processed"] for c in rep["cpus"]),
        "hardirqs": sum(c["hardirqs"] for c in rep["cpus"]),
        "net_rx": sum(c["net_rx_softirqs"] for c in rep["cpus"]),
        "cpu_s_total": round(cpu_s, 2),
        "cpu_share_of_2_cores": round(cpu_s / (2 * t["wall_s"]), 3) if t["wall_s"] else None,
        "cpu_us_per_frame": round(1e6 * cpu_s / gen, 2) if gen else None,
        "cpu_us_per_softirq_or_irq": round(1e6 * cpu_s / events, 1) if events else None,
        "sync_waits": waits,
        "wall_us_per_sync_wait": round(1e6 * t["wall_s"] / waits, 1) if waits else None,
        "agents": {a["agent"]: {"waited_share": a["waited_share"],
                                "idle_share": a["idle_share"], "waits": a["waits"],
                                "cpu_s": a["cpu_s"], "held_by": a["held_by"]}
                   for a in t["agents"]},
        "unaccounted": rep["conservation"]["unaccounted"],
        "causality": rep["causality"],
    }
    if out["unaccounted"] or any(rep["causality"].values()):
        raise RuntimeError(f"{name}: conservation or causality failed: {out}")
    return out


def bench_slowdown(names: list[str], duration: str | None, extra, run_root: str) -> dict:
    res = {}
    for name in names:
        cfg = config_for(name, duration, extra)
        log(f"{name}: {cfg.duration_ns / 1e6:g} ms of traffic + {cfg.drain_ns / 1e6:g} ms "
            f"drain, 4 CPUs, as fast as the host allows ...")
        r = slowdown_once(name, cfg, run_root)
        busiest = max(r["agents"].items(), key=lambda kv: kv[1]["cpu_s"])[0]
        log(f"{name}: slowdown {r['slowdown']:.0f} ({r['wall_s']:.1f} wall s for "
            f"{r['emulated_ms']:.1f} emulated ms), {r['cpu_us_per_frame']} CPU us per frame, "
            f"{r['sync_waits']} sync waits, busiest agent {busiest}")
        res[name] = r
    return res


def bench_inproc(duration_ns: int, profile_rows: int) -> dict:
    """The default mix with every agent in this one process, advanced in time order through
    the same synchronization (emu.inproc's baton), pinned to one core: no waiting on other
    processes, so its slowdown is the Python work and the baton's thread hand-overs. A second, profiled
    run of a quarter of the span says where that work goes (one profiler per agent thread,
    merged: the baton runs one thread at a time)."""
    import cProfile
    import pstats

    from tests.unit.harness import AgentHost

    def one(span_ns: int, profile: bool):
        host = AgentHost(ncpus=4, duration_ns=span_ns, drain_ns=1_000_000)
        profs = []
        if profile:
            for ag in host.agents:
                prof = cProfile.Profile()
                profs.append(prof)
                ag.run = (lambda run, prof: lambda: prof.runcall(run))(ag.run, prof)
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        host.run(timeout_s=600.0)
        return host, time.perf_counter() - t0, time.process_time() - cpu0, profs

    from emu.jit import warm_all
    warm_all()                  # load every kernel first, as a CPU process does before READY
    one(1_000_000, False)       # and a first short run: the first calls load lazily
    # On one core, as a run's CPU processes are (run.placement = pack): a baton hand-over
    # between threads on two cores wakes the other core each time.
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {max(allowed)})
    try:
        host, wall, cpu, _ = one(duration_ns, False)
    finally:
        os.sched_setaffinity(0, allowed)
    frames = int(host.views.nic[N.GENERATED])
    events = sum(int(c[IRQ0:IRQ0 + host.cfg.nqueues].sum()) + int(c[SOFTIRQ0 + NET_RX_SOFTIRQ])
                 for c in host.views.cpu)
    _, pwall, _, profs = one(duration_ns // 4, True)
    s = io.StringIO()
    st = pstats.Stats(profs[0], stream=s)
    for p in profs[1:]:
        st.add(p)
    st.sort_stats("tottime").print_stats(profile_rows + 8)
    # A thread waiting for the baton shows as lock time while another runs: not work.
    rows = [ln for ln in s.getvalue().splitlines() if ln.strip()
            and "_thread.lock" not in ln and "threading.py" not in ln and "inproc.py" not in ln]
    emulated_s = (duration_ns + 1_000_000) / 1e9
    return {
        "emulated_ms": round(emulated_s * 1e3, 3),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "slowdown": round(wall / emulated_s, 1),
        "frames": frames,
        "hardirqs_and_net_rx": events,
        "cpu_us_per_frame": round(1e6 * cpu / frames, 2) if frames else None,
        "cpu_us_per_softirq_or_irq": round(1e6 * cpu / events, 1) if events else None,
        "handovers": int(host.baton.handovers),
        "profiled_wall_s": round(pwall, 2),
        "profile_top_tottime": rows[:profile_rows + 4],
    }


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
    ap.add_argument("--quick", action="store_true", help="short runs (smoke test)")
    ap.add_argument("--duration", default=None, metavar="TIME",
                    help="emulated traffic per run (default: each config's own, 200ms; "
                         "--quick 3ms)")
    ap.add_argument("--configs", default=",".join(CONFIGS),
                    help=f"comma list of configs to time (default {','.join(CONFIGS)})")
    ap.add_argument("--inproc-ms", type=float, default=None,
                    help="emulated ms of the one-process run (default 10, --quick 1)")
    ap.add_argument("--bare-frames", type=int, default=None,
                    help="frames per bare-ring run (default 16777216, --quick 1048576)")
    ap.add_argument("--bare-repeats", type=int, default=None,
                    help="bare-ring runs; the median is reported (default 3, --quick 1)")
    ap.add_argument("--ring", type=int, default=4096, help="capacity of the bare ring")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config setting for every emulator run (repeatable), as emu run --set")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: bare,slowdown,inproc")
    args = ap.parse_args(argv)
    quick = args.quick
    duration = args.duration or ("3ms" if quick else None)
    inproc_ms = args.inproc_ms if args.inproc_ms is not None else (1.0 if quick else 10.0)
    bare_frames = args.bare_frames or (1 << 20 if quick else 1 << 24)
    repeats = args.bare_repeats or (1 if quick else 3)
    skip = {s for s in args.skip.split(",") if s}
    names = [n for n in args.configs.split(",") if n]
    for n in names:
        if n != "default" and n not in scenarios.names():
            log(f"--configs: no config {n!r} (allowed: default, {', '.join(scenarios.names())})")
            return 2
    for n in names:    # refuse bad --duration/--set before anything starts
        config_for(n, duration, args.set)

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
        if "slowdown" not in skip:
            result["slowdown"] = bench_slowdown(names, duration, args.set, run_root)
        if "inproc" not in skip:
            log(f"one process, default mix: {inproc_ms:g} ms + 1 ms drain, agents in time "
                f"order (then a profiled quarter of it) ...")
            ip = bench_inproc(int(inproc_ms * 1e6), 15)
            log(f"one process: slowdown {ip['slowdown']:.0f}, {ip['cpu_us_per_softirq_or_irq']} "
                f"CPU us per hardirq or NET_RX, {ip['handovers']} handovers")
            result["inproc"] = ip
        sd = result.get("slowdown", {}).get("default")
        ip = result.get("inproc")
        if sd and ip:
            # What bounds the multiprocess run: the same work done sequentially in one
            # process costs ip's slowdown; the rest is waiting and handing over.
            result["bounds"] = {
                "default_slowdown": sd["slowdown"],
                "one_process_slowdown": ip["slowdown"],
                "multiprocess_over_one_process": round(sd["slowdown"] / ip["slowdown"], 2),
                "cpu_us_per_event_multiprocess": sd["cpu_us_per_softirq_or_irq"],
                "cpu_us_per_event_one_process": ip["cpu_us_per_softirq_or_irq"],
                "cores_used_multiprocess": sd["cpu_share_of_2_cores"] * 2
                if sd["cpu_share_of_2_cores"] is not None else None,
            }
        result["settings"] = {"quick": quick, "duration": duration or "each config's own",
                              "cpus": 4, "sets": list(args.set), "inproc_ms": inproc_ms}
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
