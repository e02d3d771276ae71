"""The numbers the receive path reads: modelled costs and the kernel's knobs, frozen.

Read once from the resolved config into two records that every function takes as an
argument, so the code holds no copies of its own: a knob changed while a host runs has one
place to land (a new record), and a test builds exactly the numbers it wants.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from emu.config import Config
from emu.cpumask import parse_mask


@dataclass(frozen=True, slots=True)
class Costs:
    """Modelled cost of each stage of work, in emulated ns (the [cost] table)."""
    hardirq: int
    softirq_entry: int
    napi_poll: int
    rx_frame: int
    gro: int
    netif_receive: int
    udp_rcv: int
    tcp_rcv: int
    rps_enqueue: int
    ipi_send: int
    ipi: int
    recvmsg: int
    app: int
    context_switch: int
    lat_msi: int
    lat_ipi: int
    lat_mmio: int
    lat_cacheline: int


    @classmethod
    def from_config(cls, cfg: Config) -> "Costs":
        cost = cfg["cost"]
        return cls(**{f.name: int(cost[f.name]) for f in fields(cls)})


@dataclass(frozen=True, slots=True)
class Knobs:
    """The sysctls, device settings and scheduler settings the receive path reads."""
    hz: int
    netdev_budget: int
    netdev_budget_usecs: int
    netdev_max_backlog: int
    dev_rx_weight: int              # dev_weight * dev_weight_rx_bias: the backlog NAPI's weight
    flow_limit_table_len: int
    flow_limit_cpu_bitmap: int
    gro: bool                       # ethtool -K eth0 gro
    napi_weight: int                # the driver's NAPI weight
    rx_ring: int                    # ethtool -G eth0 rx: descriptors of each RX ring
    recv_batch: int                 # datagrams the user task reads per wake-up
    ksoftirqd_nice: int
    user_nice: int
    sched_latency_ns: int
    min_granularity_ns: int
    wakeup_granularity_ns: int

    @classmethod
    def from_config(cls, cfg: Config) -> "Knobs":
        core = cfg["net.core"]
        sched = cfg["sched"]
        return cls(
            hz=cfg["run.hz"],
            netdev_budget=core["netdev_budget"],
            netdev_budget_usecs=core["netdev_budget_usecs"],
            netdev_max_backlog=core["netdev_max_backlog"],
            dev_rx_weight=core["dev_weight"] * core["dev_weight_rx_bias"],
            flow_limit_table_len=core["flow_limit_table_len"],
            flow_limit_cpu_bitmap=parse_mask(core["flow_limit_cpu_bitmap"]),
            gro=cfg["sys.class.net.eth0.gro"],
            napi_weight=cfg["sys.class.net.eth0.napi_weight"],
            rx_ring=cfg["ethtool.rx_ring"],
            recv_batch=sched["recv_batch"],
            ksoftirqd_nice=sched["ksoftirqd_nice"],
            user_nice=sched["user_nice"],
            sched_latency_ns=sched["sched_latency_ns"],
            min_granularity_ns=sched["min_granularity_ns"],
            wakeup_granularity_ns=sched["wakeup_granularity_ns"],
        )
