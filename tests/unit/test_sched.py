"""The CPU's task scheduler: nice weights, wakeup preemption, ties."""

from cpus.sched import Scheduler, Task, nice_to_weight


def sched(nice_a=0, nice_b=0):
    a, b = Task("ksoftirqd/0", nice_a), Task("user", nice_b)
    return Scheduler([a, b], 6_000_000, 750_000, 1_000_000), a, b


def share(s, a, b, steps=2000, slice_ns=100_000):
    ran = {a.name: 0, b.name: 0}
    s.wake(a)
    s.wake(b)
    now = 0
    for _ in range(steps):
        t = s.pick_next(now)
        s.account(t, slice_ns)
        ran[t.name] += slice_ns
        now += slice_ns
    return ran[a.name] / (ran[a.name] + ran[b.name])


def test_equal_nice_shares_equally():
    s, a, b = sched()
    assert abs(share(s, a, b) - 0.5) < 0.01


def test_nice_weights_share_the_cpu():
    s, a, b = sched(0, 5)                  # 1024 vs 335
    expect = 1024 / (1024 + nice_to_weight(5))
    assert abs(share(s, a, b) - expect) < 0.01


def test_any_wakeup_preempts_idle():
    s, a, _b = sched()
    assert s.current is None
    s.wake(a)
    assert s.need_resched


def test_wakeup_preempts_only_past_the_granularity():
    s, a, b = sched()
    s.wake(a)
    s.pick_next(0)
    s.account(a, 500_000)                  # a is 0.5 ms ahead: below the 1 ms granularity
    s.need_resched = False
    s.wake(b)
    assert not s.need_resched
    s.sleep(b)
    s.account(a, 5_000_000)
    s.wake(b)                              # now far behind a: preempt
    assert s.need_resched


def test_ties_alternate_so_zero_cost_work_starves_nobody():
    s, a, b = sched()
    s.wake(a)
    s.wake(b)
    picks = [s.pick_next(0).name for _ in range(4)]
    assert picks == ["ksoftirqd/0", "user", "ksoftirqd/0", "user"]
