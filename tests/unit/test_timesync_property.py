"""Property test of the time synchronization over random agent graphs.

Synthetic agents (no kernel in them) run the real emu.timesync.Sync through emu.inproc's
baton, the way CpuAgent does: take the messages due at an interrupt point (until_msgs, due),
do work that advances their own time, read and write shared data only after until(t), send
messages to their neighbours that take effect a random latency (at least the lookahead)
later, and go idle (wait_idle) when they have nothing to do. Some agents never get work:
an idle agent must never hold the others back. The graph (who may send to whom), the work,
the latencies, the timers and the run's end are drawn by hypothesis.

What must hold, whatever the graph:
- no configuration deadlocks (the baton raises Deadlock when every agent waits);
- no message is taken before the time it takes effect, and none arrives after the
  receiver's horizon had passed its time (late_msgs);
- every message is taken at most once, and by the receiver's first interrupt point at
  or after its time (until_msgs(t) promises every message due by t is in the heap);
- agents touch shared data in (emulated time, agent) order, whatever the real interleaving:
  what one reads never depends on which process the host ran first (the data horizon);
- the same graph runs the same way twice (the baton's order is deterministic);
- with quiet agents (as a CPU with no softirq pending: it acts on others only from work
  that follows an event taken, react ns or more after it; emu.timesync's SEND word), the
  same graph runs exactly as when every agent is taken to act at any time: quiet agents
  only change who waits, never what happens.

The NIC's line (the last agent) finishes at once: its effects reach the CPUs through the RX
queues' bounds, which the AgentHost tests of whole hosts exercise.
"""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emu.inproc import Baton, BatonPort, run_agents
from emu.syncblock import IPI_RPS, SyncBlock, layout_words
from emu.timesync import Stopped, Sync

L_MSG = 1000
L_DATA = 100


class World:
    """What the agents share: the stores to shared data, the reads, the message log."""

    def __init__(self):
        self.clock = 0            # real order of every action (one agent runs at a time)
        self.stores: list = []    # (real order, emulated time, agent)
        self.reads: list = []     # (real order, emulated time, agent)
        self.sent: list = []      # (src, dst, te, id)
        self.taken: list = []     # (dst, te, taken_at, id)
        self.trace: list = []
        self.points: dict = {}    # agent -> the time of its last interrupt point
        self.all_points: dict = {}

    def tick(self) -> int:
        self.clock += 1
        return self.clock


class Synth:
    """A CPU-like agent: a timer list, work per event, messages to its neighbours."""

    def __init__(self, me: int, sync: Sync, world: World, plan: dict, seed: int,
                 react: int = 0, quiet: bool = False):
        self.me = me
        self.sync = sync
        self.world = world
        self.out = plan["out"][me]
        self.rng = random.Random(seed * 1000 + me)
        self.t = 0
        self.work: list = []
        self.working = False
        self.react = react              # every piece of work after an event costs this first
        self.ids = 0
        if quiet:
            sync.quiet = lambda: not self.work and not self.working
            sync.react = react
        for te in plan["timers"][me]:
            sync.expect_own(te, IPI_RPS, -1)

    def run(self) -> None:
        sync, w = self.sync, self.world
        try:
            while True:
                stop = sync.stop_at()
                if self.t >= stop:
                    break
                sync.until_msgs(self.t)
                w.points[self.me] = self.t
                w.all_points.setdefault(self.me, []).append(self.t)
                for te, _seq, _kind, arg, _src in sync.due(self.t):
                    assert te <= self.t
                    if arg >= 0:
                        w.taken.append((self.me, te, self.t, arg))
                    w.trace.append(("take", self.me, te, self.t, arg))
                    self.work.append(self.react + self.rng.randint(50, 3000))
                if self.work:
                    self.working = True
                    self.t += self.work.pop(0)
                    self._effects()
                    self.working = False
                    continue
                goal = sync.wait_idle(stop)
                self.t = max(self.t, goal)
        except Stopped:
            pass
        self.sync.finish()

    def _effects(self) -> None:
        sync, w, rng = self.sync, self.world, self.rng
        if rng.random() < 0.5:                # touch shared data: only past the data horizon,
            if rng.random() < 0.5:            # or, for data every agent touches only from
                sync.until(self.t)            # such work, past the owner's horizon
            else:
                sync.until_owned(self.t)
            if rng.random() < 0.5:
                w.stores.append((w.tick(), self.t, self.me))
            else:
                w.reads.append((w.tick(), self.t, self.me))
        if self.out and rng.random() < 0.6:
            dst = rng.choice(self.out)
            te = self.t + L_MSG + rng.choice((0, 0, 1, 37, 500, 5000))
            sync.until(self.t)                # a send is an effect on shared state too
            mid = self.me * 1_000_000 + self.ids
            self.ids += 1
            w.sent.append((self.me, dst, te, mid))
            w.trace.append(("send", self.me, dst, te, mid))
            sync.send(dst, IPI_RPS, te, mid)


class QuietNic:
    def __init__(self, sync: Sync):
        self.sync = sync

    def run(self) -> None:
        self.sync.finish()


