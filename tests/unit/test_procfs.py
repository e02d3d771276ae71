"""Each renderer against text written by hand from the kernel's format strings.

The expected strings below are spelled out from the seq_printf formats (widths, separators,
trailing spaces), never produced by calling the renderer.
"""

import os

import numpy as np
import pytest

from emu import procfs
from emu.rundir import write_tree
from emu.config import resolve
from emu.counters import C, CPU_SLOTS, NIC_SLOTS, Q_BYTES, Q_DROPS, Q_PACKETS, nq

TWO_CPUS = """
[run]
cpus = 2
[ethtool]
rx_queues = 2
[[traffic.sources]]
name = "a"
"""


def two_cpu_cfg(*sets, text=TWO_CPUS):
    return resolve(text, sets=list(sets))


def snap(cfg, btime=1_700_000_000, uptime_ns=0, effective_cpu=None):
    cpu = np.zeros((cfg.ncpus, CPU_SLOTS), dtype="<u8")
    nic = np.zeros(NIC_SLOTS, dtype="<u8")
    if effective_cpu is None:
        effective_cpu = [q % cfg.ncpus for q in range(cfg.nqueues)]
    return procfs.Snapshot(cpu=cpu, nic=nic, cfg=cfg, btime=btime, uptime_ns=uptime_ns,
                           effective_cpu=effective_cpu)


# ----------------------------------------------------------------------------------------
# softnet_stat


def test_softnet_stat_15_columns_hex_and_u32_wrap():
    s = snap(two_cpu_cfg())
    c = s.cpu
    c[0, C.PROCESSED] = 0x1234
    c[0, C.DROPPED] = 5
    c[0, C.TIME_SQUEEZE] = 3
    c[0, C.RECEIVED_RPS] = 7
    c[0, C.INPUT_QLEN] = 2
    c[0, C.PROCESS_QLEN] = 1
    c[1, C.PROCESSED] = 2**32 + 0x10          # u32 wraps
    c[1, C.FLOW_LIMIT_COUNT] = 0xABCDEF
    c[1, C.PROCESS_QLEN] = 700
    assert procfs.softnet_stat(s) == (
        "00001234 00000005 00000003 00000000 00000000 00000000 00000000 00000000 00000000 "
        "00000007 00000000 00000003 00000000 00000002 00000001\n"
        "00000010 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 "
        "00000000 00abcdef 000002bc 00000001 00000000 000002bc\n"
    )


# ----------------------------------------------------------------------------------------
# interrupts


def test_interrupts_two_cpus():
    s = snap(two_cpu_cfg())
    c = s.cpu
    c[0, C.IRQ_0] = 7
    c[1, C.IRQ_0 + 1] = 1523
    c[0, C.LOC] = 250
    c[1, C.LOC] = 251
    c[1, C.RES] = 9
    c[0, C.CAL] = 10
    c[1, C.CAL] = 2**32 + 20                  # unsigned int
    assert procfs.interrupts(s) == (
        "           CPU0       CPU1       \n"
        "120:          7          0 IR-PCI-MSIX-0000:3b:00.0   0-edge      eth0-TxRx-0\n"
        "121:          0       1523 IR-PCI-MSIX-0000:3b:00.0   1-edge      eth0-TxRx-1\n"
        "NMI:          0          0   Non-maskable interrupts\n"
        "LOC:        250        251   Local timer interrupts\n"
        "SPU:          0          0   Spurious interrupts\n"
        "PMI:          0          0   Performance monitoring interrupts\n"
        "IWI:          0          0   IRQ work interrupts\n"
        "RTR:          0          0   APIC ICR read retries\n"
        "RES:          0          9   Rescheduling interrupts\n"
        "CAL:         10         20   Function call interrupts\n"
        "TLB:          0          0   TLB shootdowns\n"
        "ERR:          0\n"
        "MIS:          0\n"
    )


def test_interrupts_reference_example_row_four_cpus():
    # kernel-rx-path.md §3.2 examples (4 CPUs, prec 3, 6.18 layout); IRQ base 125.
    cfg = resolve(sets=["run.cpus=4", "ethtool.rx_queues=4", "irq.base=125"])
    s = snap(cfg)
    s.cpu[1, C.IRQ_0] = 1523
    s.cpu[:, C.CAL] = [10, 20, 30, 40]
    lines = procfs.interrupts(s).splitlines()
    assert lines[0] == "           CPU0       CPU1       CPU2       CPU3       "
    # (the reference's example row shows hwirq 1 for eth0-TxRx-0; here hwirq = queue index)
    assert lines[1] == ("125:          0       1523          0          0 "
                        "IR-PCI-MSIX-0000:3b:00.0   0-edge      eth0-TxRx-0")
    assert "CAL:         10         20         30         40   Function call interrupts" in lines


