"""A host of pure Cpus in one process, on virtual clocks, for unit tests.

The memory is the run's layout in private memory (emu.shm.private) and the kernel objects
over it are built by cpus.host.attach, exactly as a CPU process builds them over shared
memory. Each Cpu has its own VirtualClock (a CPU's work advances only its own time); IRQs
and IPIs are queued per CPU and taken at the CPU's next irq_point(), as the process shell
does with its ZeroMQ inbox.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from cpus.host import attach
from cpus.kernel import Cpu
from emu.clock import CpuTime, VirtualClock
from emu.config import resolve
from emu.counters import T0
from emu.ring import RX_IRQ_MASKED
from emu.shm import private
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
        self.views = views = private(cfg)
        self.net = net = attach(cfg, views)
        self.counters = views.cpu
        self.rx = views.rx
        self.backlogs = net.backlogs
        self.sockets = net.socks.sockets
        self.sock_table = net.sock_table
        self.flow_tables = views.flow_tables
        self.clocks = [VirtualClock() for _ in range(n)]
        self.inbox = [deque() for _ in range(n)]
        self.cpus = []
        for c in range(n):
            t = CpuTime(self.clocks[c], self.counters[c][T0:T0 + 7])
            cpu = Cpu(c, net, t, self.counters[c], self.rx)
            cpu.set_irq_point(self._irq_point(c))
            cpu.sd.send_ipi = lambda target, c=c: self.inbox[target].append(("rps", c))
            cpu.tasks.wake_remote = lambda target, c=c: self.inbox[target].append(("res", c))
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
            cpu.sd.irq_point()
            if not cpu.schedule():
                return

    def run_all(self, rounds: int = 200) -> None:
        for _ in range(rounds):
            busy = False
            for c, cpu in enumerate(self.cpus):
                cpu.sd.irq_point()
                busy |= cpu.schedule()
                busy |= bool(self.inbox[c])
            if not busy:
                return