def run_graph(plan: dict, seed: int, react: int = 0, quiet: bool = False) -> tuple[World, list]:
    n = plan["n"]
    words = layout_words(n, 0)
    buf = bytearray(words * 8 + SyncBlock.futex_bytes(n) + 64)
    sb = SyncBlock(buf, 0, words * 8, n, 0, [])
    sb.init(plan["stop_at"])
    baton = Baton(sb, [f"cpu{i}" for i in range(n)] + ["nic"])
    world = World()
    syncs = [Sync(sb, a, L_MSG, L_DATA, BatonPort(baton, a)) for a in range(n + 1)]
    agents = [Synth(a, syncs[a], world, plan, seed, react, quiet)
              for a in range(n)] + [QuietNic(syncs[n])]
    run_agents(baton, agents, timeout_s=60.0)
    return world, syncs


@st.composite
def plans(draw):
    n = draw(st.integers(1, 6))
    out = []
    for a in range(n):
        others = [b for b in range(n) if b != a]
        out.append(draw(st.lists(st.sampled_from(others), unique=True)) if others else [])
    timers = [draw(st.lists(st.integers(0, 200_000), max_size=12)) for _ in range(n)]
    stop_at = draw(st.integers(1, 300_000))
    return {"n": n, "out": out, "timers": timers, "stop_at": stop_at}


def check(world: World, syncs: list, stop_at: int) -> None:
    assert sum(s.late_msgs for s in syncs) == 0
    for dst, te, at, _mid in world.taken:
        assert at >= te, "a message was taken before it takes effect"
    taken_ids = [mid for *_x, mid in world.taken]
    assert len(taken_ids) == len(set(taken_ids)), "a message was taken twice"
    due = {mid for _s, dst, te, mid in world.sent if te <= world.points.get(dst, -1)}
    assert due <= set(taken_ids), "a message due at an interrupt point was not taken there"
    for dst, te, at, _mid in world.taken:
        first = next(p for p in world.all_points[dst] if p >= te)
        assert at == first, "a message was taken later than the first interrupt point after it"
    # Shared data is touched in (emulated time, CPU) order, whatever the real interleaving:
    # for two agents, the access that comes first by (time, agent) came first for real.
    accesses = world.stores + world.reads
    for order_a, ta, a in accesses:
        for order_b, tb, b in accesses:
            if a != b and (ta, a) < (tb, b):
                assert order_a < order_b, (
                    f"agent {b}'s access at {tb} came before agent {a}'s at {ta}")


@settings(max_examples=int(os.environ.get("EMU_SYNC_EXAMPLES", "150")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plans(), st.integers(0, 3))
def test_no_graph_deadlocks_or_breaks_causality(plan, seed):
    world, syncs = run_graph(plan, seed)
    check(world, syncs, plan["stop_at"])


def _by_agent(trace: list) -> dict:
    out: dict = {}
    for ev in trace:
        out.setdefault(ev[1], []).append(ev)
    return out


@settings(max_examples=int(os.environ.get("EMU_SYNC_EXAMPLES", "150")) // 2, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(plans(), st.integers(0, 3), st.sampled_from([1, 300, 1500]))
def test_quiet_agents_change_who_waits_not_what_happens(plan, seed, react):
    quiet, qsyncs = run_graph(plan, seed, react, quiet=True)
    check(quiet, qsyncs, plan["stop_at"])
    loud, _ = run_graph(plan, seed, react, quiet=False)
    # Each agent's own history (what it took and sent, when); the real order across agents
    # is the host's business.
    assert _by_agent(quiet.trace) == _by_agent(loud.trace)
    assert [(t, a) for _o, t, a in quiet.stores] == [(t, a) for _o, t, a in loud.stores]
    assert [(t, a) for _o, t, a in quiet.reads] == [(t, a) for _o, t, a in loud.reads]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plans())
def test_the_same_graph_runs_the_same_way_twice(plan):
    a, _ = run_graph(plan, 1)
    b, _ = run_graph(plan, 1)
    assert a.trace == b.trace


@pytest.mark.timeout(120)
def test_a_dense_graph_with_busy_and_idle_agents():
    """Six agents, every pair connected, four with timers and two never given work: the
    idle ones must not hold the others back, and every message is taken."""
    n = 6
    plan = {"n": n, "out": [[b for b in range(n) if b != a] for a in range(n)],
            "timers": [list(range(0, 400_000, 7_919 + 101 * a)) if a < 4 else []
                       for a in range(n)],
            "stop_at": 500_000}
    world, syncs = run_graph(plan, 7)
    check(world, syncs, plan["stop_at"])
    assert len(world.taken) > 100
    assert any(dst >= 4 for dst, *_ in world.taken)    # the idle ones were woken by messages


def test_a_message_behind_the_receivers_horizon_is_counted_late():
    """The causality check is live: a message whose time the receiver's horizon had
    already passed (which the protocol never lets happen) is counted in late_msgs."""
    words = layout_words(2, 0)
    buf = bytearray(words * 8 + SyncBlock.futex_bytes(2) + 64)
    sb = SyncBlock(buf, 0, words * 8, 2, 0, [])
    sb.init(10_000)
    baton = Baton(sb, ["cpu0", "cpu1", "nic"])
    rx = Sync(sb, 0, L_MSG, L_DATA, BatonPort(baton, 0))
    tx = Sync(sb, 1, L_MSG, L_DATA, BatonPort(baton, 1))
    rx.hm = 5_000                      # as if it had been promised nothing before 5000
    tx.send(0, IPI_RPS, 3_000, 7)
    assert rx.drain() == 1
    assert rx.late_msgs == 1
    tx.send(0, IPI_RPS, 6_000, 8)
    rx.drain()
    assert rx.late_msgs == 1
    assert [e[0] for e in rx.due(10_000)] == [3_000, 6_000]