def test_interrupt_prec_grows_with_nr_irqs():
    assert procfs.irq_prec(256) == 3
    assert procfs.irq_prec(999) == 3
    assert procfs.irq_prec(1000) == 4
    assert procfs.irq_prec(10000) == 5
    cfg = two_cpu_cfg("irq.base=1000")
    assert procfs.nr_irqs(cfg) == 1002
    s = snap(cfg)
    s.cpu[0, C.IRQ_0 + 1] = 3
    text = procfs.interrupts(s)
    assert text.startswith("            CPU0       CPU1       \n")          # prec 4 + 8 spaces
    assert "1001:          3          0 IR-PCI-MSIX-0000:3b:00.0    1-edge      eth0-TxRx-1\n" in text
    assert " ERR:          0\n" in text


# ----------------------------------------------------------------------------------------
# softirqs


def test_softirqs():
    s = snap(two_cpu_cfg())
    s.cpu[0, C.SOFTIRQ_0 + 3] = 12345
    s.cpu[1, C.SOFTIRQ_0 + 3] = 6789
    s.cpu[1, C.SOFTIRQ_0 + 1] = 2**32 + 1
    s.cpu[0, C.SOFTIRQ_0 + 9] = 4242424242
    assert procfs.softirqs(s) == (
        "                    CPU0       CPU1       \n"
        "          HI:          0          0\n"
        "       TIMER:          0          1\n"
        "      NET_TX:          0          0\n"
        "      NET_RX:      12345       6789\n"
        "       BLOCK:          0          0\n"
        "    IRQ_POLL:          0          0\n"
        "     TASKLET:          0          0\n"
        "       SCHED:          0          0\n"
        "     HRTIMER:          0          0\n"
        "         RCU: 4242424242          0\n"
    )


# ----------------------------------------------------------------------------------------
# stat


def test_stat():
    s = snap(two_cpu_cfg(), btime=1_700_000_123)
    c = s.cpu
    # cpu0: user 1.5 ticks -> 1; cpu1: user 1.5 ticks -> 1; total 3.0 ticks -> 3
    c[0, C.T_USER] = 15_000_000
    c[1, C.T_USER] = 15_000_000
    c[0, C.T_SYSTEM] = 20_000_000
    c[0, C.T_IDLE] = 1_000_000_000
    c[1, C.T_IDLE] = 990_000_000
    c[0, C.T_HARDIRQ] = 30_000_000
    c[1, C.T_SOFTIRQ] = 40_000_000
    c[1, C.T_KSOFTIRQD] = 50_000_000           # charged to softirq
    c[1, C.T_STEAL] = 60_000_000
    c[0, C.IRQ_0] = 100
    c[1, C.IRQ_0] = 5
    c[1, C.IRQ_0 + 1] = 7
    c[0, C.LOC] = 1000
    c[1, C.RES] = 3
    c[1, C.CAL] = 2
    c[0, C.CTXT] = 400
    c[1, C.CTXT] = 44
    c[0, C.SOFTIRQ_0 + 1] = 10
    c[1, C.SOFTIRQ_0 + 3] = 20
    c[0, C.SOFTIRQ_0 + 3] = 30
    # intr total: 100 + 5 + 7 (device) + 1000 + 3 + 2 (LOC RES CAL) + 0 (ERR MIS) = 1117
    intr = "intr 1117" + " 0" * 120 + " 105 7" + " 0" * (256 - 122) + "\n"
    assert procfs.stat(s) == (
        "cpu  3 0 2 199 0 3 9 6 0 0\n"
        "cpu0 1 0 2 100 0 3 0 0 0 0\n"
        "cpu1 1 0 0 99 0 0 9 6 0 0\n"
        + intr +
        "ctxt 444\n"
        "btime 1700000123\n"
        "processes 3\n"
        "procs_running 1\n"
        "procs_blocked 0\n"
        "softirq 60 0 10 0 50 0 0 0 0 0 0\n"
    )


