"""struct softnet_data: the per-CPU receive state (include/linux/netdevice.h), and the
per-CPU things dev.c reaches with this_cpu_*: the CPU's clock and softirq mask, and the
hooks through which this CPU touches the others.

Counters live in the CPU's counter block (emu.counters.C) so the orchestrator reads them
without asking; the lists are private to the CPU that owns them, as in the kernel.
``dropped`` is the exception: other CPUs charge it when their enqueue_to_backlog drops into
this CPU's queue, so it lives in this CPU's backlog header (written under the backlog lock).

The hooks are set by whoever runs the CPU (a process shell, or a test harness):
``irq_point`` takes the hard interrupts waiting for this CPU (a point where interrupts are
enabled), ``send_ipi(cpu)`` sends the RPS IPI (smp_call_function_single_async), ``ttwu(cpu)``
wakes the reading task of a CPU (try_to_wake_up), ``unmask_irq(queue)`` is the driver's
write to the NIC's interrupt mask.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

import numpy as np

from emu.clock import CpuTime


def _noop(*_args) -> None:
    return None


class SoftnetData:
    __slots__ = ("cpu", "counters", "time", "softirq", "poll_list", "in_net_rx_action",
                 "rps_ipi_list", "backlog", "input_queue", "process_queue", "flow_limit",
                 "irq_point", "send_ipi", "ttwu", "unmask_irq")

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
        self.irq_point: Callable[[], None] = _noop
        self.send_ipi: Callable[[int], None] = _noop
        self.ttwu: Callable[[int], None] = _noop
        self.unmask_irq: Callable[[int], None] = _noop
