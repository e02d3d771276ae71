"""struct softnet_data: the per-CPU receive state (include/linux/netdevice.h).

Counters live in the CPU's counter block (emu.counters.C) so the orchestrator reads them
without asking; the lists are private to the CPU that owns them, as in the kernel.
``dropped`` is the exception: other CPUs charge it when their enqueue_to_backlog drops into
this CPU's queue, so it lives in this CPU's backlog header (written under the backlog lock).
"""

from __future__ import annotations

from collections import deque

import numpy as np


class SoftnetData:
    __slots__ = ("cpu", "counters", "poll_list", "in_net_rx_action", "rps_ipi_list",
                 "backlog")

    def __init__(self, cpu: int, counters: np.ndarray):
        self.cpu = cpu
        self.counters = counters
        self.poll_list: deque = deque()      # NAPIs scheduled on this CPU, FIFO
        self.in_net_rx_action = False
        self.rps_ipi_list: list[int] = []    # remote CPUs whose backlog needs an IPI
        self.backlog = None                  # this CPU's backlog Napi (cpus.backlog)