# ----------------------------------------------------------------------------------------
# uptime


@pytest.mark.parametrize("up_ns,idle,expected", [
    (5_129_999_999, (1_005_000_000, 2_000_000_000), "5.12 3.00\n"),
    (50_000_000, (0, 9_999_999), "0.05 0.00\n"),
    (3_600_000_000_000, (3_599_990_000_000, 3_600_000_000_000), "3600.00 7199.99\n"),
])
def test_uptime(up_ns, idle, expected):
    s = snap(two_cpu_cfg(), uptime_ns=up_ns)
    s.cpu[:, C.T_IDLE] = idle
    assert procfs.uptime(s) == expected


# ----------------------------------------------------------------------------------------
# net/dev and statistics

HEADER = ("Inter-|   Receive                                                |  Transmit\n"
          " face |bytes    packets errs drop fifo frame compressed multicast"
          "|bytes    packets errs drop fifo colls carrier compressed\n")


def eth0_snapshot():
    s = snap(two_cpu_cfg())
    s.nic[nq(0, Q_BYTES)] = 1000
    s.nic[nq(1, Q_BYTES)] = 2345
    s.nic[nq(0, Q_PACKETS)] = 10
    s.nic[nq(1, Q_PACKETS)] = 20
    s.nic[nq(0, Q_DROPS)] = 4
    s.nic[nq(1, Q_DROPS)] = 1
    s.cpu[0, C.RX_DROPPED] = 2
    s.cpu[1, C.RX_DROPPED] = 1
    s.cpu[1, C.RX_NOHANDLER] = 6
    return s


def test_net_dev():
    s = eth0_snapshot()
    # "%6s: %7llu %7llu %4llu %4llu %4llu %5llu %10llu %9llu %8llu %7llu %4llu %4llu %4llu %5llu %7llu %10llu\n"
    line = ("  eth0:" "    3345" "      30" "    0" "    3" "    5" "     0" "          0"
            "         0" "        0" "       0" "    0" "    0" "    0" "     0" "       0"
            "          0\n")
    assert procfs.net_dev(s) == HEADER + line


def test_net_dev_wide_numbers_push_columns():
    s = snap(two_cpu_cfg())
    s.nic[nq(0, Q_BYTES)] = 123456789
    s.nic[nq(0, Q_PACKETS)] = 98765
    s.cpu[0, C.RX_DROPPED] = 12
    assert procfs.net_dev(s).splitlines()[2] == (
        "  eth0: 123456789   98765    0   12    0     0          0         0        0       0"
        "    0    0    0     0       0          0")


def test_netdev_stats_24_files_consistent_with_net_dev():
    st = procfs.netdev_stats(eth0_snapshot())
    assert len(st) == 24
    assert st == {
        "rx_packets": "30\n", "tx_packets": "0\n", "rx_bytes": "3345\n", "tx_bytes": "0\n",
        "rx_errors": "0\n", "tx_errors": "0\n", "rx_dropped": "3\n", "tx_dropped": "0\n",
        "multicast": "0\n", "collisions": "0\n", "rx_length_errors": "0\n",
        "rx_over_errors": "0\n", "rx_crc_errors": "0\n", "rx_frame_errors": "0\n",
        "rx_fifo_errors": "5\n", "rx_missed_errors": "0\n", "tx_aborted_errors": "0\n",
        "tx_carrier_errors": "0\n", "tx_fifo_errors": "0\n", "tx_heartbeat_errors": "0\n",
        "tx_window_errors": "0\n", "rx_compressed": "0\n", "tx_compressed": "0\n",
        "rx_nohandler": "6\n",
    }


# ----------------------------------------------------------------------------------------
# snmp


