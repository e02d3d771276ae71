"""The CPU's task scheduler: ksoftirqd/N and the user task, shared by nice weight.

A CFS-style model (kernel/sched/fair.c before 6.6; EEVDF since shares the CPU by the same
weights): each task's vruntime advances by its run time scaled by NICE_0_LOAD / weight; the
runnable task with the smallest vruntime runs; a woken task preempts the current one when it
is behind by more than the wakeup granularity, and any woken task preempts the idle task.
need_resched is what handle_softirqs tests to stop restarting (kernel/softirq.c).
"""

from __future__ import annotations

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
