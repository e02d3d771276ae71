"""Counter blocks: one u64 array per writer, in shared memory during a run.

Each CPU process writes only its own block and the NIC only its own; the orchestrator reads
them all (reading stats costs the data path nothing). Slots are named by IntEnums so the
hot path indexes a numpy array (`c[C.PROCESSED] += n`) instead of touching attributes.

Kernel counters keep the kernel's units (softnet `processed` counts skbs after GRO; `dropped`
counts skbs). The conservation check counts wire frames, per traffic source and per drop
reason, in the SRC_* slots; every dropped frame lands in exactly one reason.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

MAX_QUEUES = 64
MAX_SOURCES = 16
NR_SOFTIRQS = 10
SOFTIRQ_NAMES = ("HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED",
                 "HRTIMER", "RCU")
NET_RX_SOFTIRQ = 3


class Drop(IntEnum):
    """Why a frame was lost; each reason has one kernel counter that also moves."""
    RING_FULL = 0     # NIC: no free RX descriptor -> rx_queue_N_drops, rx_fifo_errors
    BACKLOG = 1       # enqueue_to_backlog: input_pkt_queue > netdev_max_backlog -> softnet dropped
    FLOW_LIMIT = 2    # skb_flow_limit -> softnet dropped (target) + flow_limit_count (enqueuer)
    RCVBUF = 3        # UDP receive buffer full -> Udp RcvbufErrors
    NOPORTS = 4       # no UDP socket on the port -> Udp NoPorts
    IP_HDR = 5        # malformed IPv4 header -> Ip InHdrErrors
    NOHANDLER = 6     # no protocol handler (ethertype, IP protocol) -> rx_dropped / InUnknownProtos


NR_DROP = len(Drop)
DROP_NAMES = ("ring_full", "backlog", "flow_limit", "rcvbuf", "noports", "ip_hdr", "nohandler")


def _build(names: list[str]) -> type[IntEnum]:
    return IntEnum("C", {n: i for i, n in enumerate(names)})


_cpu_names = [
    # softnet_data
    "PROCESSED", "DROPPED", "TIME_SQUEEZE", "RECEIVED_RPS", "FLOW_LIMIT_COUNT",
    "INPUT_QLEN", "PROCESS_QLEN", "PROCESS_QSEGS",
    # time (ns per context, CONTEXT order of emu.clock), the CPU's emulated now, worst lag
    "T_HARDIRQ", "T_SOFTIRQ", "T_KSOFTIRQD", "T_USER", "T_SYSTEM", "T_IDLE", "T_STEAL",
    "NOW", "WORST_LAG",
    # scheduler
    "CTXT", "KSOFTIRQD_WAKEUPS", "KSOFTIRQD_RUNS", "LOC",
    # IPIs (arch rows of /proc/interrupts)
    "RES", "CAL",
    # MIBs
    "IP_IN_RECEIVES", "IP_IN_HDR_ERRORS", "IP_IN_UNKNOWN_PROTOS", "IP_IN_DELIVERS",
    "IP_IN_CSUM_ERRORS", "IP_IN_TRUNCATED_PKTS", "IP_IN_OCTETS",
    # ECN class of received IPv4 headers (IpExt InNoECTPkts InECT1Pkts InECT0Pkts InCEPkts,
    # in the order of the TOS field's two ECN bits: 0 not-ECT, 1 ECT(1), 2 ECT(0), 3 CE)
    "IP_IN_NOECT_PKTS", "IP_IN_ECT1_PKTS", "IP_IN_ECT0_PKTS", "IP_IN_CE_PKTS",
    "UDP_IN_DATAGRAMS", "UDP_NO_PORTS", "UDP_IN_ERRORS", "UDP_RCVBUF_ERRORS", "UDP_MEM_ERRORS",
    "TCP_IN_SEGS",
    # core per-CPU device stats (dev_get_stats adds these to the driver's)
    "RX_DROPPED", "RX_NOHANDLER",
    # GRO (per CPU; the per-NAPI split is in the NAPI_* block)
    "GRO_RECEIVED", "GRO_MERGED", "GRO_HELD", "GRO_NORMAL", "GRO_FLUSHED",
    # RPS / backlog
    "IPI_SENT", "BACKLOG_ENQUEUED", "BACKLOG_ENQUEUED_REMOTE", "BACKLOG_DROP_QLEN",
    "BACKLOG_DROP_FLOW_LIMIT", "LOCK_ACQUIRED", "LOCK_CONTENDED", "LOCK_WAIT_NS",
    # NAPI polls
    "NAPI_POLLS", "BACKLOG_POLLS", "NET_RX_ACTIONS",
    # user task
    "RECVMSG_CALLS", "USER_DATAGRAMS",
    "USER_ON_RQ",           # 1 while the user task is runnable (what a remote ttwu reads)
    # heartbeat of the process loop (increases while the CPU process runs)
    "LOOPS",
    # causality checks of the time synchronization (each must stay 0): frames judged after
    # a poll that should have seen them, frames taken before their arrival, messages that
    # came after the horizon had passed their time (an event is never taken before its
    # time: the heap is popped only up to the CPU's time)
    "LATE_FRAMES", "EARLY_FRAMES", "LATE_MSGS",
]
_cpu_names += [f"SOFTIRQ_{i}" for i in range(NR_SOFTIRQS)]
_cpu_names += [f"IRQ_{q}" for q in range(MAX_QUEUES)]
_cpu_names += [f"NAPI_GRO_MERGED_{q}" for q in range(MAX_QUEUES)]
_cpu_names += [f"NAPI_GRO_FLUSHED_{q}" for q in range(MAX_QUEUES)]
_cpu_names += [f"SRC_DELIVERED_{s}" for s in range(MAX_SOURCES)]
_cpu_names += [f"SRC_DROP_{r}_{s}" for r in range(NR_DROP) for s in range(MAX_SOURCES)]
C = _build(_cpu_names)
CPU_SLOTS = len(C)

SOFTIRQ0 = C.SOFTIRQ_0
IRQ0 = C.IRQ_0
NAPI_GRO_MERGED0 = C.NAPI_GRO_MERGED_0
NAPI_GRO_FLUSHED0 = C.NAPI_GRO_FLUSHED_0
SRC_DELIVERED0 = C.SRC_DELIVERED_0
SRC_DROP0 = C.SRC_DROP_0_0
T0 = C.T_HARDIRQ   # first of the 7 time slots


def src_drop(reason: int, src: int) -> int:
    return SRC_DROP0 + reason * MAX_SOURCES + src


_nic_names = ["GENERATED", "GENERATED_BYTES", "LOOPS", "NOW", "BUFFERED"]
_nic_names += [f"Q{q}_{f}" for q in range(MAX_QUEUES)
               for f in ("PACKETS", "BYTES", "DROPS", "IRQS")]
_nic_names += [f"SRC_SENT_{s}" for s in range(MAX_SOURCES)]
_nic_names += [f"SRC_RING_DROP_{s}" for s in range(MAX_SOURCES)]
N = _build(_nic_names)
NIC_SLOTS = len(N)
Q_PACKETS, Q_BYTES, Q_DROPS, Q_IRQS = range(4)


def nq(q: int, field: int) -> int:
    """Index of a per-queue NIC counter."""
    return N.Q0_PACKETS + 4 * q + field


SRC_SENT0 = N.SRC_SENT_0
SRC_RING_DROP0 = N.SRC_RING_DROP_0


def count_per_source(counters: np.ndarray, base: int, skbs: np.ndarray) -> None:
    """Add each skb's wire frames (segs) to the per-source slot range starting at base."""
    per = np.bincount(skbs["src"], weights=skbs["segs"], minlength=MAX_SOURCES)
    counters[base:base + MAX_SOURCES] += per[:MAX_SOURCES].astype(np.uint64)


def cpu_block(buf=None, offset: int = 0) -> np.ndarray:
    if buf is None:
        return np.zeros(CPU_SLOTS, dtype="<u8")
    return np.ndarray((CPU_SLOTS,), dtype="<u8", buffer=buf, offset=offset)


def nic_block(buf=None, offset: int = 0) -> np.ndarray:
    if buf is None:
        return np.zeros(NIC_SLOTS, dtype="<u8")
    return np.ndarray((NIC_SLOTS,), dtype="<u8", buffer=buf, offset=offset)