def test_snmp():
    s = snap(two_cpu_cfg())
    c = s.cpu
    c[0, C.IP_IN_RECEIVES] = 100
    c[1, C.IP_IN_RECEIVES] = 50
    c[1, C.IP_IN_HDR_ERRORS] = 2
    c[0, C.IP_IN_UNKNOWN_PROTOS] = 3
    c[0, C.IP_IN_DELIVERS] = 140
    c[1, C.IP_IN_DELIVERS] = 5
    c[0, C.TCP_IN_SEGS] = 77
    c[0, C.UDP_IN_DATAGRAMS] = 40
    c[1, C.UDP_IN_DATAGRAMS] = 20
    c[1, C.UDP_NO_PORTS] = 8
    c[0, C.UDP_IN_ERRORS] = 6
    c[0, C.UDP_RCVBUF_ERRORS] = 5
    c[1, C.UDP_MEM_ERRORS] = 1
    icmp_in = " ".join(f"In{t}" for t in ("DestUnreachs", "TimeExcds", "ParmProbs", "SrcQuenchs",
                                            "Redirects", "Echos", "EchoReps", "Timestamps",
                                            "TimestampReps", "AddrMasks", "AddrMaskReps"))
    icmp_out = icmp_in.replace("In", "Out")
    assert procfs.snmp(s) == (
        "Ip: Forwarding DefaultTTL InReceives InHdrErrors InAddrErrors ForwDatagrams "
        "InUnknownProtos InDiscards InDelivers OutRequests OutDiscards OutNoRoutes "
        "ReasmTimeout ReasmReqds ReasmOKs ReasmFails FragOKs FragFails FragCreates OutTransmits\n"
        "Ip: 2 64 150 2 0 0 3 0 145 0 0 0 0 0 0 0 0 0 0 0\n"
        "Icmp: InMsgs InErrors InCsumErrors " + icmp_in +
        " OutMsgs OutErrors OutRateLimitGlobal OutRateLimitHost " + icmp_out + "\n"
        "Icmp:" + " 0" * 29 + "\n"
        "Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails "
        "EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors\n"
        "Tcp: 1 200 120000 -1 0 0 0 0 0 77 0 0 0 0 0\n"
        "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors "
        "InCsumErrors IgnoredMulti MemErrors\n"
        "Udp: 60 8 6 0 5 0 0 0 1\n"
        "UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors "
        "InCsumErrors IgnoredMulti MemErrors\n"
        "UdpLite: 0 0 0 0 0 0 0 0 0\n"
    )


# ----------------------------------------------------------------------------------------
# netstat

