"""Emulated time. One contract, two clocks: virtual for tests, dilated wall clock for runs.

Emulated time is in integer nanoseconds. A run's clock is real CLOCK_MONOTONIC since the
run's start (t0, shared by every process) divided by the time dilation factor (TDF).

CpuTime is one emulated CPU's own timeline: work advances it by its modelled cost
(charge), so a CPU cannot finish work faster than the cost table allows. sync() lines the
timeline up with the clock: if the CPU ran ahead of the clock it waits (through an injected
wait function, so no module here sleeps); if the clock ran ahead while the CPU was busy, the
gap is time the real machine did not give the emulated CPU, accounted as steal, which is the
fidelity figure (share of time behind).
"""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np

NSEC_PER_SEC = 1_000_000_000

# Contexts CPU time is charged to (the order of the per-CPU time counters).
HARDIRQ, SOFTIRQ, KSOFTIRQD, USER, SYSTEM, IDLE, STEAL = range(7)
CONTEXT_NAMES = ("hardirq", "softirq", "ksoftirqd", "user", "system", "idle", "steal")


class Clock(Protocol):
    def now(self) -> int: ...


class VirtualClock:
    """A clock tests move by hand (or that CpuTime moves, like trio's autojump clock)."""

    def __init__(self, start: int = 0):
        self.t = start

    def now(self) -> int:
        return self.t

    def advance(self, ns: int) -> None:
        self.t += ns

    def wait_until(self, t: int) -> None:
        if t > self.t:
            self.t = t


class DilatedClock:
    """Real monotonic time since t0, divided by the TDF. The time source is injected."""

    def __init__(self, t0_ns: int, tdf: float, monotonic_ns: Callable[[], int]):
        self.t0 = t0_ns
        self.tdf = float(tdf)
        self._mono = monotonic_ns

    def now(self) -> int:
        return int((self._mono() - self.t0) / self.tdf)

    def real_ns(self, emulated_ns: int) -> int:
        return int(emulated_ns * self.tdf)


def jiffies(t_ns: int, hz: int) -> int:
    return t_ns * hz // NSEC_PER_SEC


def usecs_to_jiffies(us: int, hz: int) -> int:
    """Rounds up, as the kernel's conversion does."""
    return -(-us * hz // 1_000_000)


def msecs_to_jiffies(ms: int, hz: int) -> int:
    return -(-ms * hz // 1000)


class CpuTime:
    """One CPU's emulated timeline, the context it is running in, and its time per context.

    ``acct`` is a u64 array of 7 entries (the CONTEXT order), shared memory in a run.
    ``ctx`` is the context work is charged to now (hardirq, softirq, ksoftirqd, user,
    system), ``in_hardirq`` whether a hard interrupt handler runs (the kernel keeps both in
    preempt_count). ``wait`` blocks until the clock reads at least its argument (the shell
    sleeps; the virtual clock jumps). ``slack`` is how far ahead of the clock a CPU may run
    before it waits: real sleeps are coarse, so waiting for every nanosecond would cost more
    than it models.
    """

    def __init__(self, clock: Clock, acct: np.ndarray, wait: Callable[[int], None] | None = None,
                 slack: int = 0):
        self.clock = clock
        self.acct = acct
        self.t = clock.now()
        self.wait = wait if wait is not None else getattr(clock, "wait_until")
        self.slack = slack
        self.worst_lag = 0
        self.ctx = SYSTEM
        self.in_hardirq = False

    def now(self) -> int:
        return self.t

    def charge(self, ns: int) -> None:
        """Work of ns emulated ns in the current context."""
        if ns <= 0:
            return
        self.t += ns
        self.acct[self.ctx] += ns
        if self.t > self.clock.now() + self.slack:
            self.wait(self.t)

    def sync(self, busy: bool) -> int:
        """Catch the timeline up with the clock; return the gap charged (idle or steal)."""
        now = self.clock.now()
        gap = now - self.t
        if gap > 0:
            self.acct[STEAL if busy else IDLE] += gap
            self.t = now
            if busy and gap > self.worst_lag:
                self.worst_lag = gap
            return gap
        return 0
