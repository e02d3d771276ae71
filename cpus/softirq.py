"""The softirq core of one CPU (kernel/softirq.c, non-RT, 6.5+).

handle_softirqs runs the pending vectors lowest bit first, up to MAX_SOFTIRQ_RESTART passes
and MAX_SOFTIRQ_TIME, stops restarting when need_resched(), and hands what is left to
ksoftirqd. Every invocation of a handler counts once in /proc/softirqs. Context: irq exit
(from_ksoftirqd False, charged as softirq) or the ksoftirqd task (True, charged as ksoftirqd
time, which /proc/stat shows as softirq like IRQ_TIME_ACCOUNTING does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from emu.clock import KSOFTIRQD, SOFTIRQ, jiffies, msecs_to_jiffies
from emu.counters import NR_SOFTIRQS, SOFTIRQ0

if TYPE_CHECKING:
    from .kernel import Cpu

MAX_SOFTIRQ_RESTART = 10
MAX_SOFTIRQ_TIME_MS = 2


class Softirq:
    __slots__ = ("cpu", "pending", "handlers", "serving", "max_time")

    def __init__(self, cpu: "Cpu", hz: int):
        self.cpu = cpu
        self.pending = 0                     # local_softirq_pending()
        self.handlers: dict[int, Callable[[], None]] = {}
        self.serving = False                 # in_serving_softirq()
        self.max_time = msecs_to_jiffies(MAX_SOFTIRQ_TIME_MS, hz)

    def in_interrupt(self) -> bool:
        return self.cpu.in_hardirq or self.serving

    def raise_irqoff(self, nr: int) -> None:
        """__raise_softirq_irqoff: set the bit; never wakes ksoftirqd."""
        self.pending |= 1 << nr

    def raise_softirq(self, nr: int) -> None:
        """raise_softirq_irqoff: outside interrupt context the bit also wakes ksoftirqd."""
        self.pending |= 1 << nr
        if not self.in_interrupt():
            self.cpu.wakeup_softirqd()

    def handle_softirqs(self, from_ksoftirqd: bool) -> None:
        cpu = self.cpu
        ctx_saved = cpu.ctx
        cpu.ctx = KSOFTIRQD if from_ksoftirqd else SOFTIRQ
        hz = cpu.hz
        end = jiffies(cpu.time.now(), hz) + self.max_time
        restart = MAX_SOFTIRQ_RESTART
        pending = self.pending
        self.serving = True
        counters = cpu.counters
        while True:
            self.pending = 0                 # bits raised from here on wait for a restart
            cpu.charge(cpu.cost_softirq_entry)
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
                if (jiffies(cpu.time.now(), hz) < end and not cpu.need_resched()
                        and restart - 1 > 0):
                    restart -= 1
                    continue
                cpu.wakeup_softirqd()
            break
        self.serving = False
        cpu.ctx = ctx_saved


assert NR_SOFTIRQS == 10
