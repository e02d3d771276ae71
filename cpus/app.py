"""The user task's program: an application reading its UDP sockets on one CPU.

Not kernel code: the process the kernel schedules. Each turn it calls recvmsg on each of its
sockets, a chunk at a time, doing the application's own work per datagram (charged as user
time; the system call is system time), until it has read recv_batch datagrams, its sockets
are empty, or the scheduler wants the CPU back. Between chunks interrupts are enabled
(irq_point): a hard interrupt waits at most one chunk, SAFE_POINT_NS of emulated time.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from emu.clock import SYSTEM, USER, CpuTime

from .params import Costs
from .sock import UdpSocket

# Hard interrupts wait for a safe point; the user task reaches one at least this often in
# emulated time (8 datagrams at the default recvmsg + app costs). A read is one batch of
# numpy work, so with zero costs the whole recv_batch is one read.
SAFE_POINT_NS = 12_000


def _noop() -> None:
    return None


class App:
    def __init__(self, cpu: int, sockets: list[UdpSocket], time: CpuTime, counters: np.ndarray,
                 costs: Costs, recv_batch: int, sock_table: np.ndarray | None, ncpus: int):
        self.cpu = cpu
        self.sockets = sockets
        self.time = time
        self.counters = counters
        self.costs = costs
        self.recv_batch = recv_batch
        self.sock_table = sock_table
        self.ncpus = ncpus
        self.irq_point: Callable[[], None] = _noop
        self.sync: Callable[[], None] = _noop         # act only once no peer can still reach now
        self.on_read: Callable[[np.ndarray], None] | None = None   # sees what was read

    def has_queued(self, now: int) -> bool:
        """Whether a datagram is queued on its sockets by emulated time now
        (cpus.sock.produced_by): call it synchronized (self.sync()), so that the answer is
        the same however far the producers have got."""
        lat = self.costs.lat_cacheline
        for s in self.sockets:
            if s.produced_by(now, lat, 1):
                return True
        return False

    def run(self, tasks) -> bool:
        """One turn of the task; whether datagrams are still queued on its sockets."""
        time = self.time
        left = self.recv_batch
        per = self.costs.recvmsg + self.costs.app
        chunk = max(1, SAFE_POINT_NS // per) if per else left
        sched = tasks.sched
        for s in self.sockets:
            while left > 0:
                time.ctx = SYSTEM
                self.sync()
                entries, remaining = s.recvmsg(min(chunk, left), self.cpu, self.counters,
                                               self.sock_table, self.ncpus, now=time.t)
                k = len(entries)
                if not k and remaining:
                    # every queued datagram is still on its way from another CPU (a cache
                    # line in flight): the read waits for the first, in the system call
                    time.charge(s.next_visible(time.t) - time.t)
                    continue
                if k:
                    if self.on_read is not None:
                        self.on_read(entries)
                    time.charge(k * self.costs.recvmsg)
                    time.ctx = USER
                    time.charge(k * self.costs.app)
                    left -= k
                self.irq_point()
                if sched.need_resched or remaining == 0:
                    break
            if sched.need_resched:
                break
        time.ctx = SYSTEM
        self.sync()
        return self.has_queued(time.t)
