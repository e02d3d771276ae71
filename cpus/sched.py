"""The CPU's task scheduler: ksoftirqd/N and the user task, shared by nice weight.

A CFS-style model (kernel/sched/fair.c before 6.6; EEVDF since shares the CPU by the same
weights): each task's vruntime advances by its run time scaled by NICE_0_LOAD / weight; the
runnable task with the smallest vruntime runs; a woken task preempts the current one when it
is behind by more than the wakeup granularity, and any woken task preempts the idle task.
need_resched is what handle_softirqs tests to stop restarting (kernel/softirq.c).

CpuTasks is one CPU's side of kernel/sched/core.c: __schedule() (the tick, the context
switch, the task's turn), run_ksoftirqd, and try_to_wake_up for the task that reads the
sockets (a local wake-up, or a reschedule IPI to the reader's CPU).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from emu.clock import KSOFTIRQD, SYSTEM, USER, CpuTime, jiffies
from emu.counters import C

_USER_ON_RQ = int(C.USER_ON_RQ)

NICE_0_LOAD = 1024
# sched_prio_to_weight[], nice -20 .. 19 (kernel/sched/core.c)
PRIO_TO_WEIGHT = (
    88761, 71755, 56483, 46273, 36291, 29154, 23254, 18705, 14949, 11916,
    9548, 7620, 6100, 4904, 3906, 3121, 2501, 1991, 1586, 1277,
    1024, 820, 655, 526, 423, 335, 272, 215, 172, 137,
    110, 87, 70, 56, 45, 36, 29, 23, 18, 15,
)


def nice_to_weight(nice: int) -> int:
    return PRIO_TO_WEIGHT[nice + 20]


class Task:
    __slots__ = ("name", "nice", "weight", "vruntime", "runnable", "slice_start")

    def __init__(self, name: str, nice: int):
        self.name = name
        self.nice = nice
        self.weight = nice_to_weight(nice)
        self.vruntime = 0
        self.runnable = False
        self.slice_start = 0

    def __repr__(self) -> str:
        return f"Task({self.name}, vruntime={self.vruntime}, runnable={self.runnable})"


class Scheduler:
    def __init__(self, tasks: list[Task], latency_ns: int, min_granularity_ns: int,
                 wakeup_granularity_ns: int):
        self.tasks = tasks
        self.latency = latency_ns
        self.min_gran = min_granularity_ns
        self.wakeup_gran = wakeup_granularity_ns
        self.current: Task | None = None     # None: the idle task
        self.need_resched = False
        self.min_vruntime = 0

    def _wakeup_gran(self, task: Task) -> int:
        return self.wakeup_gran * NICE_0_LOAD // task.weight

    def wake(self, task: Task) -> bool:
        """try_to_wake_up: True if the task was sleeping."""
        if task.runnable:
            return False
        task.runnable = True
        # place_entity: a sleeper gets at most half a latency period of credit
        task.vruntime = max(task.vruntime, self.min_vruntime - self.latency // 2)
        cur = self.current
        if cur is None:
            self.need_resched = True
        elif cur is not task and cur.vruntime - task.vruntime > self._wakeup_gran(task):
            self.need_resched = True
        return True

    def sleep(self, task: Task) -> None:
        task.runnable = False

    def pick_next(self, now: int) -> Task | None:
        best = None
        for t in self.tasks:
            if not t.runnable:
                continue
            # equal vruntime (e.g. zero-cost work): the task that did not just run goes first
            if (best is None or t.vruntime < best.vruntime
                    or (t.vruntime == best.vruntime and best is self.current)):
                best = t
        self.need_resched = False
        if best is not None and best is not self.current:
            best.slice_start = now
        self.current = best
        return best

    def account(self, task: Task, ns: int) -> None:
        """update_curr: charge ns of run time to the task's vruntime."""
        if ns <= 0:
            return
        task.vruntime += ns * NICE_0_LOAD // task.weight
        runnable = [t.vruntime for t in self.tasks if t.runnable]
        if runnable:
            self.min_vruntime = max(self.min_vruntime, min(runnable))

    def tick(self, now: int) -> None:
        """scheduler_tick: preempt the current task once its slice is used up."""
        cur = self.current
        if cur is None:
            return
        others = [t for t in self.tasks if t.runnable and t is not cur]
        if not others:
            return
        total = cur.weight + sum(t.weight for t in others)
        ideal = max(self.latency * cur.weight // total, self.min_gran)
        if now - cur.slice_start >= ideal:
            self.need_resched = True


class CpuTasks:
    """The tasks of one CPU (ksoftirqd/N, the user task) and how they share it.

    ``app`` is the user task's program (cpus.app.App): its turn, its sockets. A remote
    wake-up goes through ``wake_remote(cpu)`` (the shell sends the reschedule IPI);
    ``cpu_counters`` are every CPU's counter blocks, to read a remote task's USER_ON_RQ
    (None: unknown, so every remote wake-up sends its IPI).
    """

    def __init__(self, cpu: int, time: CpuTime, counters: np.ndarray, softirq, knobs, costs,
                 cpu_counters: list | None = None):
        self.cpu = cpu
        self.time = time
        self.counters = counters
        self.softirq = softirq
        self.hz = knobs.hz
        self.switch_cost = costs.context_switch
        self.ksoftirqd = Task(f"ksoftirqd/{cpu}", knobs.ksoftirqd_nice)
        self.user = Task("user", knobs.user_nice)
        self.sched = Scheduler([self.ksoftirqd, self.user], knobs.sched_latency_ns,
                               knobs.min_granularity_ns, knobs.wakeup_granularity_ns)
        self.cpu_counters = cpu_counters
        self.app = None
        self.prev_task: Task | None = None
        self.last_jiffy = jiffies(time.now(), self.hz)
        self.wake_remote: Callable[[int], None] = lambda _cpu: None
        # act only once no peer can still touch shared state before now: USER_ON_RQ is
        # read by the other CPUs' try_to_wake_up
        self.sync: Callable[[], None] = lambda: None          # for this CPU's own state
        self.sync_readers: Callable[[int], None] = lambda _mask: None  # those CPUs (a mask)
        counters[_USER_ON_RQ] = int(self.user.runnable)

    def need_resched(self) -> bool:
        return self.sched.need_resched

    def schedule(self) -> bool:
        """Run the next task for one slice; False when the CPU goes idle."""
        time = self.time
        counters = self.counters
        now = time.now()
        j = jiffies(now, self.hz)
        if j > self.last_jiffy:
            if self.sched.current is not None:
                counters[C.LOC] += j - self.last_jiffy
                self.sched.tick(now)
            self.last_jiffy = j
        app = self.app
        task = self.sched.pick_next(now)
        if task is not self.prev_task:
            counters[C.CTXT] += 1
            if task is not None:
                time.ctx = SYSTEM
                time.charge(self.switch_cost)
            self.prev_task = task
        if task is None:
            return False
        # The task's clock excludes interrupt time (IRQ_TIME_ACCOUNTING); ksoftirqd's own
        # softirq work is its run time.
        acct = time.acct
        if task is self.ksoftirqd:
            t0 = int(acct[KSOFTIRQD])
            self.run_ksoftirqd()
            ran = int(acct[KSOFTIRQD]) - t0
        else:
            t0 = int(acct[USER]) + int(acct[SYSTEM])
            if app is None or not app.run(self):
                self.sleep_user()
            ran = int(acct[USER]) + int(acct[SYSTEM]) - t0
        self.sched.account(task, ran)
        return True

    def run_ksoftirqd(self) -> None:
        """run_ksoftirqd: one handle_softirqs(true) per turn, then cond_resched."""
        self.counters[C.KSOFTIRQD_RUNS] += 1
        if self.softirq.pending:
            self.softirq.handle_softirqs(True)
        if not self.softirq.pending:
            self.sched.sleep(self.ksoftirqd)

    def wakeup_softirqd(self) -> None:
        if self.sched.wake(self.ksoftirqd):
            self.counters[C.KSOFTIRQD_WAKEUPS] += 1

    def wake_user(self) -> None:
        if not self.counters[_USER_ON_RQ]:
            self.sync()              # a change the other CPUs can see: at this time
        self.sched.wake(self.user)
        self.counters[_USER_ON_RQ] = 1

    def sleep_user(self) -> None:
        """Block the user task unless a datagram arrived: set the state, then re-check.

        As set_current_state() before the condition check: USER_ON_RQ is cleared first, then
        each socket's lock is taken and dropped (a full barrier, pairing with the producer's
        unlock before it reads USER_ON_RQ), then the queues are checked again, so a datagram
        queued meanwhile is seen here or its producer sees the task asleep and sends the IPI.
        """
        self.sync()                  # the queues and USER_ON_RQ are shared: at this time
        self.counters[_USER_ON_RQ] = 0
        app = self.app
        if app is not None:
            for s in app.sockets:
                s.lock.acquire()
                s.lock.release()
            if app.has_queued(self.time.t):
                self.counters[_USER_ON_RQ] = 1
                return
        self.sched.sleep(self.user)

    def ttwu(self, reader: int) -> None:
        """try_to_wake_up of the task reading on CPU reader, from this CPU."""
        if reader == self.cpu:
            self.wake_user()
            return
        others = self.cpu_counters
        if others is None:
            self.wake_remote(reader)
            return
        self.sync_readers(1 << reader)  # another CPU's USER_ON_RQ: read at this time
        if not others[reader][_USER_ON_RQ]:
            # A task already on its runqueue, or already being woken, needs no IPI; the
            # waker marks it (p->__state leaves TASK_INTERRUPTIBLE) so later wakers send
            # none. The producer published the skb before it read USER_ON_RQ (its socket
            # unlock is the barrier), and the reader re-checks its queues after clearing it
            # (sleep_user).
            others[reader][_USER_ON_RQ] = 1
            self.wake_remote(reader)

