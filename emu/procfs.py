"""Renderers of the emulated host's /proc and /sys files, byte for byte as Linux 6.18 prints them.

Every renderer is a pure function of a `Snapshot` (the counter blocks read at one instant,
the resolved config, the run's start time) and returns the file's text. `tree()` gathers
them under their relative paths; emu.rundir.write_tree puts them on disk. Nothing here
imports shared memory, sockets or clocks: the orchestrator reads the
counters and calls these.

Format sources (read in the kernel source; the kernel wins where the project reference differs):
  /proc/net/softnet_stat   net/core/net-procfs.c softnet_seq_show (15 columns, %08x of u32)
  /proc/interrupts         kernel/irq/proc.c show_interrupts (6.13+ layout),
                           arch/x86/kernel/irq.c arch_show_interrupts (old "%10u " layout)
  /proc/softirqs           fs/proc/softirqs.c show_softirqs
  /proc/stat               fs/proc/stat.c show_stat
  /proc/uptime             fs/proc/uptime.c uptime_proc_show
  /proc/net/dev            net/core/net-procfs.c dev_seq_show, dev_seq_printf_stats
  /proc/net/snmp           net/ipv4/proc.c snmp_seq_show (6.3+ column sets)
  /proc/net/netstat        net/ipv4/proc.c netstat_seq_show, net/mptcp/mib.c mptcp_seq_show
  /proc/net/udp            net/ipv4/udp.c udp4_seq_show, udp4_format_sock
  eth0/* attributes        net/core/net-sysfs.c net_class_attrs, net/ethernet/eth.c sysfs_format_mac
  statistics/*             net/core/net-sysfs.c netstat_attrs ("%llu\\n" of dev_get_stats)
  bitmap files             lib/vsprintf.c bitmap_string / bitmap_list_string (emu.cpumask)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import Config
from .counters import C, NR_SOFTIRQS, Q_BYTES, Q_DROPS, Q_PACKETS, SOFTIRQ_NAMES, nq
from .cpumask import format_list, format_mask, parse_mask

IFNAME = "eth0"
# x86 per-device MSI-X domain (6.2+): chip "IR-PCI-MSIX-<pci address>", hwirq = MSI-X index.
MSIX_CHIP = "IR-PCI-MSIX-0000:3b:00.0"
IRQ_FLOW = "edge"
NR_IRQS_MIN = 256          # the emulated host's nr_irqs (raised if irq.base puts vectors above it)
USER_HZ = 100
NSEC_PER_SEC = 1_000_000_000
_NSEC_PER_TICK = NSEC_PER_SEC // USER_HZ
U32 = 0xFFFFFFFF
U64 = 0xFFFFFFFFFFFFFFFF

# net.core knobs that hold CPU masks (printed with bitmap_string).
_MASK_KNOBS = frozenset({"flow_limit_cpu_bitmap", "rps_default_mask"})


@dataclass(frozen=True)
class Snapshot:
    """Everything a renderer reads: counters at one instant plus static facts of the run."""
    cpu: np.ndarray            # [ncpus, CPU_SLOTS] u64, indexed by emu.counters.C
    nic: np.ndarray            # [NIC_SLOTS] u64, indexed by emu.counters.N / nq(q, field)
    cfg: Config
    btime: int                 # unix seconds of the run start (the emulated boot)
    uptime_ns: int             # emulated ns since the start
    effective_cpu: list[int]   # per RX queue: the CPU its vector is delivered to
    sockets: tuple = ()        # SockStat per emulated UDP socket, for /proc/net/udp


@dataclass(frozen=True)
class SockStat:
    """One emulated UDP socket (bound to INADDR_ANY:port) as /proc/net/udp reads it."""
    index: int                 # the socket's number (udp.sockets.N)
    port: int                  # local port
    connect: str               # "" or "a.b.c.d:port" of the peer of a connected socket
    rmem: int                  # sk_rmem_alloc, bytes
    drops: int                 # sk_drops
    reader_cpu: int
    deficit: int = 0           # forward_deficit: dequeued truesize not yet given back


# ----------------------------------------------------------------------------------------
# helpers


def _v(s: Snapshot, cpu: int, slot: int) -> int:
    return int(s.cpu[cpu, slot])


def _sum(s: Snapshot, slot: int) -> int:
    return sum(int(x) for x in s.cpu[:, slot])


def _ncpus(s: Snapshot) -> int:
    return s.cfg.ncpus


def nr_irqs(cfg: Config) -> int:
    """nr_irqs of the emulated host: 256, or more if the RX vectors lie above that."""
    return max(NR_IRQS_MIN, cfg.irq_of_queue(cfg.nqueues - 1) + 1)


def irq_prec(n: int) -> int:
    """Digits of the IRQ-number column: 3, plus one per power of ten from 1000 up to n."""
    prec, j = 3, 1000
    while prec < 10 and j <= n:
        prec += 1
        j *= 10
    return prec


def _ticks(ns: int) -> int:
    # nsec_to_clock_t with USER_HZ 100: a plain truncating division.
    return ns // _NSEC_PER_TICK


def _irq_count(s: Snapshot, cpu: int, q: int) -> int:
    return _v(s, cpu, C.IRQ_0 + q)


# ----------------------------------------------------------------------------------------
# /proc/net/softnet_stat


def softnet_stat(s: Snapshot) -> str:
    lines = []
    for cpu in range(_ncpus(s)):
        inq = _v(s, cpu, C.INPUT_QLEN)
        procq = _v(s, cpu, C.PROCESS_QLEN)
        cols = [
            _v(s, cpu, C.PROCESSED), _v(s, cpu, C.DROPPED), _v(s, cpu, C.TIME_SQUEEZE), 0,
            0, 0, 0, 0,    # was fastroute
            0,             # was cpu_collision
            _v(s, cpu, C.RECEIVED_RPS), _v(s, cpu, C.FLOW_LIMIT_COUNT),
            inq + procq, cpu, inq, procq,
        ]
        lines.append(" ".join(f"{c & U32:08x}" for c in cols) + "\n")
    return "".join(lines)


# ----------------------------------------------------------------------------------------
# /proc/interrupts

# x86_64 rows printed on every SMP kernel with a local APIC, in arch_show_interrupts order.
# Config-dependent rows (PLT, TRM, THR, DFR, MCE, MCP, HYP, PIN, ...) are left out.
_ARCH_ROWS = (
    ("NMI", None, "Non-maskable interrupts"),
    ("LOC", C.LOC, "Local timer interrupts"),
    ("SPU", None, "Spurious interrupts"),
    ("PMI", None, "Performance monitoring interrupts"),
    ("IWI", None, "IRQ work interrupts"),
    ("RTR", None, "APIC ICR read retries"),
    ("RES", C.RES, "Rescheduling interrupts"),
    ("CAL", C.CAL, "Function call interrupts"),
    ("TLB", None, "TLB shootdowns"),
)


def interrupts(s: Snapshot) -> str:
    cfg = s.cfg
    ncpus = _ncpus(s)
    prec = irq_prec(nr_irqs(cfg))
    out = [" " * (prec + 8) + "".join(f"CPU{c:<8d}" for c in range(ncpus)) + "\n"]
    for q in range(cfg.nqueues):
        irq = cfg.irq_of_queue(q)
        row = f"{irq:>{prec}d}:"
        row += "".join(f" {_irq_count(s, c, q) & U32:>10d}" for c in range(ncpus))
        row += " " + f"{MSIX_CHIP:>8s}"              # seq_putc ' ' then "%8s" (6.13+)
        row += f" {q:>{prec}d}"                       # hwirq = MSI-X table index
        row += f"-{IRQ_FLOW:<8s}"                     # flow handler name
        row += f"  {IFNAME}-TxRx-{q}\n"               # action name
        out.append(row)
    for name, slot, desc in _ARCH_ROWS:
        row = f"{name:>{prec}s}: "
        row += "".join(f"{(_v(s, c, slot) if slot is not None else 0) & U32:>10d} "
                       for c in range(ncpus))
        out.append(row + f"  {desc}\n")
    out.append(f"{'ERR':>{prec}s}: {0:>10d}\n")
    out.append(f"{'MIS':>{prec}s}: {0:>10d}\n")
    return "".join(out)


# ----------------------------------------------------------------------------------------
# /proc/softirqs


def softirqs(s: Snapshot) -> str:
    ncpus = _ncpus(s)
    out = [" " * 20 + "".join(f"CPU{c:<8d}" for c in range(ncpus)) + "\n"]
    for vec in range(NR_SOFTIRQS):
        row = f"{SOFTIRQ_NAMES[vec]:>12s}:"
        row += "".join(f" {_v(s, c, C.SOFTIRQ_0 + vec) & U32:>10d}" for c in range(ncpus))
        out.append(row + "\n")
    return "".join(out)


# ----------------------------------------------------------------------------------------
# /proc/stat


def _cpustat_ns(s: Snapshot, cpu: int) -> list[int]:
    """user nice system idle iowait irq softirq steal guest guest_nice, in ns.

    ksoftirqd's own time is charged to softirq (kernel/sched/cputime.c special case).
    """
    return [
        _v(s, cpu, C.T_USER), 0, _v(s, cpu, C.T_SYSTEM), _v(s, cpu, C.T_IDLE), 0,
        _v(s, cpu, C.T_HARDIRQ), _v(s, cpu, C.T_SOFTIRQ) + _v(s, cpu, C.T_KSOFTIRQD),
        _v(s, cpu, C.T_STEAL), 0, 0,
    ]


def _arch_irq_stat_cpu(s: Snapshot, cpu: int) -> int:
    # NMI, LOC, SPU, PMI, IWI, RTR, RES, CAL, TLB ... (unsigned int each)
    return sum(_v(s, cpu, slot) & U32 for _, slot, _ in _ARCH_ROWS if slot is not None)


def stat(s: Snapshot) -> str:
    cfg = s.cfg
    ncpus = _ncpus(s)
    per_cpu = [_cpustat_ns(s, c) for c in range(ncpus)]
    # The total line converts the summed nanoseconds (show_stat sums u64 ns over possible
    # CPUs, then calls nsec_to_clock_t once), so it can exceed the sum of the cpuN ticks.
    totals = [sum(col) for col in zip(*per_cpu)]
    out = ["cpu  " + " ".join(str(_ticks(v)) for v in totals) + "\n"]
    for c, vals in enumerate(per_cpu):
        out.append(f"cpu{c}" + "".join(f" {_ticks(v)}" for v in vals) + "\n")

    n = nr_irqs(cfg)
    per_irq = [0] * n
    total = 0
    for c in range(ncpus):
        for q in range(cfg.nqueues):
            cnt = _irq_count(s, c, q)
            per_irq[cfg.irq_of_queue(q)] += cnt
            total += cnt                      # kstat_cpu_irqs_sum: unsigned long, no wrap
        total += _arch_irq_stat_cpu(s, c)
    total += 0                                # arch_irq_stat(): ERR + MIS
    out.append(f"intr {total}" + "".join(f" {v & U32}" for v in per_irq))  # kstat_irqs_usr: uint

    ctxt = _sum(s, C.CTXT)
    out.append(f"\nctxt {ctxt}\nbtime {int(s.btime)}\nprocesses {ncpus + 1}\n"
               f"procs_running 1\nprocs_blocked 0\n")

    per_vec = [0] * NR_SOFTIRQS
    sum_softirq = 0
    for c in range(ncpus):
        for vec in range(NR_SOFTIRQS):
            v = _v(s, c, C.SOFTIRQ_0 + vec) & U32     # kstat_softirqs_cpu: unsigned int
            per_vec[vec] = (per_vec[vec] + v) & U32   # per_softirq_sums: unsigned int
            sum_softirq += v                          # u64
    out.append(f"softirq {sum_softirq}" + "".join(f" {v}" for v in per_vec) + "\n")
    return "".join(out)


# ----------------------------------------------------------------------------------------
# /proc/uptime


def _centis(ns: int) -> str:
    return f"{ns // NSEC_PER_SEC}.{(ns % NSEC_PER_SEC) // (NSEC_PER_SEC // 100):02d}"


def uptime(s: Snapshot) -> str:
    idle_ns = _sum(s, C.T_IDLE)
    return f"{_centis(int(s.uptime_ns))} {_centis(idle_ns)}\n"


# ----------------------------------------------------------------------------------------
# eth0 statistics (dev_get_stats)

NETDEV_STAT_NAMES = (
    "rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_errors", "tx_errors",
    "rx_dropped", "tx_dropped", "multicast", "collisions", "rx_length_errors",
    "rx_over_errors", "rx_crc_errors", "rx_frame_errors", "rx_fifo_errors",
    "rx_missed_errors", "tx_aborted_errors", "tx_carrier_errors", "tx_fifo_errors",
    "tx_heartbeat_errors", "tx_window_errors", "rx_compressed", "tx_compressed",
    "rx_nohandler",
)


def link_stats(s: Snapshot) -> dict[str, int]:
    """rtnl_link_stats64 of eth0 as dev_get_stats returns it: driver stats + core counters.

    The emulated driver behaves like igb with SRRCTL.DROP_EN: a frame that finds no free
    RX descriptor is dropped by the NIC and counted per queue (rx_queue_N_drops, RQDPC);
    igb_update_stats adds those to rx_fifo_errors. igb's rx_errors is
    rxerrc + crcerrs + algnerrc + ruc + roc + cexterr (wire/PHY errors only; it does NOT
    include rx_fifo_errors or missed packets), none of which the emulator produces, so
    rx_errors = 0. rx_missed_errors is MPC (packet-buffer overflow), not modelled: 0.
    rx_dropped and rx_nohandler are the core's per-CPU counters that dev_get_stats adds
    (backlog and flow-limit drops, packets no protocol took).
    """
    cfg = s.cfg
    st = dict.fromkeys(NETDEV_STAT_NAMES, 0)
    st["rx_packets"] = sum(int(s.nic[nq(q, Q_PACKETS)]) for q in range(cfg.nqueues))
    st["rx_bytes"] = sum(int(s.nic[nq(q, Q_BYTES)]) for q in range(cfg.nqueues))
    st["rx_fifo_errors"] = sum(int(s.nic[nq(q, Q_DROPS)]) for q in range(cfg.nqueues))
    st["rx_dropped"] = _sum(s, C.RX_DROPPED)
    st["rx_nohandler"] = _sum(s, C.RX_NOHANDLER)
    return st


def netdev_stats(s: Snapshot) -> dict[str, str]:
    """The 24 files of /sys/class/net/eth0/statistics, name -> "%llu\\n"."""
    return {name: f"{value}\n" for name, value in link_stats(s).items()}


# ----------------------------------------------------------------------------------------
# /proc/net/dev

NET_DEV_HEADER = (
    "Inter-|   Receive                            "
    "                    |  Transmit\n"
    " face |bytes    packets errs drop fifo frame "
    "compressed multicast|bytes    packets errs "
    "drop fifo colls carrier compressed\n"
)


def net_dev(s: Snapshot) -> str:
    st = link_stats(s)
    fields = (
        st["rx_bytes"], st["rx_packets"], st["rx_errors"],
        st["rx_dropped"] + st["rx_missed_errors"],
        st["rx_fifo_errors"],
        st["rx_length_errors"] + st["rx_over_errors"] + st["rx_crc_errors"] + st["rx_frame_errors"],
        st["rx_compressed"], st["multicast"],
        st["tx_bytes"], st["tx_packets"], st["tx_errors"], st["tx_dropped"],
        st["tx_fifo_errors"], st["collisions"],
        st["tx_carrier_errors"] + st["tx_aborted_errors"] + st["tx_window_errors"]
        + st["tx_heartbeat_errors"],
        st["tx_compressed"],
    )
    widths = (7, 7, 4, 4, 4, 5, 10, 9, 8, 7, 4, 4, 4, 5, 7, 10)
    line = f"{IFNAME:>6s}:" + "".join(f" {v:>{w}d}" for v, w in zip(fields, widths)) + "\n"
    return NET_DEV_HEADER + line


# ----------------------------------------------------------------------------------------
# /proc/net/snmp

IP_COLUMNS = ("Forwarding", "DefaultTTL", "InReceives", "InHdrErrors", "InAddrErrors",
              "ForwDatagrams", "InUnknownProtos", "InDiscards", "InDelivers", "OutRequests",
              "OutDiscards", "OutNoRoutes", "ReasmTimeout", "ReasmReqds", "ReasmOKs",
              "ReasmFails", "FragOKs", "FragFails", "FragCreates", "OutTransmits")
_ICMP_TYPES = ("DestUnreachs", "TimeExcds", "ParmProbs", "SrcQuenchs", "Redirects", "Echos",
               "EchoReps", "Timestamps", "TimestampReps", "AddrMasks", "AddrMaskReps")
ICMP_COLUMNS = (("InMsgs", "InErrors", "InCsumErrors") + tuple(f"In{t}" for t in _ICMP_TYPES)
                + ("OutMsgs", "OutErrors", "OutRateLimitGlobal", "OutRateLimitHost")
                + tuple(f"Out{t}" for t in _ICMP_TYPES))
TCP_COLUMNS = ("RtoAlgorithm", "RtoMin", "RtoMax", "MaxConn", "ActiveOpens", "PassiveOpens",
               "AttemptFails", "EstabResets", "CurrEstab", "InSegs", "OutSegs", "RetransSegs",
               "InErrs", "OutRsts", "InCsumErrors")
UDP_COLUMNS = ("InDatagrams", "NoPorts", "InErrors", "OutDatagrams", "RcvbufErrors",
               "SndbufErrors", "InCsumErrors", "IgnoredMulti", "MemErrors")


def _pair(tag: str, columns, values) -> str:
    return (f"{tag}:" + "".join(f" {c}" for c in columns) + "\n"
            + f"{tag}:" + "".join(f" {v}" for v in values) + "\n")


def snmp(s: Snapshot) -> str:
    ip = dict.fromkeys(IP_COLUMNS, 0)
    ip["Forwarding"] = 2        # 1 = forwarding, 2 = not a router
    ip["DefaultTTL"] = 64
    ip["InReceives"] = _sum(s, C.IP_IN_RECEIVES)
    ip["InHdrErrors"] = _sum(s, C.IP_IN_HDR_ERRORS)
    ip["InUnknownProtos"] = _sum(s, C.IP_IN_UNKNOWN_PROTOS)
    ip["InDelivers"] = _sum(s, C.IP_IN_DELIVERS)

    tcp = dict.fromkeys(TCP_COLUMNS, 0)
    # tcp_mib_init (net/ipv4/af_inet.c): RFC 2012 constants every kernel reports.
    tcp["RtoAlgorithm"] = 1
    tcp["RtoMin"] = 200          # TCP_RTO_MIN in ms
    tcp["RtoMax"] = 120000       # TCP_RTO_MAX in ms
    tcp["MaxConn"] = -1          # printed %ld
    tcp["InSegs"] = _sum(s, C.TCP_IN_SEGS)

    udp = dict.fromkeys(UDP_COLUMNS, 0)
    udp["InDatagrams"] = _sum(s, C.UDP_IN_DATAGRAMS)
    udp["NoPorts"] = _sum(s, C.UDP_NO_PORTS)
    udp["InErrors"] = _sum(s, C.UDP_IN_ERRORS)
    udp["RcvbufErrors"] = _sum(s, C.UDP_RCVBUF_ERRORS)
    udp["MemErrors"] = _sum(s, C.UDP_MEM_ERRORS)

    # IcmpMsg lines appear only for non-zero ICMP message counters; none are modelled.
    return (_pair("Ip", IP_COLUMNS, ip.values())
            + _pair("Icmp", ICMP_COLUMNS, [0] * len(ICMP_COLUMNS))
            + _pair("Tcp", TCP_COLUMNS, tcp.values())
            + _pair("Udp", UDP_COLUMNS, udp.values())
            + _pair("UdpLite", UDP_COLUMNS, [0] * len(UDP_COLUMNS)))


# ----------------------------------------------------------------------------------------
# /proc/net/netstat

# snmp4_net_list[] of 6.18, in order.
TCPEXT_COLUMNS = (
    "SyncookiesSent", "SyncookiesRecv", "SyncookiesFailed", "EmbryonicRsts", "PruneCalled",
    "RcvPruned", "OfoPruned", "OutOfWindowIcmps", "LockDroppedIcmps", "ArpFilter", "TW",
    "TWRecycled", "TWKilled", "PAWSActive", "PAWSEstab", "BeyondWindow", "TSEcrRejected",
    "PAWSOldAck", "PAWSTimewait", "DelayedACKs", "DelayedACKLocked", "DelayedACKLost",
    "ListenOverflows", "ListenDrops", "TCPHPHits", "TCPPureAcks", "TCPHPAcks",
    "TCPRenoRecovery", "TCPSackRecovery", "TCPSACKReneging", "TCPSACKReorder",
    "TCPRenoReorder", "TCPTSReorder", "TCPFullUndo", "TCPPartialUndo", "TCPDSACKUndo",
    "TCPLossUndo", "TCPLostRetransmit", "TCPRenoFailures", "TCPSackFailures",
    "TCPLossFailures", "TCPFastRetrans", "TCPSlowStartRetrans", "TCPTimeouts",
    "TCPLossProbes", "TCPLossProbeRecovery", "TCPRenoRecoveryFail", "TCPSackRecoveryFail",
    "TCPRcvCollapsed", "TCPBacklogCoalesce", "TCPDSACKOldSent", "TCPDSACKOfoSent",
    "TCPDSACKRecv", "TCPDSACKOfoRecv", "TCPAbortOnData", "TCPAbortOnClose",
    "TCPAbortOnMemory", "TCPAbortOnTimeout", "TCPAbortOnLinger", "TCPAbortFailed",
    "TCPMemoryPressures", "TCPMemoryPressuresChrono", "TCPSACKDiscard", "TCPDSACKIgnoredOld",
    "TCPDSACKIgnoredNoUndo", "TCPSpuriousRTOs", "TCPMD5NotFound", "TCPMD5Unexpected",
    "TCPMD5Failure", "TCPSackShifted", "TCPSackMerged", "TCPSackShiftFallback",
    "TCPBacklogDrop", "PFMemallocDrop", "TCPMinTTLDrop", "TCPDeferAcceptDrop",
    "IPReversePathFilter", "TCPTimeWaitOverflow", "TCPReqQFullDoCookies", "TCPReqQFullDrop",
    "TCPRetransFail", "TCPRcvCoalesce", "TCPOFOQueue", "TCPOFODrop", "TCPOFOMerge",
    "TCPChallengeACK", "TCPSYNChallenge", "TCPFastOpenActive", "TCPFastOpenActiveFail",
    "TCPFastOpenPassive", "TCPFastOpenPassiveFail", "TCPFastOpenListenOverflow",
    "TCPFastOpenCookieReqd", "TCPFastOpenBlackhole", "TCPSpuriousRtxHostQueues",
    "BusyPollRxPackets", "TCPAutoCorking", "TCPFromZeroWindowAdv", "TCPToZeroWindowAdv",
    "TCPWantZeroWindowAdv", "TCPSynRetrans", "TCPOrigDataSent", "TCPHystartTrainDetect",
    "TCPHystartTrainCwnd", "TCPHystartDelayDetect", "TCPHystartDelayCwnd",
    "TCPACKSkippedSynRecv", "TCPACKSkippedPAWS", "TCPACKSkippedSeq", "TCPACKSkippedFinWait2",
    "TCPACKSkippedTimeWait", "TCPACKSkippedChallenge", "TCPWinProbe", "TCPKeepAlive",
    "TCPMTUPFail", "TCPMTUPSuccess", "TCPDelivered", "TCPDeliveredCE", "TCPAckCompressed",
    "TCPZeroWindowDrop", "TCPRcvQDrop", "TCPWqueueTooBig", "TCPFastOpenPassiveAltKey",
    "TcpTimeoutRehash", "TcpDuplicateDataRehash", "TCPDSACKRecvSegs",
    "TCPDSACKIgnoredDubious", "TCPMigrateReqSuccess", "TCPMigrateReqFailure", "TCPPLBRehash",
    "TCPAORequired", "TCPAOBad", "TCPAOKeyNotFound", "TCPAOGood", "TCPAODroppedIcmps",
)
# snmp4_ipextstats_list[] of 6.18, in order (printed "%llu": u64 sums).
IPEXT_COLUMNS = ("InNoRoutes", "InTruncatedPkts", "InMcastPkts", "OutMcastPkts", "InBcastPkts",
                 "OutBcastPkts", "InOctets", "OutOctets", "InMcastOctets", "OutMcastOctets",
                 "InBcastOctets", "OutBcastOctets", "InCsumErrors", "InNoECTPkts",
                 "InECT1Pkts", "InECT0Pkts", "InCEPkts", "ReasmOverlaps")
# mptcp_snmp_list[] of 6.18 (net/mptcp/mib.c), in order.
MPTCPEXT_COLUMNS = (
    "MPCapableSYNRX", "MPCapableSYNTX", "MPCapableSYNACKRX", "MPCapableACKRX",
    "MPCapableFallbackACK", "MPCapableFallbackSYNACK", "MPCapableSYNTXDrop",
    "MPCapableSYNTXDisabled", "MPCapableEndpAttempt", "MPFallbackTokenInit", "MPTCPRetrans",
    "MPJoinNoTokenFound", "MPJoinSynRx", "MPJoinSynBackupRx", "MPJoinSynAckRx",
    "MPJoinSynAckBackupRx", "MPJoinSynAckHMacFailure", "MPJoinAckRx", "MPJoinAckHMacFailure",
    "MPJoinRejected", "MPJoinSynTx", "MPJoinSynTxCreatSkErr", "MPJoinSynTxBindErr",
    "MPJoinSynTxConnectErr", "DSSNotMatching", "DSSCorruptionFallback", "DSSCorruptionReset",
    "InfiniteMapTx", "InfiniteMapRx", "DSSNoMatchTCP", "DataCsumErr", "OFOQueueTail",
    "OFOQueue", "OFOMerge", "NoDSSInWindow", "DuplicateData", "AddAddr", "AddAddrTx",
    "AddAddrTxDrop", "EchoAdd", "EchoAddTx", "EchoAddTxDrop", "PortAdd", "AddAddrDrop",
    "MPJoinPortSynRx", "MPJoinPortSynAckRx", "MPJoinPortAckRx", "MismatchPortSynRx",
    "MismatchPortAckRx", "RmAddr", "RmAddrDrop", "RmAddrTx", "RmAddrTxDrop", "RmSubflow",
    "MPPrioTx", "MPPrioRx", "MPFailTx", "MPFailRx", "MPFastcloseTx", "MPFastcloseRx",
    "MPRstTx", "MPRstRx", "RcvPruned", "SubflowStale", "SubflowRecover", "SndWndShared",
    "RcvWndShared", "RcvWndConflictUpdate", "RcvWndConflict", "MPCurrEstab", "Blackhole",
    "MPCapableDataFallback", "MD5SigFallback", "DssFallback", "SimultConnectFallback",
    "FallbackFailed", "WinProbe",
)


def netstat(s: Snapshot) -> str:
    ipext = dict.fromkeys(IPEXT_COLUMNS, 0)
    ipext["InTruncatedPkts"] = _sum(s, C.IP_IN_TRUNCATED_PKTS)
    ipext["InOctets"] = _sum(s, C.IP_IN_OCTETS)
    ipext["InCsumErrors"] = _sum(s, C.IP_IN_CSUM_ERRORS)
    ipext["InNoECTPkts"] = _sum(s, C.IP_IN_NOECT_PKTS)
    ipext["InECT1Pkts"] = _sum(s, C.IP_IN_ECT1_PKTS)
    ipext["InECT0Pkts"] = _sum(s, C.IP_IN_ECT0_PKTS)
    ipext["InCEPkts"] = _sum(s, C.IP_IN_CE_PKTS)
    # MPTcpExt is printed by netstat_seq_show only with CONFIG_MPTCP=y (the distributions'
    # default; mptcp_seq_show is an empty stub otherwise). No MPTCP socket ever existed, so
    # mib.mptcp_statistics is unallocated and every value reads 0.
    return (_pair("TcpExt", TCPEXT_COLUMNS, [0] * len(TCPEXT_COLUMNS))
            + _pair("IpExt", IPEXT_COLUMNS, [v & U64 for v in ipext.values()])
            + _pair("MPTcpExt", MPTCPEXT_COLUMNS, [0] * len(MPTCPEXT_COLUMNS)))


# ----------------------------------------------------------------------------------------
# /proc/net/udp

UDP_HEADER = ("   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt"
              "   uid  timeout inode ref pointer drops")
UDP_SEQ_WIDTH = 127        # udp4_seq_show: seq_setwidth(seq, 127) ... seq_pad(seq, '\n')
TCP_ESTABLISHED = 1
TCP_CLOSE = 7
SOCK_INODE_BASE = 10000    # sock_i_ino: any fixed per-socket number will do


def _be32_hex(dotted: str) -> str:
    """The "%08X" of a __be32 address, loaded as a native (little-endian x86) u32."""
    a, b, c, d = (int(x) for x in dotted.split("."))
    return f"{(d << 24) | (c << 16) | (b << 8) | a:08X}"


def udp(s: Snapshot) -> str:
    lines = [UDP_HEADER]
    for sk in sorted(s.sockets, key=lambda k: k.index):
        if sk.connect:
            ip, _, port = sk.connect.rpartition(":")
            rem, st = f"{_be32_hex(ip)}:{int(port):04X}", TCP_ESTABLISHED
        else:
            rem, st = "00000000:0000", TCP_CLOSE
        # sl: the kernel prints the primary hash bucket, (port + netns hash_mix) & mask, and
        # hash_mix is random per boot; the socket number stands in for it.
        # local: a real connect() on a wildcard-bound socket also fills inet_rcv_saddr with
        # the route's source address (__ip4_datagram_connect); the emulated host has none.
        # rx_queue: udp_rqueue_get() = sk_rmem_alloc - forward_deficit.
        # pointer: %pK under kptr_restrict prints 16 zeros.
        lines.append(
            f"{sk.index:5d}: 00000000:{sk.port:04X} {rem} {st:02X} "
            f"{0:08X}:{(sk.rmem - sk.deficit) & U32:08X} {0:02X}:{0:08X} {0:08X} {0:5d} {0:8d} "
            f"{SOCK_INODE_BASE + sk.index} 2 {0:016X} {sk.drops & U32}")
    return "".join(f"{line:<{UDP_SEQ_WIDTH}s}\n" for line in lines)


# ----------------------------------------------------------------------------------------
# /sys/class/net/eth0 attributes

MAC_ADDRESS = "02:00:00:00:00:01"    # locally administered, unicast
IFINDEX = 2                          # lo is 1
IFF_UP = 0x1
IFF_BROADCAST = 0x2
IFF_MULTICAST = 0x1000
ARPHRD_ETHER = 1
NET_NAME_ENUM = 1                    # alloc_etherdev names "eth%d"
NET_ADDR_PERM = 0                    # the MAC comes from the NIC's NVM
ETH_DATA_LEN = 1500
DEFAULT_TX_QUEUE_LEN = 1000


def netdev_attrs(s: Snapshot) -> dict[str, str]:
    """net_class_attrs of eth0, up with carrier, name -> text.

    Left out: the phys_* files (netdev_phys_group hides them without ndo_get_phys_port_id
    or a devlink port). ifalias reads empty (no alias set: dev_get_alias returns 0).
    Carrier counts: igb_probe calls netif_carrier_off after register_netdev (down 1), the
    link came up once (up 1); carrier_changes is their sum.
    """
    return {
        "netdev_group": "0\n",
        "type": f"{ARPHRD_ETHER}\n",
        "dev_id": "0x0\n",                      # "%#x": the kernel prints 0x even for 0
        "dev_port": "0\n",
        "iflink": f"{IFINDEX}\n",
        "ifindex": f"{IFINDEX}\n",
        "name_assign_type": f"{NET_NAME_ENUM}\n",
        "addr_assign_type": f"{NET_ADDR_PERM}\n",
        "addr_len": "6\n",
        "link_mode": "0\n",
        "address": f"{MAC_ADDRESS}\n",         # sysfs_format_mac: "%*phC\n"
        "broadcast": "ff:ff:ff:ff:ff:ff\n",
        "speed": f"{int(s.cfg['ethtool.speed'])}\n",
        "duplex": "full\n",
        "dormant": "0\n",
        "testing": "0\n",
        "operstate": "up\n",
        "carrier_changes": "2\n",
        "ifalias": "",
        "carrier": "1\n",
        "mtu": f"{ETH_DATA_LEN}\n",
        "flags": f"{IFF_UP | IFF_BROADCAST | IFF_MULTICAST:#x}\n",
        "tx_queue_len": f"{DEFAULT_TX_QUEUE_LEN}\n",
        "gro_flush_timeout": "0\n",
        "napi_defer_hard_irqs": "0\n",
        "proto_down": "0\n",
        "carrier_up_count": "1\n",
        "carrier_down_count": "1\n",
        "threaded": "0\n",
    }


# ----------------------------------------------------------------------------------------
# the whole tree


def _sysctl_value(name: str, value, ncpus: int) -> str:
    if name in _MASK_KNOBS:
        return format_mask(parse_mask(str(value)), ncpus) + "\n"
    if isinstance(value, bool):
        return f"{int(value)}\n"
    return f"{value}\n"


def tree(s: Snapshot) -> dict[str, str]:
    """Relative path -> text for every file of the emulated /proc and /sys."""
    cfg = s.cfg
    ncpus = _ncpus(s)
    all_cpus = (1 << ncpus) - 1
    files: dict[str, str] = {
        "proc/net/softnet_stat": softnet_stat(s),
        "proc/interrupts": interrupts(s),
        "proc/softirqs": softirqs(s),
        "proc/stat": stat(s),
        "proc/uptime": uptime(s),
        "proc/net/dev": net_dev(s),
        "proc/net/snmp": snmp(s),
        "proc/net/netstat": netstat(s),
        "proc/net/udp": udp(s),
    }
    for name, value in cfg["net.core"].items():
        files[f"proc/sys/net/core/{name}"] = _sysctl_value(name, value, ncpus)
    files["proc/irq/default_smp_affinity"] = format_mask(all_cpus, ncpus) + "\n"
    for q in range(cfg.nqueues):
        irq = cfg.irq_of_queue(q)
        aff = cfg.irq_affinity(q)
        eff = 1 << int(s.effective_cpu[q])
        d = f"proc/irq/{irq}"
        files[f"{d}/smp_affinity"] = format_mask(aff, ncpus) + "\n"
        files[f"{d}/smp_affinity_list"] = format_list(aff) + "\n"
        files[f"{d}/effective_affinity"] = format_mask(eff, ncpus) + "\n"
        files[f"{d}/effective_affinity_list"] = format_list(eff) + "\n"
    net = f"sys/class/net/{IFNAME}"
    for name, text in netdev_stats(s).items():
        files[f"{net}/statistics/{name}"] = text
    for q in range(cfg.nqueues):
        files[f"{net}/queues/rx-{q}/rps_cpus"] = format_mask(cfg.rps_mask(q), ncpus) + "\n"
        files[f"{net}/queues/rx-{q}/rps_flow_cnt"] = f"{int(cfg.queue(q)['rps_flow_cnt'])}\n"
    for name, text in netdev_attrs(s).items():
        files[f"{net}/{name}"] = text
    cpu_list = format_list(all_cpus) + "\n"
    for name in ("online", "possible", "present"):
        files[f"sys/devices/system/cpu/{name}"] = cpu_list
    return files