# snmp4_net_list[] of 6.18 (net/ipv4/proc.c), copied name by name.
TCPEXT_NAMES = (
    "SyncookiesSent SyncookiesRecv SyncookiesFailed EmbryonicRsts PruneCalled RcvPruned "
    "OfoPruned OutOfWindowIcmps LockDroppedIcmps ArpFilter TW TWRecycled TWKilled PAWSActive "
    "PAWSEstab BeyondWindow TSEcrRejected PAWSOldAck PAWSTimewait DelayedACKs "
    "DelayedACKLocked DelayedACKLost ListenOverflows ListenDrops TCPHPHits TCPPureAcks "
    "TCPHPAcks TCPRenoRecovery TCPSackRecovery TCPSACKReneging TCPSACKReorder TCPRenoReorder "
    "TCPTSReorder TCPFullUndo TCPPartialUndo TCPDSACKUndo TCPLossUndo TCPLostRetransmit "
    "TCPRenoFailures TCPSackFailures TCPLossFailures TCPFastRetrans TCPSlowStartRetrans "
    "TCPTimeouts TCPLossProbes TCPLossProbeRecovery TCPRenoRecoveryFail TCPSackRecoveryFail "
    "TCPRcvCollapsed TCPBacklogCoalesce TCPDSACKOldSent TCPDSACKOfoSent TCPDSACKRecv "
    "TCPDSACKOfoRecv TCPAbortOnData TCPAbortOnClose TCPAbortOnMemory TCPAbortOnTimeout "
    "TCPAbortOnLinger TCPAbortFailed TCPMemoryPressures TCPMemoryPressuresChrono "
    "TCPSACKDiscard TCPDSACKIgnoredOld TCPDSACKIgnoredNoUndo TCPSpuriousRTOs TCPMD5NotFound "
    "TCPMD5Unexpected TCPMD5Failure TCPSackShifted TCPSackMerged TCPSackShiftFallback "
    "TCPBacklogDrop PFMemallocDrop TCPMinTTLDrop TCPDeferAcceptDrop IPReversePathFilter "
    "TCPTimeWaitOverflow TCPReqQFullDoCookies TCPReqQFullDrop TCPRetransFail TCPRcvCoalesce "
    "TCPOFOQueue TCPOFODrop TCPOFOMerge TCPChallengeACK TCPSYNChallenge TCPFastOpenActive "
    "TCPFastOpenActiveFail TCPFastOpenPassive TCPFastOpenPassiveFail "
    "TCPFastOpenListenOverflow TCPFastOpenCookieReqd TCPFastOpenBlackhole "
    "TCPSpuriousRtxHostQueues BusyPollRxPackets TCPAutoCorking TCPFromZeroWindowAdv "
    "TCPToZeroWindowAdv TCPWantZeroWindowAdv TCPSynRetrans TCPOrigDataSent "
    "TCPHystartTrainDetect TCPHystartTrainCwnd TCPHystartDelayDetect TCPHystartDelayCwnd "
    "TCPACKSkippedSynRecv TCPACKSkippedPAWS TCPACKSkippedSeq TCPACKSkippedFinWait2 "
    "TCPACKSkippedTimeWait TCPACKSkippedChallenge TCPWinProbe TCPKeepAlive TCPMTUPFail "
    "TCPMTUPSuccess TCPDelivered TCPDeliveredCE TCPAckCompressed TCPZeroWindowDrop "
    "TCPRcvQDrop TCPWqueueTooBig TCPFastOpenPassiveAltKey TcpTimeoutRehash "
    "TcpDuplicateDataRehash TCPDSACKRecvSegs TCPDSACKIgnoredDubious TCPMigrateReqSuccess "
    "TCPMigrateReqFailure TCPPLBRehash TCPAORequired TCPAOBad TCPAOKeyNotFound TCPAOGood "
    "TCPAODroppedIcmps"
)
# mptcp_snmp_list[] of 6.18 (net/mptcp/mib.c), copied name by name.
MPTCPEXT_NAMES = (
    "MPCapableSYNRX MPCapableSYNTX MPCapableSYNACKRX MPCapableACKRX MPCapableFallbackACK "
    "MPCapableFallbackSYNACK MPCapableSYNTXDrop MPCapableSYNTXDisabled MPCapableEndpAttempt "
    "MPFallbackTokenInit MPTCPRetrans MPJoinNoTokenFound MPJoinSynRx MPJoinSynBackupRx "
    "MPJoinSynAckRx MPJoinSynAckBackupRx MPJoinSynAckHMacFailure MPJoinAckRx "
    "MPJoinAckHMacFailure MPJoinRejected MPJoinSynTx MPJoinSynTxCreatSkErr MPJoinSynTxBindErr "
    "MPJoinSynTxConnectErr DSSNotMatching DSSCorruptionFallback DSSCorruptionReset "
    "InfiniteMapTx InfiniteMapRx DSSNoMatchTCP DataCsumErr OFOQueueTail OFOQueue OFOMerge "
    "NoDSSInWindow DuplicateData AddAddr AddAddrTx AddAddrTxDrop EchoAdd EchoAddTx "
    "EchoAddTxDrop PortAdd AddAddrDrop MPJoinPortSynRx MPJoinPortSynAckRx MPJoinPortAckRx "
    "MismatchPortSynRx MismatchPortAckRx RmAddr RmAddrDrop RmAddrTx RmAddrTxDrop RmSubflow "
    "MPPrioTx MPPrioRx MPFailTx MPFailRx MPFastcloseTx MPFastcloseRx MPRstTx MPRstRx "
    "RcvPruned SubflowStale SubflowRecover SndWndShared RcvWndShared RcvWndConflictUpdate "
    "RcvWndConflict MPCurrEstab Blackhole MPCapableDataFallback MD5SigFallback DssFallback "
    "SimultConnectFallback FallbackFailed WinProbe"
)


