"""A host of pure Cpu objects in one process, on virtual clocks, for unit tests.

Each Cpu has its own VirtualClock (a CPU's work advances only its own time); IRQs and IPIs
are queued per CPU and taken at the CPU's next irq_point(), as the process shell does with
its ZeroMQ inbox.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

from cpus.backlog import Backlog, backlog_capacity
from cpus.kernel import RX_IRQ_MASKED, Cpu
from cpus.rps import FLOW, RPS_NO_CPU
from cpus.sock import SOCK_ENTRY, SocketTable, UdpSocket, socket_ring_capacity
from emu.clock import CpuTime, VirtualClock
from emu.config import resolve
from emu.counters import T0, cpu_block
from emu.ring import Ring
from emu.skb import SKB
from nic.rss import Rss
from nic.traffic import Source


class Host:
    def __init__(self, sets=(), ncpus: int = 4, sources: list[dict] | None = None):
        sets = list(sets) + [f"run.cpus={ncpus}"]
        text = None
        if sources is not None:
            import json
            lines = []
            for s in sources:
                lines.append("[[traffic.sources]]")
                for k, v in s.items():
                    lines.append(f"{k} = {json.dumps(v)}")
            text = "\n".join(lines)
        self.cfg = cfg = resolve(text, sets)
        n = cfg.ncpus
        self.clocks = [VirtualClock() for _ in range(n)]
        self.counters = [cpu_block() for _ in range(n)]
        self.rx = [Ring.local(SKB, cfg["ethtool.rx_ring"]) for _ in range(cfg.nqueues)]
        cap = backlog_capacity(cfg["net.core.netdev_max_backlog"])
        self.backlogs = [Backlog(c, Ring.local(SKB, cap), threading.Lock()) for c in range(n)]
        self.sockets = []
        for s in cfg["udp.sockets"]:
            ring = Ring.local(SOCK_ENTRY, socket_ring_capacity(s["rcvbuf"], 2048))
            self.sockets.append(UdpSocket(ring, threading.Lock(), s["port"], s["rcvbuf"],
                                          s["reader_cpu"], connect=s["connect"]))
        entries = cfg["net.core.rps_sock_flow_entries"]
        self.sock_table = np.full(entries, RPS_NO_CPU, dtype=np.uint32) if entries else None
        self.flow_tables = []
        for q in range(cfg.nqueues):
            cnt = cfg.queue(q)["rps_flow_cnt"]
            t = np.zeros(cnt, dtype=FLOW) if cnt else None
            if t is not None:
                t["cpu"] = RPS_NO_CPU
            self.flow_tables.append(t)
        self.inbox = [deque() for _ in range(n)]
        self.cpus = []
        for c in range(n):
            t = CpuTime(self.clocks[c], self.counters[c][T0:T0 + 7])
            cpu = Cpu(c, cfg, t, self.counters[c], self.rx, self.backlogs,
                      SocketTable(self.sockets), self.sock_table, self.flow_tables, hash_seed=1,
                      cpu_counters=self.counters)
            cpu.irq_point = self._irq_point(c)
            cpu.send_ipi = lambda target, c=c: self.inbox[target].append(("rps", c))
            cpu.wake_remote = lambda target, c=c: self.inbox[target].append(("res", c))
            self.cpus.append(cpu)
        rss = Rss.from_ethtool(cfg["ethtool"])
        self.sources = [Source(s, i, rss, cfg["run.seed"]) for i, s in enumerate(cfg["traffic.sources"])]
        self.seq = 0

    def _irq_point(self, c: int):
        def point():
            q = self.inbox[c]
            while q:
                kind, arg = q.popleft()
                cpu = self.cpus[c]
                if kind == "irq":
                    cpu.hardirq(arg)
                elif kind == "rps":
                    cpu.ipi_rps()
                else:
                    cpu.ipi_resched()
        return point

    def frames(self, source: int, n: int, t0: int = 0, spacing: int = 100) -> np.ndarray:
        src = self.sources[source]
        ts = np.arange(n, dtype=np.uint64) * spacing + t0
        flow_idx = np.arange(n) % len(src.flows.src_port)
        b = src.make_batch(ts, flow_idx, self.seq)
        self.seq += n
        return b

    def dma(self, batch: np.ndarray) -> int:
        """Write frames into their rings (what fits); return how many were written."""
        written = 0
        for q in np.unique(batch["queue"]):
            written += self.rx[int(q)].push(batch[batch["queue"] == q])
        return written

    def raise_irq(self, q: int, cpu: int) -> None:
        self.rx[q].set_user(RX_IRQ_MASKED, 1)
        self.inbox[cpu].append(("irq", q))

    def run(self, c: int, steps: int = 1000) -> None:
        """Drive CPU c until it goes idle (or steps run out)."""
        cpu = self.cpus[c]
        for _ in range(steps):
            cpu.irq_point()
            if not cpu.schedule():
                return

    def run_all(self, rounds: int = 200) -> None:
        for _ in range(rounds):
            busy = False
            for c, cpu in enumerate(self.cpus):
                cpu.irq_point()
                busy |= cpu.schedule()
                busy |= bool(self.inbox[c])
            if not busy:
                return
