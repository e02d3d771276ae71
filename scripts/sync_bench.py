#!/usr/bin/env python3
"""Benchmark: how one process blocks until another publishes something, on this machine.

Ways to wait for a peer, each measured the same way:

  futex    a uint32 word per process in shared memory; the peer stores the new value and
           calls futex_wake on it (emu/futex.py); the waiter futex_waits while it is unchanged
  futex_njit  the same word and system calls, but each post (store + wake) and each wait
           (check + sleep) is one call of a compiled function (futex.publish/wait_change)
  eventfd  an eventfd per process (os.eventfd_read blocks; the peer os.eventfd_write's)
  pipe     a pipe per process (4-byte read / write)
  zmq      a ZeroMQ PULL socket per process on ipc://@... (abstract), the peer PUSHes to it
  yield    the shared word, polled with os.sched_yield() between polls
  sleep    the shared word, polled with time.sleep(50e-6) between polls

A token (a round number) goes round a ring of processes; each passes it on as soon as it has
it. With 2 processes that is a ping-pong, and one round is a round trip. With 5 processes on
this 2-core machine it is 5 agents taking turns, as the emulator's processes will under
conservative synchronisation. Figures: round latency (median, p99) as seen by the process
that starts each round, the CPU time all ring processes used (every thread, so ZeroMQ's I/O
threads count) and their context switches, per round trip (ping-pong) or per hop (ring).
Also: the CPU one process uses while it waits and nothing happens (the token held 0.2 s),
and the cost of one futex call from Python when there is nothing to wait for. With --loaded
everything is measured again while 2 busy-loop processes hog both cores.

A readable table goes to stderr, one JSON object to stdout. Every child is reaped and the
one shared-memory segment unlinked on success, error, Ctrl-C (exit 130) and SIGTERM (143).

    python3 scripts/sync_bench.py             # about 30 s
    python3 scripts/sync_bench.py --loaded    # and again under load, about 60 s
    python3 scripts/sync_bench.py --quick     # a few rounds of each (smoke test)
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import multiprocessing as mp
import os
import platform
import resource
import secrets
import signal
import sys
import time
from dataclasses import asdict, dataclass
from multiprocessing import reduction, shared_memory
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))   # spawn children get the parent's sys.path

import numpy as np  # noqa: E402
import zmq  # noqa: E402

from emu import futex  # noqa: E402
from emu.futex import futex_wait, futex_wake  # noqa: E402

MECHANISMS = ("futex", "futex_njit", "eventfd", "pipe", "zmq", "yield", "sleep")
RINGS = {"pingpong": 2, "ring": 5}
STRIDE = 16                 # uint32 words per process: a 64-byte cache line each
STOP = 0xFFFFFFFF           # the token that ends a run
MEASURED = 1 << 24          # token values from here on are measured rounds
SLEEP_S = 50e-6
WAIT_LIMIT_S = 30.0         # a ring that stalls this long has lost a process
JOIN_TIMEOUT = 5.0
PR_SET_PDEATHSIG = 1
PR_SET_TIMERSLACK = 29


def log(msg: str) -> None:
    print(f"sync_bench: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------
# Child side


def _bootstrap(parent_pid: int) -> None:
    """As the emulator's children: Ctrl-C is the parent's business, SIGTERM exits, die with
    the parent, 1 ns timer slack (so a 50 us sleep is a 50 us sleep, as in a CPU process)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(128 + s))
    libc = ctypes.CDLL(None)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
    if os.getppid() != parent_pid:
        sys.exit(1)


class _Stall:
    """Raises once a wait has gone on for WAIT_LIMIT_S (checked only now and then)."""

    def __init__(self):
        self.deadline = None

    def check(self) -> None:
        now = time.monotonic()
        if self.deadline is None:
            self.deadline = now + WAIT_LIMIT_S
        elif now > self.deadline:
            raise TimeoutError(f"no token for {WAIT_LIMIT_S:.0f} s: a ring process is gone")