def test_netstat_tcpext_ipext_mptcpext():
    s = snap(two_cpu_cfg())
    c = s.cpu
    c[0, C.IP_IN_TRUNCATED_PKTS] = 2
    c[1, C.IP_IN_TRUNCATED_PKTS] = 1
    c[0, C.IP_IN_OCTETS] = 3_000_000_000
    c[1, C.IP_IN_OCTETS] = 2_000_000_000          # "%llu": the u64 sum is not cut to 32 bits
    c[1, C.IP_IN_CSUM_ERRORS] = 4
    c[0, C.IP_IN_NOECT_PKTS] = 2**64 - 10
    c[1, C.IP_IN_NOECT_PKTS] = 15                 # the u64 per-CPU sum wraps
    c[0, C.IP_IN_ECT1_PKTS] = 6
    c[1, C.IP_IN_ECT0_PKTS] = 7
    c[0, C.IP_IN_CE_PKTS] = 8
    c[1, C.IP_IN_CE_PKTS] = 1
    c[0, C.IP_IN_RECEIVES] = 999                  # a /proc/net/snmp counter: not here
    assert len(TCPEXT_NAMES.split()) == 135 and len(MPTCPEXT_NAMES.split()) == 77
    assert procfs.netstat(s) == (
        "TcpExt: " + TCPEXT_NAMES + "\n"
        "TcpExt:" + " 0" * 135 + "\n"
        "IpExt: InNoRoutes InTruncatedPkts InMcastPkts OutMcastPkts InBcastPkts OutBcastPkts "
        "InOctets OutOctets InMcastOctets OutMcastOctets InBcastOctets OutBcastOctets "
        "InCsumErrors InNoECTPkts InECT1Pkts InECT0Pkts InCEPkts ReasmOverlaps\n"
        "IpExt: 0 3 0 0 0 0 5000000000 0 0 0 0 0 4 5 6 7 9 0\n"
        "MPTcpExt: " + MPTCPEXT_NAMES + "\n"
        "MPTcpExt:" + " 0" * 77 + "\n"
    )


# ----------------------------------------------------------------------------------------
# udp

# "   sl  local_address ... drops" is 115 characters; seq_setwidth(127) + seq_pad pad it.
UDP_HDR = ("   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt"
           "   uid  timeout inode ref pointer drops" + " " * 12 + "\n")


def test_udp_no_sockets_is_the_header_alone():
    assert procfs.udp(snap(two_cpu_cfg())) == UDP_HDR


def test_udp_sockets_unconnected_and_connected():
    socks = (
        procfs.SockStat(index=0, port=9000, connect="", rmem=0x3000, drops=7, reader_cpu=0),
        procfs.SockStat(index=1, port=53, connect="10.0.0.1:5000", rmem=0, drops=0,
                        reader_cpu=1),
        procfs.SockStat(index=12, port=65535, connect="192.168.200.7:443",
                        rmem=212992, drops=2**32 + 3, reader_cpu=1),
    )
    s = procfs.Snapshot(cpu=np.zeros((2, CPU_SLOTS), dtype="<u8"),
                        nic=np.zeros(NIC_SLOTS, dtype="<u8"), cfg=two_cpu_cfg(),
                        btime=0, uptime_ns=0, effective_cpu=[0, 1], sockets=socks)
    # "%5d: %08X:%04X %08X:%04X %02X %08X:%08X %02X:%08lX %08X %5u %8d %lu %d %pK %u",
    # each line 118 characters, padded to 127. 10.0.0.1 is __be32 0a000001: %08X of the
    # little-endian load is 0100000A; 192.168.200.7 -> 07C8A8C0. drops is "%u" of an int.
    assert procfs.udp(s) == UDP_HDR + (
        "    0: 00000000:2328 00000000:0000 07 00000000:00003000 00:00000000 00000000"
        "     0        0 10000 2 0000000000000000 7" + " " * 9 + "\n"
        "    1: 00000000:0035 0100000A:1388 01 00000000:00000000 00:00000000 00000000"
        "     0        0 10001 2 0000000000000000 0" + " " * 9 + "\n"
        "   12: 00000000:FFFF 07C8A8C0:01BB 01 00000000:00034000 00:00000000 00000000"
        "     0        0 10012 2 0000000000000000 3" + " " * 9 + "\n"
    )


def test_udp_lines_of_127_or_more_get_no_padding_and_no_cut():
    socks = (procfs.SockStat(index=3, port=9000, connect="", rmem=0, drops=4_000_000_000,
                             reader_cpu=0),
             procfs.SockStat(index=123456, port=9001, connect="", rmem=0, drops=4_000_000_000,
                             reader_cpu=0))
    s = snap(two_cpu_cfg())
    s = procfs.Snapshot(cpu=s.cpu, nic=s.nic, cfg=s.cfg, btime=s.btime, uptime_ns=0,
                        effective_cpu=s.effective_cpu, sockets=socks)
    assert procfs.udp(s).splitlines()[1:] == [
        # 118 + 9 more digits of drops: exactly 127, seq_pad adds nothing
        "    3: 00000000:2328 00000000:0000 07 00000000:00000000 00:00000000 00000000"
        "     0        0 10003 2 0000000000000000 4000000000",
        # 129 characters: past the width, printed whole
        "123456: 00000000:2329 00000000:0000 07 00000000:00000000 00:00000000 00000000"
        "     0        0 133456 2 0000000000000000 4000000000",
    ]


