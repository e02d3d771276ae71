"""Hosts of pure Cpus in one process, for unit tests.

The memory is the run's layout in private memory (emu.shm.private) and the kernel objects
over it are built by cpus.host.attach, exactly as a CPU process builds them over shared
memory. Each Cpu has its own CpuTime (a CPU's work advances only its own time).

Host drives the Cpus by hand: the test writes frames into the rings (dma), raises an
interrupt (raise_irq: the CPU takes it after the frames' arrival), and runs CPUs until they
are idle; IRQs and IPIs are queued per CPU and taken at its next irq_point().

AgentHost runs a whole host through the real time synchronization: a CpuAgent per CPU and
the NicAgent, each on its thread, advanced in time order by emu.inproc's baton.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from cpus.host import attach
from cpus.kernel import Cpu
from emu.clock import CpuTime
from emu.config import resolve
from emu.counters import T0
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
        self.inbox = [deque() for _ in range(n)]
        self.cpus = []
        self.last_ts = [0] * cfg.nqueues
        for c in range(n):
            t = CpuTime(self.counters[c][T0:T0 + 7])
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
        """Write frames into their rings' slots (what fits); return how many were written.
        The driver judges them against the ring's rx_ring descriptors when it polls."""
        written = 0
        for q in np.unique(batch["queue"]):
            mine = batch[batch["queue"] == q]
            written += self.rx[int(q)].push(mine)
            if len(mine):
                self.last_ts[int(q)] = max(self.last_ts[int(q)], int(mine["ts"].max()))
        return written

    def raise_irq(self, q: int, cpu: int) -> None:
        """Queue q's interrupt to cpu, after the frames written so far have arrived (an idle
        CPU waits for it until then)."""
        self.cpus[cpu].time.idle_until(self.last_ts[q])
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


class AgentHost:
    """A whole host (the NIC and every CPU as agents) in one process, run through the time
    synchronization to the end of traffic (duration_ns) and until it is quiet."""

    def __init__(self, sets=(), ncpus: int = 4, sources: list[dict] | None = None,
                 duration_ns: int = 2_000_000, drain_ns: int = 1_000_000, port=None):
        """port(agent index, sync block): the Port of each agent's Sync (default: the
        baton's, and run() runs them in time order)."""
        from cpus.agent import CpuAgent
        from emu.inproc import Baton, BatonPort
        from emu.timesync import Sync
        from nic.agent import NicAgent
        self.base = base = Host(sets, ncpus, sources)
        cfg = self.cfg = base.cfg
        views = base.views
        sb = self.sb = views.sync
        sb.init(duration_ns + drain_ns)
        names = [f"cpu{c}" for c in range(cfg.ncpus)] + ["nic"]
        self.baton = Baton(sb, names)
        if port is None:
            port = lambda a, _sb: BatonPort(self.baton, a)     # noqa: E731
        costs = base.net.costs
        self.agents = []
        for c, cpu in enumerate(base.cpus):
            sync = Sync(sb, c, costs.lat_ipi, costs.lat_cacheline, port(c, sb))
            self.agents.append(CpuAgent(cpu, sync, views.rx, cfg["ethtool.rx_usecs"],
                                           cfg["ethtool.rx_frames"]))
        nic_sync = Sync(sb, cfg.ncpus, costs.lat_ipi, costs.lat_cacheline,
                        port(cfg.ncpus, sb))
        self.nic = NicAgent(base.sources, views.rx, nic_sync, views.nic, cfg.effective_cpu,
                            cfg["ethtool.rx_usecs"], cfg["ethtool.rx_frames"],
                            cfg["ethtool.rx_ring"], costs.lat_mmio, costs.lat_msi, duration_ns)
        self.agents.append(self.nic)
        self.counters = base.counters
        self.views = views

    def run(self, timeout_s: float = 120.0) -> None:
        from emu.inproc import run_agents
        run_agents(self.baton, self.agents, timeout_s)