def _ports(mech: str, i: int, n: int, words, base: int, efds, pipes, endpoint, ctx):
    """(wait, post, close) for ring process i: wait() -> the token; post(token) to i+1.

    Blocking reads (eventfd, pipe) have no deadline of their own: if a ring process dies,
    the parent's limit ends the run and kills the ring."""
    j = (i + 1) % n
    me, nxt = base + i * STRIDE, base + j * STRIDE
    seen = 0

    def close():
        pass

    if mech == "futex":
        def wait():
            nonlocal seen
            stall = None
            while (v := int(words[me])) == seen:
                if not futex_wait(words, me, seen, 1_000_000_000):
                    stall = stall or _Stall()
                    stall.check()
            seen = v
            return v

        def post(v):
            words[nxt] = v
            futex_wake(words, nxt)
    elif mech == "futex_njit":
        my_addr, next_addr = futex.word_address(words, me), futex.word_address(words, nxt)

        def wait():
            nonlocal seen
            stall = None
            while (v := futex.wait_change(my_addr, seen, 1_000_000_000)) == seen:
                stall = stall or _Stall()
                stall.check()
            seen = v
            return v

        def post(v):
            futex.publish(next_addr, v, 1)
    elif mech in ("yield", "sleep"):
        pause = os.sched_yield if mech == "yield" else (lambda: time.sleep(SLEEP_S))

        def wait():
            nonlocal seen
            polls = 0
            stall = None
            while (v := int(words[me])) == seen:
                pause()
                polls += 1
                if polls & 1023 == 0:
                    stall = stall or _Stall()
                    stall.check()
            seen = v
            return v

        def post(v):
            words[nxt] = v
    elif mech == "eventfd":
        mine, theirs = efds[i], efds[j]

        def wait():
            return os.eventfd_read(mine)

        def post(v):
            os.eventfd_write(theirs, v)
    elif mech == "pipe":
        mine, theirs = pipes[i][0], pipes[j][1]

        def wait():
            return int.from_bytes(os.read(mine, 4), "little")

        def post(v):
            os.write(theirs, v.to_bytes(4, "little"))
    elif mech == "zmq":
        pull = ctx.socket(zmq.PULL)
        push = ctx.socket(zmq.PUSH)
        for s in (pull, push):
            s.setsockopt(zmq.LINGER, 0)
        pull.setsockopt(zmq.RCVTIMEO, int(WAIT_LIMIT_S * 1000))
        pull.bind(endpoint(i))
        push.connect(endpoint(j))

        def wait():
            return int.from_bytes(pull.recv(), "little")

        def post(v):
            push.send(v.to_bytes(4, "little"))

        def close():
            pull.close()
            push.close()
    else:
        raise ValueError(mech)
    return wait, post, close


def _usage():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return time.process_time_ns(), r.ru_nvcsw + r.ru_nivcsw


def _lead(wait, post, warm_rounds, warm_s, rounds, seconds) -> dict:
    """Process 0: start every round, time it, decide when to stop."""
    t_end = time.perf_counter() + warm_s
    r = 0
    while r < warm_rounds and (r == 0 or time.perf_counter() < t_end):
        r += 1
        post(r)
        if wait() != r:
            raise RuntimeError("the token came back changed")
    lat = []
    cpu0, csw0 = _usage()
    t0 = time.perf_counter()
    t_end = t0 + seconds
    r = MEASURED
    while r - MEASURED < rounds and (r == MEASURED or time.perf_counter() < t_end):
        r += 1
        t = time.perf_counter_ns()
        post(r)
        if wait() != r:
            raise RuntimeError("the token came back changed")
        lat.append(time.perf_counter_ns() - t)
    wall = time.perf_counter() - t0
    cpu1, csw1 = _usage()
    post(STOP)
    wait()
    return {"lat_ns": lat, "wall_s": wall, "cpu_ns": cpu1 - cpu0, "csw": csw1 - csw0}


