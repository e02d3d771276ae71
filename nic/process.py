"""The NIC process: binds nic.agent.NicAgent to shared memory, ZeroMQ and a futex.

The agent generates the sources' frames ahead, writes them into the RX rings' slots, and
sends each queue's interrupt, stamped, to the CPU the vector's affinity resolves to (see
nic/agent.py). It runs until every CPU has finished, or a STOP.
"""

from __future__ import annotations


import zmq

from emu import jit
from emu.child import Control
from emu.config import Config
from emu.protocol import endpoint
from emu.shm import Layout, Segment, Views
from emu.syncwait import ProcPort
from emu.timesync import Sync

from .agent import NicAgent
from .dma import warm
from .rss import Rss
from .traffic import Source

CTL_EVERY_NS = 20_000_000


def main(ctl: Control, index: int, cfg_dict: dict, run_id: str, shm_name: str) -> None:
    """Steps after emu.child.entry: load the kernels, attach, handshake, run, report."""
    cfg = Config(cfg_dict)
    rss = Rss.from_ethtool(cfg["ethtool"])
    seed = cfg["run.seed"]
    sources = [Source(s, i, rss, seed) for i, s in enumerate(cfg["traffic.sources"])]
    ctl.step("cache load")
    jit.warm_all()
    warm(sources, cfg.nqueues)
    ctl.step("attach")
    ctx = ctl.ctx
    seg = Segment.attach(shm_name)
    views = Views(cfg, Layout(cfg), seg.buf)
    pushes = {}
    for c in sorted(set(cfg.effective_cpu)):
        s = ctx.socket(zmq.PUSH)
        s.setsockopt(zmq.LINGER, 0)
        # The CPU may bind its inbox after this connect: retry every millisecond, not every
        # 100 (ZeroMQ's default), or the first interrupts wait up to 100 ms in the queue,
        # and with them the whole run.
        s.setsockopt(zmq.RECONNECT_IVL, 1)
        s.connect(endpoint(run_id, f"cpu{c}"))
        pushes[c] = s
    me = cfg.ncpus
    port = ProcPort(views.sync, me, None, pushes, run_id, ctl.stop_requested)
    sync = Sync(views.sync, me, cfg["cost.lat_ipi"], cfg["cost.lat_cacheline"], port)
    agent = NicAgent(sources, views.rx, sync, views.nic, cfg.effective_cpu,
                     cfg["ethtool.rx_usecs"], cfg["ethtool.rx_frames"], cfg["ethtool.rx_ring"],
                     cfg["cost.lat_mmio"], cfg["cost.lat_msi"], cfg.duration_ns)
    ctl.handshake()
    agent.tick = ctl.ticker(CTL_EVERY_NS)
    agent.run()
    ctl.finish(int(views.nic[0]))