# ----------------------------------------------------------------------------------------
# /sys/class/net/eth0 attributes


def test_netdev_attrs_up_with_carrier():
    s = snap(two_cpu_cfg("ethtool.speed=25000"))
    assert procfs.netdev_attrs(s) == {
        "netdev_group": "0\n", "type": "1\n", "dev_id": "0x0\n", "dev_port": "0\n",
        "iflink": "2\n", "ifindex": "2\n", "name_assign_type": "1\n",
        "addr_assign_type": "0\n", "addr_len": "6\n", "link_mode": "0\n",
        "address": "02:00:00:00:00:01\n", "broadcast": "ff:ff:ff:ff:ff:ff\n",
        "speed": "25000\n", "duplex": "full\n", "dormant": "0\n", "testing": "0\n",
        "operstate": "up\n", "carrier_changes": "2\n", "ifalias": "", "carrier": "1\n",
        "mtu": "1500\n", "flags": "0x1003\n", "tx_queue_len": "1000\n",
        "gro_flush_timeout": "0\n", "napi_defer_hard_irqs": "0\n", "proto_down": "0\n",
        "carrier_up_count": "1\n", "carrier_down_count": "1\n", "threaded": "0\n",
    }


# ----------------------------------------------------------------------------------------
# tree and write_tree


def test_tree_paths_and_config_files():
    cfg = two_cpu_cfg("sys.class.net.eth0.queues.rx-1.rps_cpus=3",
                      "sys.class.net.eth0.queues.rx-1.rps_flow_cnt=100",
                      "net.core.flow_limit_cpu_bitmap=2",
                      "net.core.netdev_budget=600",
                      "proc.irq.121.smp_affinity_list=0-1")
    t = procfs.tree(snap(cfg, effective_cpu=[0, 1]))
    assert t["proc/sys/net/core/netdev_budget"] == "600\n"
    assert t["proc/sys/net/core/netdev_budget_usecs"] == "8000\n"
    assert t["proc/sys/net/core/flow_limit_cpu_bitmap"] == "2\n"
    assert t["proc/sys/net/core/rmem_default"] == "212992\n"
    assert {k for k in t if k.startswith("proc/sys/net/core/")} == {
        f"proc/sys/net/core/{k}" for k in cfg["net.core"]}
    assert t["proc/irq/default_smp_affinity"] == "3\n"
    assert t["proc/irq/120/smp_affinity"] == "1\n"
    assert t["proc/irq/120/smp_affinity_list"] == "0\n"
    assert t["proc/irq/120/effective_affinity"] == "1\n"
    assert t["proc/irq/120/effective_affinity_list"] == "0\n"
    assert t["proc/irq/121/smp_affinity"] == "3\n"
    assert t["proc/irq/121/smp_affinity_list"] == "0-1\n"
    assert t["proc/irq/121/effective_affinity"] == "2\n"
    assert t["proc/irq/121/effective_affinity_list"] == "1\n"
    assert t["sys/class/net/eth0/queues/rx-0/rps_cpus"] == "0\n"
    assert t["sys/class/net/eth0/queues/rx-0/rps_flow_cnt"] == "0\n"
    assert t["sys/class/net/eth0/queues/rx-1/rps_cpus"] == "3\n"
    assert t["sys/class/net/eth0/queues/rx-1/rps_flow_cnt"] == "128\n"
    assert t["sys/class/net/eth0/gro_flush_timeout"] == "0\n"
    assert t["sys/class/net/eth0/napi_defer_hard_irqs"] == "0\n"
    assert t["sys/class/net/eth0/threaded"] == "0\n"
    for f in ("online", "possible", "present"):
        assert t[f"sys/devices/system/cpu/{f}"] == "0-1\n"
    assert t["sys/class/net/eth0/statistics/rx_fifo_errors"] == "0\n"
    assert len([k for k in t if k.startswith("sys/class/net/eth0/statistics/")]) == 24
    for k in ("proc/net/softnet_stat", "proc/interrupts", "proc/softirqs", "proc/stat",
              "proc/uptime", "proc/net/dev", "proc/net/snmp", "proc/net/netstat",
              "proc/net/udp"):
        assert t[k].endswith("\n")
    assert t["proc/uptime"] == "0.00 0.00\n"