def _lead_idle(wait, post, idle_s: float, rounds: int) -> dict:
    """Process 0, idle mode: hold the token idle_s before each round, so the others wait."""
    post(MEASURED + 1)
    wait()
    t0 = time.perf_counter()
    for r in range(MEASURED + 2, MEASURED + 2 + rounds):
        time.sleep(idle_s)
        post(r)
        wait()
    wall = time.perf_counter() - t0
    post(STOP)
    wait()
    return {"lat_ns": [], "wall_s": wall, "cpu_ns": 0, "csw": 0}


def _follow(wait, post) -> dict:
    """Processes 1..n-1: pass the token on; measure from the first measured round to STOP."""
    start = None
    while True:
        v = wait()
        if v == MEASURED + 1:
            start = _usage()
        if v == STOP:
            end = _usage()
            post(v)
            break
        post(v)
    if start is None:
        start = end
    return {"cpu_ns": end[0] - start[0], "csw": end[1] - start[1]}


def _worker(i: int, n: int, shm_name: str, efds, pipes, tag: str, conn, parent_pid: int) -> None:
    _bootstrap(parent_pid)
    fd = os.open(os.path.join("/dev/shm", shm_name), os.O_RDWR)
    try:
        mm = mmap.mmap(fd, 0)
    finally:
        os.close(fd)
    words = np.frombuffer(mm, dtype=np.uint32)
    futex.warm()                       # compile or load now, not in a measurement
    ctx = None
    conn.send("ready")
    while (cmd := conn.recv()) is not None:
        mech, base, run, warm_rounds, warm_s, rounds, seconds, idle_s = cmd
        if mech == "zmq" and ctx is None:
            ctx = zmq.Context()
        endpoint = lambda k: f"ipc://@sync-bench-{tag}-{n}-{run}-{k}"  # noqa: E731
        wait, post, close = _ports(mech, i, n, words, base, efds, pipes, endpoint, ctx)
        try:
            conn.send("set")
            conn.recv()
            if i == 0 and idle_s:
                res = _lead_idle(wait, post, idle_s, rounds)
            elif i == 0:
                res = _lead(wait, post, warm_rounds, warm_s, rounds, seconds)
            else:
                res = _follow(wait, post)
        finally:
            close()
        conn.send(res)
    if ctx is not None:
        ctx.term()


def _hog(parent_pid: int) -> None:
    _bootstrap(parent_pid)
    while True:
        pass


# ------------------------------------------------------------------------------------------
# Parent side


class _PassFd:
    """An fd that a spawned child receives under the same number (multiprocessing passes it
    to the new process as subprocess's pass_fds would)."""

    def __init__(self, fd: int):
        self.fd = fd

    def __reduce__(self):
        return _fd_of, (reduction.DupFd(self.fd),)


def _fd_of(dup) -> int:
    return dup.detach()


def _reap(procs: list) -> None:
    procs = [p for p in procs if p.pid is not None]
    for p in procs:
        p.join(JOIN_TIMEOUT)
    for p in procs:
        if p.is_alive():
            p.terminate()
            p.join(JOIN_TIMEOUT)
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
            p.join(JOIN_TIMEOUT)


