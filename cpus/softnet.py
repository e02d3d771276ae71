"""struct softnet_data: the per-CPU receive state (include/linux/netdevice.h), and the
per-CPU things dev.c reaches with this_cpu_*: the CPU's clock and softirq mask, and the
hooks through which this CPU touches the others.

Counters live in the CPU's counter block (emu.counters.C) so the orchestrator reads them
without asking; the lists are private to the CPU that owns them, as in the kernel.
``dropped`` is the exception: other CPUs charge it when their enqueue_to_backlog drops into
this CPU's queue, so it lives in this CPU's backlog header (written under the backlog lock).

The hooks are set by whoever runs the CPU (the CPU's agent, cpus.agent, in a run; a test
harness): ``sync()`` returns once no other agent can still produce an effect that reaches
this CPU before its current time (it may block; called before anything shared is read or
written), ``sync_readers(mask)`` the same before only data that the CPUs in mask touch in
any context and every other CPU only from NET_RX is touched (the receive side of the
sockets read on the CPUs in mask: their queues, rmem, the readers' run state; with mask 0,
a backlog),
``frames_ready(q, t)`` once the NIC has written every frame of RX queue q
arriving by t (True), or the queue's slots are full (False: the driver must free some),
``rx_consumed(q)`` after the driver released slots of queue q,
``irq_point`` takes the hard interrupts due on this CPU (a point where interrupts are
enabled), ``send_ipi(cpu)`` sends the RPS IPI (smp_call_function_single_async), ``ttwu(cpu)``
wakes the reading task of a CPU (try_to_wake_up), ``unmask_irq(queue, read_at)`` is the
driver's write to the NIC's interrupt mask after a poll that read every frame arrived by
read_at.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

import numpy as np

from emu.clock import CpuTime


def _noop(*_args) -> None:
    return None


def _ready(*_args) -> bool:
    return True


class SoftnetData:
    __slots__ = ("cpu", "counters", "time", "softirq", "poll_list", "in_net_rx_action",
                 "rps_ipi_list", "backlog", "input_queue", "process_queue", "flow_limit",
                 "sync", "sync_readers", "frames_ready", "rx_consumed", "irq_point", "send_ipi", "ttwu", "unmask_irq")

    def __init__(self, cpu: int, counters: np.ndarray, time: CpuTime, softirq):
        self.cpu = cpu
        self.counters = counters
        self.time = time
        self.softirq = softirq
        self.poll_list: deque = deque()      # NAPIs scheduled on this CPU, FIFO
        self.in_net_rx_action = False
        self.rps_ipi_list: list[int] = []    # remote CPUs whose backlog needs an IPI
        self.backlog = None                  # this CPU's backlog Napi (cpus.backlog)
        self.input_queue = None              # this CPU's Backlog (input_pkt_queue)
        self.process_queue = None            # cpus.backlog.ProcessQueue
        self.flow_limit = None               # cpus.flow_limit.FlowLimit, if this CPU has one
        self.sync: Callable[[], None] = _noop
        self.sync_readers: Callable[[int], None] = lambda _mask: None
        self.frames_ready: Callable[[int, int], bool] = _ready
        self.rx_consumed: Callable[[int], None] = _noop
        self.irq_point: Callable[[], None] = _noop
        self.send_ipi: Callable[[int], None] = _noop
        self.ttwu: Callable[[int], None] = _noop
        self.unmask_irq: Callable[[int, int], None] = _noop