def test_tree_netstat_udp_and_eth0_attributes():
    cfg = two_cpu_cfg("ethtool.speed=40000")
    s = snap(cfg)
    s.cpu[1, C.IP_IN_OCTETS] = 1234
    t = procfs.tree(s)
    assert t["proc/net/netstat"].splitlines()[3].split()[7] == "1234"     # IpExt InOctets
    assert t["proc/net/udp"] == UDP_HDR                                    # no sockets given
    net = "sys/class/net/eth0"
    assert t[f"{net}/operstate"] == "up\n"
    assert t[f"{net}/carrier"] == "1\n"
    assert t[f"{net}/flags"] == "0x1003\n"
    assert t[f"{net}/speed"] == "40000\n"
    assert t[f"{net}/address"] == "02:00:00:00:00:01\n"
    assert t[f"{net}/ifalias"] == ""
    attrs = {k[len(net) + 1:] for k in t if k.startswith(net + "/") and k.count("/") == 4}
    assert attrs == {
        "netdev_group", "type", "dev_id", "dev_port", "iflink", "ifindex", "name_assign_type",
        "addr_assign_type", "addr_len", "link_mode", "address", "broadcast", "speed",
        "duplex", "dormant", "testing", "operstate", "carrier_changes", "ifalias", "carrier",
        "mtu", "flags", "tx_queue_len", "gro_flush_timeout", "napi_defer_hard_irqs",
        "proto_down", "carrier_up_count", "carrier_down_count", "threaded"}
    sock = procfs.SockStat(index=0, port=9000, connect="", rmem=0, drops=0, reader_cpu=0)
    s2 = procfs.Snapshot(cpu=s.cpu, nic=s.nic, cfg=cfg, btime=s.btime, uptime_ns=0,
                         effective_cpu=s.effective_cpu, sockets=(sock,))
    assert procfs.tree(s2)["proc/net/udp"].splitlines()[1].startswith(
        "    0: 00000000:2328 00000000:0000 07 ")


def test_tree_masks_for_many_cpus():
    cfg = resolve(sets=["run.cpus=40", "ethtool.rx_queues=4",
                        "net.core.flow_limit_cpu_bitmap=ff,00000001",
                        "sys.class.net.eth0.queues.rx-0.rps_cpus=80,00000000"])
    t = procfs.tree(snap(cfg, effective_cpu=[0, 33, 2, 3]))
    assert t["proc/sys/net/core/flow_limit_cpu_bitmap"] == "ff,00000001\n"
    assert t["sys/class/net/eth0/queues/rx-0/rps_cpus"] == "80,00000000\n"
    assert t["sys/class/net/eth0/queues/rx-1/rps_cpus"] == "00,00000000\n"
    assert t["proc/irq/default_smp_affinity"] == "ff,ffffffff\n"
    assert t["proc/irq/121/effective_affinity"] == "02,00000000\n"
    assert t["proc/irq/121/effective_affinity_list"] == "33\n"
    assert t["sys/devices/system/cpu/online"] == "0-39\n"


def test_write_tree_atomic_and_in_place(tmp_path):
    root = str(tmp_path / "run")
    write_tree(root, {"proc/stat": "a\n", "sys/class/net/eth0/threaded": "0\n"})
    assert (tmp_path / "run/proc/stat").read_text() == "a\n"
    assert (tmp_path / "run/sys/class/net/eth0/threaded").read_text() == "0\n"
    ino = os.stat(tmp_path / "run/proc/stat").st_ino
    write_tree(root, {"proc/stat": "bb\n"})
    assert (tmp_path / "run/proc/stat").read_text() == "bb\n"
    assert os.listdir(tmp_path / "run/proc") == ["stat"]           # no temporaries left
    ino2 = os.stat(tmp_path / "run/proc/stat").st_ino
    assert ino2 != ino                                             # replaced by rename
    write_tree(root, {"proc/stat": "c\n"}, in_place=True)
    assert (tmp_path / "run/proc/stat").read_text() == "c\n"       # shorter text truncates
    assert os.stat(tmp_path / "run/proc/stat").st_ino == ino2      # same inode
