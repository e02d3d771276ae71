"""The kernel's shared objects over a run's memory: every backlog, every socket, RPS/RFS.

emu.shm lays out the segment and hands out plain rings and arrays; attach() wraps them into
what the receive path works on (cpus.net.Net), the same way for a CPU process over the run's
shared memory and for a unit-test harness over private memory (emu.shm.private).
"""

from __future__ import annotations

import numpy as np

from emu.config import Config
from emu.counters import C
from emu.shm import Views
from emu.shmlock import ShmLock, StatLock

from .backlog import Backlog
from .net import Net
from .params import Costs, Knobs
from .rps import RxQueueRps
from .sock import SocketTable, UdpSocket


def attach(cfg: Config, views: Views, counters: np.ndarray | None = None) -> Net:
    """The namespace's shared state over views; with ``counters`` (this CPU's block), every
    backlog lock this CPU takes is counted there (acquisitions, contended, time waited)."""
    buf, layout = views.buf, views.layout
    backlogs = []
    for c, (ring, off) in enumerate(zip(views.backlogs, layout.backlog_locks)):
        lock = (StatLock(buf, off, counters, int(C.LOCK_ACQUIRED), int(C.LOCK_CONTENDED),
                         int(C.LOCK_WAIT_NS)) if counters is not None else ShmLock(buf, off))
        backlogs.append(Backlog(c, ring, lock))
    sockets = [UdpSocket(ring, ShmLock(buf, off), s["port"], s["rcvbuf"], s["reader_cpu"],
                         connect=s["connect"])
               for s, ring, off in zip(cfg["udp.sockets"], views.sockets, layout.sock_locks)]
    rps = []
    for q in range(cfg.nqueues):
        mask = cfg.rps_mask(q)
        rps.append(RxQueueRps([c for c in range(cfg.ncpus) if mask >> c & 1], views.flow_tables[q]))
    return Net(ncpus=cfg.ncpus, knobs=Knobs.from_config(cfg), costs=Costs.from_config(cfg),
               socks=SocketTable(sockets), backlogs=backlogs, rps=rps, sock_table=views.sock_flow,
               hash_seed=cfg["run.seed"], cpu_counters=views.cpu)
