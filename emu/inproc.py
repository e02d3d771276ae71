"""Several agents in one process, through the real synchronization logic: a thread per
agent and a baton, so exactly one runs at a time and the order is deterministic.

Every agent runs its own loop (cpus.agent.CpuAgent.run, nic.agent.NicAgent.run) on its own
thread, as it would in a process of its own; its Sync talks to a BatonPort instead of a
futex and ZeroMQ. When an agent blocks (its horizon, frames not written yet, nothing to do)
it hands the baton to the runnable agent with the earliest published time (ties: the lowest
index), so the agents advance in time order. An agent is runnable until it blocks, and
again once another agent wakes it. If the agent that blocks finds no runnable agent, the
configuration has deadlocked: every thread stops and run_agents raises Deadlock, naming who
waited for whom. Unit tests use this to drive whole hosts; a single-process deterministic
mode can run the same agents unchanged.

Real time plays no part: wall_ns() counts the baton's hand-overs, blocking never times out,
pacing is ignored.
"""

from __future__ import annotations

import threading
from collections import deque

from .timesync import INF, PUB, WAIT_ON, NEED, SyncBlock


class Deadlock(RuntimeError):
    pass


class Baton:
    def __init__(self, sb: SyncBlock, names: list[str]):
        self.sb = sb
        self.names = names
        n = len(names)
        self.cv = threading.Condition()           # its lock guards everything here
        self.turn = [threading.Condition(self.cv) for _ in range(n)]   # one per agent: a
        # hand-over wakes only the agent that gets the baton, not every thread
        self.current = -1
        self.blocked: list = [None] * n       # the wake sequence it blocked at; None: runnable
        self.wakes = [0] * n
        self.finished = [False] * n
        self.inbox = [deque() for _ in range(n)]
        self.error: BaseException | None = None
        self.handovers = 0

    def _runnable(self, a: int) -> bool:
        b = self.blocked[a]
        return not self.finished[a] and (b is None or self.wakes[a] != b)

    def _pick(self) -> int:
        best, best_t = -1, INF + 1
        for a in range(len(self.names)):
            if a != self.current and self._runnable(a):
                t = int(self.sb.agents[a, PUB]) >> 1
                if t < best_t:
                    best, best_t = a, t
        return best

    def _hand_over(self, me: int) -> None:
        """Give the baton to the next runnable agent (called holding cv)."""
        nxt = self._pick()
        if nxt < 0:
            if all(self.finished[a] for a in range(len(self.names)) if a != me) \
                    and self.finished[me]:
                self.current = -1
                self.notify_all()
                return
            if self._runnable(me):
                return                          # only me: keep going
            self.error = Deadlock(self._describe())
            self.current = -1
            self.notify_all()
            return
        self.current = nxt
        self.handovers += 1
        self.turn[nxt].notify()

    def notify_all(self) -> None:
        """Wake every agent's thread (called holding cv): the end, or an error."""
        for c in self.turn:
            c.notify_all()

    def _describe(self) -> str:
        parts = []
        ag = self.sb.agents
        for a, name in enumerate(self.names):
            if self.finished[a]:
                continue
            w = int(ag[a, WAIT_ON])
            on = self.names[w - 1] if w else "-"
            parts.append(f"{name} at {int(ag[a, PUB]) >> 1} waits for {on} "
                         f"(needs {int(ag[a, NEED])})")
        return "deadlock: " + "; ".join(parts)

    def wait_turn(self, me: int) -> None:
        with self.cv:
            while self.current != me and self.error is None:
                self.turn[me].wait()
            if self.error is not None:
                raise _Abort()

    def block(self, me: int, seq: int) -> None:
        with self.cv:
            if self.wakes[me] != seq:
                return
            self.blocked[me] = seq
            self._hand_over(me)
            while self.current != me and self.error is None:
                self.turn[me].wait()
            self.blocked[me] = None
            if self.error is not None:
                raise _Abort()

    def finish(self, me: int) -> None:
        with self.cv:
            self.finished[me] = True
            if self.current == me:
                self._hand_over(me)


class _Abort(BaseException):
    """Unwinds an agent's thread when another one failed or the host deadlocked."""


class BatonPort:
    """The Port of emu.timesync.Sync for an agent run by run_agents."""

    sync_until = None               # Sync._until step by step: the baton decides who runs

    def __init__(self, baton: Baton, me: int):
        self.baton = baton
        self.me = me

    def send(self, dst: int, msg) -> bool:
        self.baton.inbox[dst].append(msg)
        return True

    def recv(self, n: int) -> list:
        box = self.baton.inbox[self.me]
        return [box.popleft() for _ in range(min(n, len(box)))]

    def seq(self) -> int:
        return self.baton.wakes[self.me]

    def block(self, seq: int, timeout_ns: int) -> None:
        self.baton.block(self.me, seq)

    def wake(self, agent: int) -> None:
        self.baton.wakes[agent] += 1

    def wall_ns(self) -> int:
        return self.baton.handovers

    def sleep_until(self, wall_ns: int) -> None:
        return None

    def stopping(self) -> bool:
        return self.baton.error is not None


def run_agents(baton: Baton, agents: list, timeout_s: float = 600.0) -> None:
    """Run every agent's loop (agents[i].run, agent i of the sync block) to its end."""
    errors: list = []

    def body(i: int) -> None:
        try:
            baton.wait_turn(i)
            agents[i].run()
        except _Abort:
            pass
        except BaseException as e:        # reported by run_agents
            with baton.cv:
                if baton.error is None:
                    baton.error = e
                errors.append(e)
                baton.notify_all()
        finally:
            baton.finish(i)

    threads = [threading.Thread(target=body, args=(i,), name=f"agent-{baton.names[i]}",
                                daemon=True) for i in range(len(agents))]
    for t in threads:
        t.start()
    with baton.cv:
        baton.current = 0
        baton.notify_all()
    for t in threads:
        t.join(timeout_s)
        if t.is_alive():
            with baton.cv:
                baton.error = Deadlock(f"{t.name} still running after {timeout_s:.0f} s")
                baton.notify_all()
            raise baton.error
    if baton.error is not None:
        raise baton.error
