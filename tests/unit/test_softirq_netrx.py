"""The softirq loop, net_rx_action and napi_complete_done on a virtual clock."""

from collections import deque

import pytest

from cpus.napi import (NAPI_STATE_MISSED, NAPI_STATE_SCHED, Napi, napi_complete_done,
                       napi_schedule, napi_schedule_prep)
from cpus.netrx import net_rx_action
from emu.clock import KSOFTIRQD, SOFTIRQ
from emu.counters import NET_RX_SOFTIRQ, SOFTIRQ0, C

from .harness import Host

JIFFY_NS = 4_000_000   # HZ = 250


@pytest.fixture
def cpu():
    return Host(ncpus=2).cpus[0]


def net_rx_count(cpu):
    return int(cpu.counters[SOFTIRQ0 + NET_RX_SOFTIRQ])


# -- handle_softirqs -------------------------------------------------------------------------

def test_softirq_restarts_at_most_ten_passes_then_wakes_ksoftirqd(cpu):
    calls = []

    def handler():
        calls.append(1)
        cpu.softirq.raise_irqoff(NET_RX_SOFTIRQ)      # always more work
    cpu.softirq.handlers[NET_RX_SOFTIRQ] = handler
    cpu.softirq.raise_irqoff(NET_RX_SOFTIRQ)
    cpu.softirq.handle_softirqs(False)
    assert len(calls) == 10
    assert net_rx_count(cpu) == 10
    assert cpu.tasks.ksoftirqd.runnable
    assert cpu.counters[C.KSOFTIRQD_WAKEUPS] == 1


def test_softirq_time_limit_stops_restarts(cpu):
    # MAX_SOFTIRQ_TIME = msecs_to_jiffies(2) = 1 jiffy at HZ=250
    def handler():
        cpu.time.charge(JIFFY_NS)
        cpu.softirq.raise_irqoff(NET_RX_SOFTIRQ)
    cpu.softirq.handlers[NET_RX_SOFTIRQ] = handler
    cpu.softirq.raise_irqoff(NET_RX_SOFTIRQ)
    cpu.softirq.handle_softirqs(False)
    assert net_rx_count(cpu) == 1
    assert cpu.tasks.ksoftirqd.runnable


def test_softirq_need_resched_stops_restarts(cpu):
    def handler():
        cpu.tasks.sched.need_resched = True
        cpu.softirq.raise_irqoff(NET_RX_SOFTIRQ)
    cpu.softirq.handlers[NET_RX_SOFTIRQ] = handler
    cpu.softirq.raise_irqoff(NET_RX_SOFTIRQ)
    cpu.softirq.handle_softirqs(False)
    assert net_rx_count(cpu) == 1
    assert cpu.tasks.ksoftirqd.runnable


def test_softirq_work_done_leaves_ksoftirqd_asleep(cpu):
    cpu.softirq.handlers[NET_RX_SOFTIRQ] = lambda: None
    cpu.softirq.raise_irqoff(NET_RX_SOFTIRQ)
    cpu.softirq.handle_softirqs(False)
    assert net_rx_count(cpu) == 1
    assert not cpu.tasks.ksoftirqd.runnable
    assert cpu.softirq.pending == 0


def test_ksoftirqd_time_is_charged_to_ksoftirqd(cpu):
    cpu.softirq.handlers[NET_RX_SOFTIRQ] = lambda: cpu.time.charge(1000)
    cpu.softirq.raise_softirq(NET_RX_SOFTIRQ)        # task context: wakes ksoftirqd
    assert cpu.tasks.ksoftirqd.runnable
    assert cpu.schedule()
    assert cpu.time.acct[KSOFTIRQD] >= 1000
    assert cpu.time.acct[SOFTIRQ] == 0
    assert not cpu.tasks.ksoftirqd.runnable


def test_raise_in_hardirq_does_not_wake_ksoftirqd(cpu):
    cpu.time.in_hardirq = True
    cpu.softirq.raise_softirq(NET_RX_SOFTIRQ)
    cpu.time.in_hardirq = False
    assert not cpu.tasks.ksoftirqd.runnable


# -- net_rx_action ---------------------------------------------------------------------------

def fake_napis(cpu, n, work, weight=64, cost=0):
    """n NAPIs whose poll returns `work` (a number or a callable) and stays scheduled."""
    out = []
    for i in range(n):
        def poll(napi, budget, i=i):
            cpu.time.charge(cost)
            w = work(i) if callable(work) else work
            if w < budget:
                napi_complete_done(cpu.sd, napi, w)
            return w
        napi = Napi(f"fake{i}", weight, poll)
        out.append(napi)
    return out


def schedule_all(cpu, napis):
    for n in napis:
        assert napi_schedule_prep(n)
        napi_schedule(cpu.sd, n)


def test_budget_is_shared_and_can_go_negative(cpu):
    napis = fake_napis(cpu, 5, 64)
    schedule_all(cpu, napis)
    net_rx_action(cpu.sd, cpu.net)
    assert [n.polls for n in napis] == [1, 1, 1, 1, 1]     # 4*64=256, 44 left, 5th: -20
    assert cpu.counters[C.TIME_SQUEEZE] == 1
    assert list(cpu.sd.poll_list) == napis                 # all repolled, in order
    assert cpu.softirq.pending & (1 << NET_RX_SOFTIRQ)


