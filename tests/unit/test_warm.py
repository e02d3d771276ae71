"""warm() compiles every argument type a run uses, so no kernel compiles inside traffic.

A numba kernel meeting a new argument type (int32 instead of int64, a contiguous instead of a
strided view) compiles on that call, for up to a second: in a run that is a CPU or the NIC
stalling mid-traffic. After warm(), real batches must add no specialization.
"""

import multiprocessing as mp

import numpy as np
import pytest

from cpus import ip
from emu import jit
from emu.jit import warm_all as cpu_warm
from emu.config import resolve
from emu.counters import nic_block
from emu.ring import Ring
from emu.skb import SKB
from nic import dma
from nic.rss import Rss
from nic.traffic import Source

from .harness import Host
from .test_ip import sock as make_sock

pytestmark = pytest.mark.compiled

def _kernels(*prefixes):
    jit.import_all()
    return [d for d in jit.REGISTRY if jit.name_of(d).startswith(prefixes)]


def signatures(kernels):
    return {jit.name_of(k): len(k.signatures) for k in kernels}


def _in_fresh_process(fn):
    """Run fn in a new interpreter: in this one, earlier tests may already have compiled
    the very specializations this test is about."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(fn)


@pytest.mark.timeout(120)
def test_nic_turns_of_one_and_many_frames_compile_nothing_new():
    before, after = _in_fresh_process(_nic_turns)
    assert after == before


@pytest.mark.timeout(120)
def test_cpu_paths_compile_nothing_new():
    before, after = _in_fresh_process(_cpu_paths)
    assert after == before


def _nic_turns():
    cfg = resolve(None, [])
    rss = Rss.from_ethtool(cfg["ethtool"])
    sources = [Source(s, i, rss, 1) for i, s in enumerate(cfg["traffic.sources"])]
    jit.warm_all()                                 # as the NIC process does
    dma.warm(sources, cfg.nqueues)
    before = signatures(_kernels("nic.", "emu."))
    rings = [Ring.local(SKB, 4096) for _ in range(cfg.nqueues)]
    seq, t = 0, 0
    for step in (1, 50, 2_000_000, 3):             # ns: turns of 0-1 frames and of thousands
        out, seq = dma.generate(sources, t, t + step, seq, cfg.nqueues, nic_block())
        for q, b in enumerate(out):
            if b is not None:
                rings[q].push(b)
        t += step
    return before, signatures(_kernels("nic.", "emu."))


def _cpu_paths():
    cpu_warm()
    before = signatures(_kernels("cpus.", "emu."))
    udp = {"name": "u", "proto": "udp", "rate_pps": 1000.0, "flows": 16,
           "dst_ports": [9000, 9001, 9005], "frame_len": 128}
    tcp = {"name": "t", "proto": "tcp", "rate_pps": 1000.0, "flows": 4, "dst_ports": [80],
           "frame_len": 600}
    for sets in ([], ["sys.class.net.eth0.queues.rx-0.rps_cpus=3",
                      "sys.class.net.eth0.queues.rx-1.rps_cpus=3"]):
        h = Host(["ethtool.rx_queues=2", "net.core.rmem_default=65536", *sets], ncpus=2,
                 sources=[udp, tcp])
        for k in range(3):
            b = np.concatenate([h.frames(0, 200, t0=k * 10**6), h.frames(1, 1 + k, t0=k * 10**6)])
            h.dma(b[np.argsort(b["ts"], kind="stable")])
            for q in (0, 1):
                h.raise_irq(q, q)
            h.run_all()
    # a connected socket: the lookup gives each skb's socket
    s = make_sock(9000, connect="10.0.0.1:5000")
    table = ip.SocketTable([s])
    b = h.frames(0, 8)
    p = ip.parse(b)
    ip.ip_rcv_deliver(b, p, h.counters[0], table)
    return before, signatures(_kernels("cpus.", "emu."))
