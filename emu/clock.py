"""Emulated time: one CPU's own timeline, advanced only by the work it models.

Emulated time is in integer nanoseconds and owes nothing to the wall clock: a CPU's time
moves when it is charged the modelled cost of some work (charge) or when it jumps over an
idle stretch to its next event (idle_until). How far an agent may go before it must look
at what other agents did is emu.timesync's business; the same CpuTime serves a unit test
driving one Cpu by hand and a CPU process synchronized with its peers.

Time is accounted per context (hardirq, softirq, ksoftirqd, user, system, idle; steal is
always 0, as on bare metal): the sum is the CPU's elapsed emulated time.
"""

from __future__ import annotations

import numpy as np

NSEC_PER_SEC = 1_000_000_000

# Contexts CPU time is charged to (the order of the per-CPU time counters).
HARDIRQ, SOFTIRQ, KSOFTIRQD, USER, SYSTEM, IDLE, STEAL = range(7)
CONTEXT_NAMES = ("hardirq", "softirq", "ksoftirqd", "user", "system", "idle", "steal")


def jiffies(t_ns: int, hz: int) -> int:
    return t_ns * hz // NSEC_PER_SEC


def usecs_to_jiffies(us: int, hz: int) -> int:
    """Rounds up, as the kernel's conversion does."""
    return -(-us * hz // 1_000_000)


def msecs_to_jiffies(ms: int, hz: int) -> int:
    return -(-ms * hz // 1000)


class CpuTime:
    """One CPU's emulated timeline, the context it runs in, and its time per context.

    ``acct`` is a u64 array of 7 entries (the CONTEXT order), shared memory in a run.
    ``ctx`` is the context work is charged to now (hardirq, softirq, ksoftirqd, user,
    system), ``in_hardirq`` whether a hard interrupt handler runs (the kernel keeps both in
    preempt_count).
    """

    __slots__ = ("t", "acct", "ctx", "in_hardirq")

    def __init__(self, acct: np.ndarray, start: int = 0):
        self.t = int(start)
        self.acct = acct
        self.ctx = SYSTEM
        self.in_hardirq = False

    def now(self) -> int:
        return self.t

    def charge(self, ns: int) -> None:
        """Work of ns emulated ns in the current context."""
        if ns > 0:
            self.t += ns
            self.acct[self.ctx] += ns

    def idle_until(self, t: int) -> None:
        """Nothing to run until t: the gap is idle time."""
        if t > self.t:
            self.acct[IDLE] += t - self.t
            self.t = t
