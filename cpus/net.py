"""What the receive path of every CPU shares in the emulated host's one network namespace.

The kernel finds these through dev_net(skb->dev) and per_cpu(): the sockets, every CPU's
backlog, each RX queue's RPS map and RFS flow table, the global sock flow table, the knobs.
Each CPU process builds one over the run's shared memory (cpus.host.attach); a test harness
builds one for all the CPUs it runs in one process.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .params import Costs, Knobs
from .rps import RxQueueRps
from .sock import SocketTable


@dataclass(slots=True, eq=False)
class Net:
    ncpus: int
    knobs: Knobs
    costs: Costs
    socks: SocketTable
    backlogs: list                        # cpus.backlog.Backlog of every CPU
    rps: list[RxQueueRps]                 # per RX queue: rps_map and rps_flow_table
    sock_table: np.ndarray | None         # rps_sock_flow_table (None: RFS off)
    hash_seed: int                        # stands in for the boot-time hashrnd
    cpu_counters: list | None             # every CPU's counter block (a remote USER_ON_RQ)

    @property
    def rfs(self) -> bool:
        return self.sock_table is not None and len(self.sock_table) > 0