class Ring:
    """n worker processes, each with its eventfd, pipe and words; runs one mechanism at a time."""

    def __init__(self, ctx, n: int, shm_name: str, words, base: int, tag: str,
                 procs: list, fds: list):
        self.n, self.words, self.base = n, words, base
        self.conns, self.procs = [], []
        efds = [os.eventfd(0) for _ in range(n)]
        fds.extend(efds)
        pipes = [os.pipe() for _ in range(n)]
        fds.extend(fd for p in pipes for fd in p)
        me = os.getpid()
        for i in range(n):
            parent_end, child_end = ctx.Pipe()
            p = ctx.Process(target=_worker, name=f"sync-bench-{n}-{i}", daemon=True,
                            args=(i, n, shm_name, [_PassFd(f) for f in efds],
                                  [(_PassFd(r), _PassFd(w)) for r, w in pipes], tag,
                                  child_end, me))
            procs.append(p)            # the caller reaps it, even if start() fails half-way
            self.procs.append(p)
            self.conns.append(parent_end)
            p.start()
            child_end.close()

    def _recv_all(self, limit: float, what: str) -> list:
        deadline = time.monotonic() + limit
        out = []
        for c, p in zip(self.conns, self.procs):
            if not c.poll(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"{p.name} did not send {what} within {limit:.0f} s "
                                   f"(alive: {p.is_alive()}, exit code {p.exitcode})")
            try:
                out.append(c.recv())
            except EOFError:
                raise RuntimeError(f"{p.name} died (exit code {p.exitcode})") from None
        return out

    def ready(self) -> None:
        self._recv_all(120, "ready")

    def run(self, run: str, mech: str, warm_rounds: int, warm_s: float, rounds: int,
            seconds: float, idle_s: float = 0.0) -> dict:
        """One measurement; with idle_s, process 0 holds the token idle_s before each of
        `rounds` rounds and only the others' CPU time counts (what waiting costs)."""
        self.words[self.base:self.base + self.n * STRIDE] = 0
        for c in self.conns:
            c.send((mech, self.base, run, warm_rounds, warm_s, rounds, seconds, idle_s))
        self._recv_all(60, "set")
        for c in self.conns:
            c.send("go")
        res = self._recv_all(seconds + warm_s + idle_s * rounds + WAIT_LIMIT_S + 30,
                             "its result")
        return {"lat_ns": res[0]["lat_ns"], "wall_s": res[0]["wall_s"],
                "cpu_ns": sum(x["cpu_ns"] for x in res), "csw": sum(x["csw"] for x in res)}

    def stop(self) -> None:
        for c in self.conns:
            try:
                c.send(None)
            except (OSError, ValueError):
                pass


def start_hogs(ctx, hogs: list) -> None:
    for k in range(2):
        h = ctx.Process(target=_hog, args=(os.getpid(),), name=f"hog-{k}", daemon=True)
        hogs.append(h)
        h.start()
    time.sleep(1.0)                    # let them start spinning


def kill(procs: list) -> None:
    for p in procs:
        if p.pid is not None and p.is_alive():
            p.kill()
    _reap(procs)


@dataclass
class Plan:
    mechs: list
    rounds: int
    seconds: float
    repeats: int
    warm_rounds: int
    warm_s: float
    idle_rounds: int
    idle_s: float


