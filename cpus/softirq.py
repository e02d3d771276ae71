"""The softirq core of one CPU (kernel/softirq.c, non-RT, 6.5+).

handle_softirqs runs the pending vectors lowest bit first, up to MAX_SOFTIRQ_RESTART passes
and MAX_SOFTIRQ_TIME, stops restarting when need_resched(), and hands what is left to
ksoftirqd. Every invocation of a handler counts once in /proc/softirqs. Context: irq exit
(from_ksoftirqd False, charged as softirq) or the ksoftirqd task (True, charged as ksoftirqd
time, which /proc/stat shows as softirq like IRQ_TIME_ACCOUNTING does).

The scheduler is reached through two callables (need_resched, wakeup_softirqd), so this
module depends on nothing but the CPU's clock.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from emu.clock import KSOFTIRQD, SOFTIRQ, CpuTime, jiffies, msecs_to_jiffies
from emu.counters import NR_SOFTIRQS, SOFTIRQ0

MAX_SOFTIRQ_RESTART = 10
MAX_SOFTIRQ_TIME_MS = 2


def _never() -> bool:
    return False


def _nothing() -> None:
    return None


class Softirq:
    __slots__ = ("time", "counters", "hz", "entry_cost", "pending", "handlers", "serving",
                 "max_time", "need_resched", "wakeup_softirqd")

    def __init__(self, time: CpuTime, counters: np.ndarray, hz: int, entry_cost: int,
                 need_resched: Callable[[], bool] = _never,
                 wakeup_softirqd: Callable[[], None] = _nothing):
        self.time = time
        self.counters = counters
        self.hz = hz
        self.entry_cost = entry_cost
        self.pending = 0                     # local_softirq_pending()
        self.handlers: dict[int, Callable[[], None]] = {}
        self.serving = False                 # in_serving_softirq()
        self.max_time = msecs_to_jiffies(MAX_SOFTIRQ_TIME_MS, hz)
        self.need_resched = need_resched
        self.wakeup_softirqd = wakeup_softirqd

    def in_interrupt(self) -> bool:
        return self.time.in_hardirq or self.serving

    def raise_irqoff(self, nr: int) -> None:
        """__raise_softirq_irqoff: set the bit; never wakes ksoftirqd."""
        self.pending |= 1 << nr

    def raise_softirq(self, nr: int) -> None:
        """raise_softirq_irqoff: outside interrupt context the bit also wakes ksoftirqd."""
        self.pending |= 1 << nr
        if not self.in_interrupt():
            self.wakeup_softirqd()

    def handle_softirqs(self, from_ksoftirqd: bool) -> None:
        time = self.time
        ctx_saved = time.ctx
        time.ctx = KSOFTIRQD if from_ksoftirqd else SOFTIRQ
        hz = self.hz
        end = jiffies(time.now(), hz) + self.max_time
        restart = MAX_SOFTIRQ_RESTART
        pending = self.pending
        self.serving = True
        counters = self.counters
        while True:
            self.pending = 0                 # bits raised from here on wait for a restart
            time.charge(self.entry_cost)
            nr = 0
            while pending:
                if pending & 1:
                    counters[SOFTIRQ0 + nr] += 1
                    handler = self.handlers.get(nr)
                    if handler is not None:
                        handler()
                pending >>= 1
                nr += 1
            pending = self.pending
            if pending:
                if (jiffies(time.now(), hz) < end and not self.need_resched()
                        and restart - 1 > 0):
                    restart -= 1
                    continue
                self.wakeup_softirqd()
            break
        self.serving = False
        time.ctx = ctx_saved


assert NR_SOFTIRQS == 10