def test_four_full_napis_cannot_exhaust_300(cpu):
    napis = fake_napis(cpu, 4, 64)
    schedule_all(cpu, napis)
    net_rx_action(cpu.sd, cpu.net)
    assert [n.polls for n in napis] == [1, 1, 1, 1]
    assert cpu.counters[C.TIME_SQUEEZE] == 0               # the work list ran dry first
    assert list(cpu.sd.poll_list) == napis
    assert cpu.softirq.pending & (1 << NET_RX_SOFTIRQ)


def test_repoll_order_after_budget_break():
    host = Host(ncpus=2, sets=["net.core.netdev_budget=100"])
    cpu = host.cpus[0]
    a, b, c = fake_napis(cpu, 3, 64)
    schedule_all(cpu, [a, b, c])
    net_rx_action(cpu.sd, cpu.net)
    assert (a.polls, b.polls, c.polls) == (1, 1, 0)
    assert cpu.counters[C.TIME_SQUEEZE] == 1
    assert list(cpu.sd.poll_list) == [c, a, b]             # unpolled, then repolls


def test_time_squeeze_counts_even_when_last_poll_finished():
    host = Host(ncpus=2, sets=["net.core.netdev_budget=64"])
    cpu = host.cpus[0]
    (a,) = fake_napis(cpu, 1, 63)                          # completes (63 < 64)
    schedule_all(cpu, [a])
    net_rx_action(cpu.sd, cpu.net)                                     # budget 64 - 63 = 1 > 0
    assert cpu.counters[C.TIME_SQUEEZE] == 0
    (b,) = fake_napis(cpu, 1, 64)
    schedule_all(cpu, [b])
    net_rx_action(cpu.sd, cpu.net)                                     # budget hits 0 after the poll
    assert cpu.counters[C.TIME_SQUEEZE] == 1


def test_usecs_limit_squeezes(cpu):
    # netdev_budget_usecs = 8000 us = 2 jiffies at HZ=250
    napis = fake_napis(cpu, 3, 10, cost=JIFFY_NS)
    # work 10 < weight: each completes; the time limit still ends the call
    for n in napis:
        n.poll = (lambda napi, budget: (cpu.time.charge(JIFFY_NS), 64)[1])
    schedule_all(cpu, napis)
    net_rx_action(cpu.sd, cpu.net)
    assert cpu.counters[C.TIME_SQUEEZE] == 1
    assert sum(n.polls for n in napis) < 3 or cpu.time.now() >= 2 * JIFFY_NS


def test_napi_scheduled_during_run_is_polled_in_same_call(cpu):
    late = fake_napis(cpu, 1, 5)[0]

    def poll(napi, budget):
        assert napi_schedule_prep(late)
        napi_schedule(cpu.sd, late)                            # in_net_rx_action: no raise
        napi_complete_done(cpu.sd, napi, 1)
        return 1
    first = Napi("first", 64, poll)
    schedule_all(cpu, [first])
    cpu.softirq.pending = 0
    net_rx_action(cpu.sd, cpu.net)
    assert late.polls == 1
    assert not cpu.sd.poll_list
    assert not cpu.softirq.pending


def test_napi_complete_done_missed_reschedules(cpu):
    (n,) = fake_napis(cpu, 1, 0)
    assert napi_schedule_prep(n)
    assert n.state & NAPI_STATE_SCHED
    assert not napi_schedule_prep(n)                       # lost race: MISSED
    assert n.state & NAPI_STATE_MISSED
    assert napi_complete_done(cpu.sd, n, 3) is False           # IRQ must stay masked
    assert n.state & NAPI_STATE_SCHED and not n.state & NAPI_STATE_MISSED
    assert list(cpu.sd.poll_list) == [n]
    assert napi_complete_done(cpu.sd, n, 3) is True
    assert n.state == 0
    assert not cpu.sd.poll_list


def test_irq_masked_until_napi_completes():
    host = Host(ncpus=1)
    cpu = host.cpus[0]
    batch = host.frames(0, 100)
    host.dma(batch)
    q = int(batch["queue"][0])
    queues = set(int(x) for x in batch["queue"])
    for qq in queues:
        host.raise_irq(qq, 0)
    cpu.sd.irq_point()
    assert all(host.rx[qq].user(0) == 0 for qq in queues)  # unmasked after completion
    assert sum(len(r) for r in host.rx) == 0
    assert cpu.counters[C.PROCESSED] == 100
    assert q in queues


def test_hardirq_counts_and_runs_softirq_on_exit():
    host = Host(ncpus=1)
    cpu = host.cpus[0]
    batch = host.frames(0, 10)
    host.dma(batch)
    q = int(batch["queue"][0])
    host.raise_irq(q, 0)
    cpu.sd.irq_point()
    assert cpu.counters[C.IRQ_0 + q] == 1
    assert net_rx_count(cpu) >= 1
    assert cpu.time.acct[SOFTIRQ] > 0


def test_deque_type_of_poll_list(cpu):
    assert isinstance(cpu.sd.poll_list, deque)