def measure(scenario: str, rings: dict, plan: Plan) -> dict:
    raw = {(name, m): [] for name in rings for m in plan.mechs}
    run = 0
    for _ in range(plan.repeats):      # interleaved, so a burst of load hits them all
        for name, ring in rings.items():
            for mech in plan.mechs:
                run += 1
                raw[name, mech].append(ring.run(f"{scenario}{run}", mech, plan.warm_rounds,
                                                plan.warm_s, -(-plan.rounds // plan.repeats),
                                                plan.seconds / plan.repeats))
    # What one process waiting for a token costs while nothing happens.
    waiting = {}
    for mech in plan.mechs:
        run += 1
        r = rings["pingpong"].run(f"{scenario}{run}", mech, 0, 0.0, plan.idle_rounds, 0.0,
                                  plan.idle_s)
        waiting[mech] = {"cpu_share": r["cpu_ns"] / 1e9 / r["wall_s"], "seconds": r["wall_s"]}
    log(f"{scenario}: CPU used by one process waiting {plan.idle_s * 1e3:.0f} ms for a token "
        f"(fraction of a core): " +
        ", ".join(f"{m} {w['cpu_share']:.3f}" for m, w in waiting.items()))
    out = {"waiting": waiting}
    for name, ring in rings.items():
        rows = out[name] = {m: summary(raw[name, m], ring.n) for m in plan.mechs}
        log("\n" + table(f"{scenario}: {name}, {ring.n} processes on {os.cpu_count()} cores "
                         f"(latency of one round = "
                         f"{'a round trip' if ring.n == 2 else f'{ring.n} hops'})", rows, ring.n))
    return out


def call_costs(repeats: int, number: int) -> dict:
    """us per call from Python, nothing to wait for: the best of `repeats` batches."""
    w = np.zeros(16, dtype=np.uint32)
    addr = futex.word_address(w, 3)
    futex.warm()
    efd = os.eventfd(0, os.EFD_NONBLOCK)
    calls = {
        "futex_wake, no waiter": lambda: futex_wake(w, 3),
        "futex_wait, word changed (EAGAIN)": lambda: futex_wait(w, 3, 1),
        "futex_wait with timeout, word changed": lambda: futex_wait(w, 3, 1, 1_000_000),
        "wake_at, no waiter": lambda: futex.wake_at(addr),
        "wait_at, word changed": lambda: futex.wait_at(addr, 1),
        "wake_word (compiled), no waiter": lambda: futex.wake_word(addr, 1),
        "wait_word (compiled), word changed": lambda: futex.wait_word(addr, 1, -1),
        "publish (compiled), no waiter": lambda: futex.publish(addr, 0, 1),
        "wait_change (compiled), word changed": lambda: futex.wait_change(addr, 1, -1),
        "eventfd_write + eventfd_read": lambda: (os.eventfd_write(efd, 1), os.eventfd_read(efd)),
        "empty lambda (loop overhead)": lambda: None,
    }
    best = dict.fromkeys(calls, float("inf"))
    try:
        for _ in range(repeats):
            for name, fn in calls.items():
                t = time.perf_counter_ns()
                for _ in range(number):
                    fn()
                best[name] = min(best[name], (time.perf_counter_ns() - t) / number / 1e3)
    finally:
        os.close(efd)
    return best


def summary(runs: list[dict], n: int) -> dict:
    """Figures of one mechanism on one ring, pooled over its interleaved runs."""
    lat = np.concatenate([np.asarray(r["lat_ns"], dtype=np.float64) for r in runs]) / 1e3
    wall = sum(r["wall_s"] for r in runs)
    cpu_us = sum(r["cpu_ns"] for r in runs) / 1e3
    hops = len(lat) * n
    return {
        "rounds": len(lat),
        "seconds": wall,
        "round_median_us": float(np.median(lat)),
        "round_mean_us": float(lat.mean()),
        "round_p99_us": float(np.percentile(lat, 99)),
        "round_max_us": float(lat.max()),
        "hop_median_us": float(np.median(lat)) / n,
        "cpu_us_per_round": cpu_us / len(lat),
        "cpu_us_per_hop": cpu_us / hops,
        "csw_per_hop": sum(r["csw"] for r in runs) / hops,
        "cpu_cores_busy": cpu_us / 1e6 / wall,
    }


def table(title: str, rows: dict, n: int) -> str:
    unit = "round trip" if n == 2 else "hop"
    head = (f"{'mechanism':<10} {'median us':>9} {'mean us':>9} {'p99 us':>9} "
            f"{'hop med us':>10} {'CPU us/' + unit:>17} {'csw/hop':>7} {'cores busy':>10} "
            f"{'rounds':>6}")
    lines = [title, head, "-" * len(head)]
    for mech, f in rows.items():
        cpu = f["cpu_us_per_round"] if n == 2 else f["cpu_us_per_hop"]
        lines.append(f"{mech:<10} {f['round_median_us']:>9.1f} {f['round_mean_us']:>9.1f} "
                     f"{f['round_p99_us']:>9.1f} {f['hop_median_us']:>10.1f} {cpu:>17.1f} "
                     f"{f['csw_per_hop']:>7.2f} {f['cpu_cores_busy']:>10.2f} {f['rounds']:>6}")
    return "\n".join(lines)


def machine() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f
                          if ln.startswith("model name")), "")
    except OSError:
        pass
    return {"cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "cpu_model": model, "kernel": platform.release(),
            "python": platform.python_version(), "pyzmq": zmq.__version__,
            "libzmq": zmq.zmq_version(), "loadavg_at_start": list(os.getloadavg())}


