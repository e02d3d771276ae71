"""Every counter of whole emulated hosts, against a recorded golden copy.

The hosts run in one process through the real time synchronization (harness.AgentHost: the
NIC and every CPU as agents, advanced in time order, deterministically), on scenarios that
reach every path (the compiled UDP poll, GRO, RPS by the map, RFS, flow limit, a full ring,
rcvbuf drops, a connected socket). A refactor that must not change behaviour must leave
every number identical; a change that means to change behaviour regenerates the copy with
`EMU_GOLDEN=write` and says why in its commit.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from emu.counters import C, N
from emu.ring import RX_DROPS, RX_IRQS, RX_PACKETS, USER0

from .harness import AgentHost

GOLDEN = Path(__file__).parent / "golden"

UDP = {"name": "u", "pattern": "poisson", "proto": "udp", "rate_pps": 1_000_000.0, "flows": 64,
       "dst_ports": [9000, 9001, 9002, 9003, 7], "frame_len": 128}
TCP = {"name": "t", "pattern": "constant", "proto": "tcp", "rate_pps": 300_000.0, "flows": 4,
       "dst_ports": [5201], "frame_len": 1514}
ONE_Q = {"name": "e", "pattern": "constant", "proto": "udp", "rate_pps": 2_000_000.0, "flows": 1,
         "dst_ports": [9000], "frame_len": 128, "queue": 0}
MICE = {"name": "m", "pattern": "poisson", "proto": "udp", "rate_pps": 600_000.0, "flows": 50,
        "dst_ports": [9001], "frame_len": 128, "queue": 0, "src_net": "10.2.0.0"}

PINNED = {"name": "p", "pattern": "constant", "proto": "udp", "rate_pps": 500_000.0, "flows": 1,
          "dst_ports": [9003], "frame_len": 256, "src_net": "10.1.0.1"}

ALL_ON_0 = [f"proc.irq.{120 + q}.smp_affinity=1" for q in range(4)]

SCENARIOS = {
    "default": ([], [UDP, TCP]),
    "small_ring": (["ethtool.rx_ring=64", "net.core.rmem_default=30000", "cost.netif_receive=6000"],
                   [UDP]),
    "rps_map": (["sys.class.net.eth0.queues.rx-0.rps_cpus=e", "ethtool.speed=100000"] + ALL_ON_0,
                [UDP, TCP]),
    "rfs": (["net.core.rps_sock_flow_entries=4096", "ethtool.speed=100000",
             "udp.sockets.3.connect=10.1.0.1:12000"]
            + [f"sys.class.net.eth0.queues.rx-{q}.rps_flow_cnt=256" for q in range(4)] + ALL_ON_0,
            [UDP, TCP, PINNED]),
    "flow_limit": (["net.core.netdev_max_backlog=64", "sys.class.net.eth0.queues.rx-0.rps_cpus=2",
                    "net.core.flow_limit_cpu_bitmap=1", "cost.netif_receive=2000"], [ONE_Q, MICE]),
    "gro_off_budget": (["sys.class.net.eth0.gro=false", "net.core.netdev_budget=50"] + ALL_ON_0,
                       [UDP, TCP]),
}


def _run(sets, sources, duration_ns=1_200_000, quiet=True):
    h = AgentHost(sets, ncpus=4, sources=sources, duration_ns=duration_ns, drain_ns=200_000)
    if not quiet:
        for ag in h.agents[:h.cfg.ncpus]:
            ag.sync.quiet = None            # every CPU may send or touch anything at any time
            ag.sync.react = 0
    h.run()
    return _collect(h)


def _collect(h) -> dict:
    """Every counter of a host that has run (the golden copy's form)."""
    out = {"cpus": [], "sockets": [], "backlogs": []}
    for c in range(h.cfg.ncpus):
        ctr = h.counters[c]
        out["cpus"].append({C(i).name: int(v) for i, v in enumerate(ctr) if v})
    for s in h.base.sockets:
        out["sockets"].append({"queued": len(s.ring), "rmem": s.rmem(), "drops": s.drops(),
                               "seqs": [int(x) for x in s.ring.pop(1 << 20)["seq"]]})
    for b in h.base.backlogs:
        out["backlogs"].append({"qlen": len(b.ring), "dropped": b.dropped, "head": b.head})
    out["rings"] = [{"queued": len(r), "packets": int(r.hdr[USER0 + RX_PACKETS]),
                     "drops": int(r.hdr[USER0 + RX_DROPS]), "irqs": int(r.hdr[USER0 + RX_IRQS])}
                    for r in h.views.rx]
    out["nic"] = {N(i).name: int(v) for i, v in enumerate(h.views.nic) if v and
                  N(i).name not in ("LOOPS",)}
    return out


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_counters_match_the_golden_copy(name):
    got = _run(*SCENARIOS[name])
    path = GOLDEN / f"{name}.json"
    if os.environ.get("EMU_GOLDEN") == "write":
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    want = json.loads(path.read_text())
    for c, (g, w) in enumerate(zip(got["cpus"], want["cpus"])):
        diff = {k: (g.get(k), w.get(k)) for k in set(g) | set(w) if g.get(k) != w.get(k)}
        assert not diff, f"cpu{c}: (got, golden) {diff}"
    assert got == want
    assert sum(c.get("PROCESSED", 0) for c in got["cpus"]) > 0


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_quiet_cpus_change_no_counter(name):
    """A CPU with no softirq pending or running publishes how late its next message or
    touch of another CPU's sockets can come (emu.timesync, SEND): the others go further
    before they wait for it. That only moves waiting: every counter is the same as when
    every CPU is taken to act at any time."""
    sets, sources = SCENARIOS[name]
    assert _run(sets, sources, quiet=True) == _run(sets, sources, quiet=False)
