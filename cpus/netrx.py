"""net_rx_action and napi_poll: the NET_RX softirq handler (net/core/dev.c, 6.18).

One call shares one budget (netdev_budget) and one time limit (netdev_budget_usecs, in
jiffies) across every NAPI on the CPU's poll list, driver queues and the backlog alike. The
budget is checked only after a poll, and each poll is given the NAPI's own weight, so the
budget can go negative. time_squeeze counts a call that stopped on budget or time right
after a poll. Context: softirq.
"""

from __future__ import annotations

from collections import deque

from emu.clock import jiffies, usecs_to_jiffies
from emu.counters import NET_RX_SOFTIRQ, C

from .backlog import net_rps_send_ipi
from .napi import NAPI_STATE_DISABLE, NAPI_STATE_SCHED, Napi, napi_complete
from .net import Net
from .softnet import SoftnetData


def napi_poll(sd: SoftnetData, n: Napi, repoll: deque, poll_cost: int) -> int:
    """One poll of n; n leaves whatever list it was on; full-weight polls go to repoll."""
    weight = n.weight
    work = 0
    if n.state & NAPI_STATE_SCHED:
        sd.time.charge(poll_cost)
        n.polls += 1
        work = n.poll(n, weight)
        if work > weight:
            raise AssertionError(f"{n.name} poll returned {work} > weight {weight}")
    if work < weight:
        return work
    # work == weight: the driver did not complete, the core still owns n.
    if n.state & NAPI_STATE_DISABLE:
        napi_complete(sd, n)
        return work
    # GRO held nothing over (flushed at the end of each poll, see cpus/gro.py).
    if n in sd.poll_list:
        return work                          # the driver rescheduled it itself
    repoll.append(n)
    return work


def net_rx_action(sd: SoftnetData, net: Net) -> None:
    counters = sd.counters
    counters[C.NET_RX_ACTIONS] += 1
    knobs = net.knobs
    hz = knobs.hz
    time = sd.time
    poll_cost = net.costs.napi_poll
    time_limit = jiffies(time.now(), hz) + usecs_to_jiffies(knobs.netdev_budget_usecs, hz)
    budget = knobs.netdev_budget
    repoll: deque = deque()
    while True:                              # start:
        sd.in_net_rx_action = True
        work_list = sd.poll_list
        sd.poll_list = deque()
        goto_start = False
        while True:
            if not work_list:
                if not repoll:
                    sd.in_net_rx_action = False
                    if sd.poll_list:
                        goto_start = True    # NAPIs scheduled during this run
                        break
                    if not sd.rps_ipi_list:
                        return               # NET_RX is not re-raised
                break
            n = work_list.popleft()
            budget -= napi_poll(sd, n, repoll, poll_cost)
            sd.irq_point()                   # hard IRQs are enabled while NET_RX runs
            if budget <= 0 or jiffies(time.now(), hz) >= time_limit:
                counters[C.TIME_SQUEEZE] += 1
                break
        if not goto_start:
            break
    work_list.extend(sd.poll_list)
    work_list.extend(repoll)
    sd.poll_list = work_list
    if sd.poll_list:
        sd.softirq.raise_irqoff(NET_RX_SOFTIRQ)
    else:
        sd.in_net_rx_action = False
    net_rps_send_ipi(sd, net)
