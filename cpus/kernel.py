"""One emulated CPU: the composition root of its kernel objects, and its interrupt entries.

Pure logic over plain data: rings, backlogs and sockets are objects over buffers (shared
memory in a run, private memory in tests), time is a CpuTime. A Cpu builds this CPU's
pieces, each in the module named for it, and wires them together:

    sd       cpus.softnet.SoftnetData   poll list, backlog NAPI, queues, hooks
    softirq  cpus.softirq.Softirq       pending vectors, handle_softirqs (NET_RX registered)
    driver   cpus.driver.RxDriver       one NAPI per RX queue and its poll
    tasks    cpus.sched.CpuTasks        ksoftirqd, the user task, __schedule, ttwu
    app      cpus.app.App               the user task's program (reads its sockets)

What stays here is the hard interrupt entry of each vector this CPU takes (the RX queues'
MSI-X vectors, the RPS IPI, the reschedule IPI), between irq_enter and irq_exit.

The hooks through which it reaches other agents (``sd.sync``, ``sd.irq_point``,
``sd.send_ipi``, ``sd.unmask_irq``, ``tasks.wake_remote`` ...) are set by the CPU's agent
(cpus.agent) in a run, or by a test harness; ``app.on_read`` sees what the application read.
"""

from __future__ import annotations

import numpy as np

from emu.clock import HARDIRQ, CpuTime
from emu.counters import IRQ0, NET_RX_SOFTIRQ, C
from emu.ring import Ring, BL_STATE, USER0

from .app import App
from .backlog import ProcessQueue
from .dev import process_backlog
from .driver import RxDriver
from .flow_limit import FlowLimit
from .napi import Napi, napi_schedule, napi_schedule_prep
from .net import Net
from .netrx import net_rx_action
from .sched import CpuTasks
from .softirq import Softirq
from .softnet import SoftnetData


class Cpu:
    def __init__(self, cpu_id: int, net: Net, time: CpuTime, counters: np.ndarray,
                 rx_rings: list[Ring]):
        self.id = cpu_id
        self.net = net
        self.time = time
        self.counters = counters
        knobs, costs = net.knobs, net.costs
        self.softirq = softirq = Softirq(time, counters, knobs.hz, costs.softirq_entry)
        self.sd = sd = SoftnetData(cpu_id, counters, time, softirq)
        self.tasks = tasks = CpuTasks(cpu_id, time, counters, softirq, knobs, costs,
                                      net.cpu_counters)
        softirq.need_resched = tasks.need_resched
        softirq.wakeup_softirqd = tasks.wakeup_softirqd
        softirq.handlers[NET_RX_SOFTIRQ] = lambda: net_rx_action(sd, net)
        sd.ttwu = tasks.ttwu

        mine = net.backlogs[cpu_id]
        sd.input_queue = mine
        sd.process_queue = ProcessQueue()
        sd.backlog = Napi(f"backlog/{cpu_id}", knobs.dev_rx_weight,
                          lambda n, quota: process_backlog(sd, net, n, quota),
                          state_store=mine.ring.hdr, state_index=USER0 + BL_STATE)
        if knobs.flow_limit_cpu_bitmap >> cpu_id & 1:
            sd.flow_limit = FlowLimit(knobs.flow_limit_table_len)

        self.driver = RxDriver(sd, net, rx_rings)
        self.app = app = App(cpu_id, [s for s in net.socks.sockets if s.reader_cpu == cpu_id],
                             time, counters, costs, knobs.recv_batch, net.sock_table, net.ncpus)
        tasks.app = app

    def set_irq_point(self, fn) -> None:
        """Where this CPU takes its waiting hard interrupts (interrupts enabled)."""
        self.sd.irq_point = fn
        self.app.irq_point = fn

    # -- hard interrupts -------------------------------------------------------------------
    def hardirq(self, queue: int) -> None:
        """An RX vector fired here: handle_edge_irq -> driver ISR -> napi_schedule_irqoff."""
        self._irq_enter()
        self.counters[IRQ0 + queue] += 1
        self.time.charge(self.net.costs.hardirq)
        n = self.driver.napis[queue]
        if napi_schedule_prep(n):
            napi_schedule(self.sd, n)
        self._irq_exit()

    def ipi_rps(self) -> None:
        """The RPS IPI (rps_trigger_softirq): schedule the backlog NAPI, count received_rps."""
        self._irq_enter()
        self.counters[C.CAL] += 1
        self.time.charge(self.net.costs.ipi)
        napi_schedule(self.sd, self.sd.backlog)
        self.counters[C.RECEIVED_RPS] += 1
        self._irq_exit()

    def ipi_resched(self) -> None:
        """A reschedule IPI: a remote CPU woke this CPU's user task (ttwu_queue)."""
        self._irq_enter()
        self.counters[C.RES] += 1
        self.time.charge(self.net.costs.hardirq)
        self.tasks.wake_user()
        self._irq_exit()

    def _irq_enter(self) -> None:
        self._saved_ctx = self.time.ctx
        self.time.ctx = HARDIRQ
        self.time.in_hardirq = True

    def _irq_exit(self) -> None:
        self.time.in_hardirq = False
        self.time.ctx = self._saved_ctx
        if not self.softirq.serving and self.softirq.pending:
            self.softirq.handle_softirqs(False)    # invoke_softirq on the irq stack

    def schedule(self) -> bool:
        """Run the next task for one slice (cpus.sched.CpuTasks.schedule)."""
        return self.tasks.schedule()