def _on_term(signum, frame):
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a few rounds of each (smoke test)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="measured rounds per mechanism and ring, at most "
                         "(default 5000, --quick 50)")
    ap.add_argument("--seconds", type=float, default=None,
                    help="measuring time per mechanism and ring, at most "
                         "(default 3, --quick 0.3)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="interleaved runs the rounds and seconds are split over "
                         "(default 5, --quick 1)")
    ap.add_argument("--loaded", action="store_true",
                    help="measure again with 2 busy-loop processes hogging the cores")
    ap.add_argument("--only", default=",".join(MECHANISMS),
                    help=f"comma list of mechanisms (default all: {','.join(MECHANISMS)})")
    args = ap.parse_args(argv)
    rounds = args.rounds or (50 if args.quick else 5000)
    seconds = args.seconds if args.seconds is not None else (0.3 if args.quick else 3.0)
    repeats = args.repeats or (1 if args.quick else 5)
    warm_rounds, warm_s = (10, 0.05) if args.quick else (100, 0.1)
    idle_rounds, idle_s = (2, 0.05) if args.quick else (3, 0.2)
    mechs = [m for m in args.only.split(",") if m]
    if unknown := set(mechs) - set(MECHANISMS):
        ap.error(f"unknown mechanisms: {', '.join(sorted(unknown))}")

    signal.signal(signal.SIGTERM, _on_term)
    ctx = mp.get_context("spawn")
    tag = f"{os.getpid()}-{secrets.token_hex(3)}"
    shm_name = f"sync-bench-{tag}"
    nwords = sum(RINGS.values()) * STRIDE
    plan = Plan(mechs, rounds, seconds, repeats, warm_rounds, warm_s, idle_rounds, idle_s)
    result: dict = {"machine": machine(), "shm_names": [shm_name],
                    "settings": {**asdict(plan), "sleep_poll_s": SLEEP_S, "rings": RINGS,
                                 "loaded": args.loaded}}
    procs: list = []
    hogs: list = []
    fds: list = []
    rings: dict = {}
    shm = shared_memory.SharedMemory(name=shm_name, create=True, size=4 * nwords)
    words = None
    t_all = time.monotonic()
    try:
        words = np.ndarray((nwords,), dtype=np.uint32, buffer=shm.buf)
        words[:] = 0
        base = 0
        for name, n in RINGS.items():
            rings[name] = Ring(ctx, n, shm_name, words, base, tag, procs, fds)
            base += n * STRIDE
        for r in rings.values():
            r.ready()
        log(f"{len(procs)} ring processes up in {time.monotonic() - t_all:.1f} s")
        costs = result["call_us"] = call_costs(*((3, 2000) if args.quick else (15, 20000)))
        log("one call from Python, nothing to wait for (best batch, us per call):\n" +
            "\n".join(f"  {k:<40} {v:6.2f}" for k, v in costs.items()))
        for scenario in ["quiet"] + (["loaded"] if args.loaded else []):
            if scenario == "loaded":
                start_hogs(ctx, hogs)
            result[scenario] = measure(scenario, rings, plan)
            kill(hogs)
        result["total_seconds"] = round(time.monotonic() - t_all, 1)
    finally:
        kill(hogs)
        for r in rings.values():
            r.stop()
        _reap(procs)
        for fd in fds:
            os.close(fd)
        rings.clear()                  # no view of the segment may outlive its mapping
        words = None
        shm.close()
        try:
            shm.unlink()
        except FileNotFoundError:
            pass
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
