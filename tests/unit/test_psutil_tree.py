"""A rendered tree read back by psutil, the way a user points it at <run-dir>/proc."""

import contextlib

import numpy as np
import psutil

from emu import procfs
from emu.rundir import write_tree
from emu.config import resolve
from emu.counters import C, CPU_SLOTS, NIC_SLOTS, Q_BYTES, Q_DROPS, Q_PACKETS, nq

BTIME = 1_712_345_678


@contextlib.contextmanager
def procfs_path(path):
    saved = psutil.PROCFS_PATH
    psutil.PROCFS_PATH = path
    try:
        yield
    finally:
        psutil.PROCFS_PATH = saved


def rendered_tree(tmp_path):
    cfg = resolve(sets=["run.cpus=4", "ethtool.rx_queues=4", "irq.base=120"])
    cpu = np.zeros((cfg.ncpus, CPU_SLOTS), dtype="<u8")
    nic = np.zeros(NIC_SLOTS, dtype="<u8")
    for c in range(cfg.ncpus):
        cpu[c, C.T_USER] = (c + 1) * 1_230_000_000          # 123, 246, 369, 492 ticks
        cpu[c, C.T_SYSTEM] = (c + 1) * 450_000_000          # 45, 90, 135, 180
        cpu[c, C.T_IDLE] = 10_000_000_000 - c * 1_000_000_000
        cpu[c, C.T_HARDIRQ] = 70_000_000 * (c + 1)           # 7, 14, 21, 28
        cpu[c, C.T_SOFTIRQ] = 100_000_000                   # 10 ...
        cpu[c, C.T_KSOFTIRQD] = 20_000_000 * c              # ... + 0, 2, 4, 6
        cpu[c, C.T_STEAL] = 30_000_000 * c                  # 0, 3, 6, 9
        cpu[c, C.IRQ_0 + c] = 1000 + c                      # each vector on its own CPU
        cpu[c, C.LOC] = 2500
        cpu[c, C.RES] = 10 * c
        cpu[c, C.CAL] = 5 * c
        cpu[c, C.CTXT] = 10_000 + c
        cpu[c, C.SOFTIRQ_0 + 3] = 400 + c                   # NET_RX
        cpu[c, C.SOFTIRQ_0 + 1] = 250                       # TIMER
        cpu[c, C.RX_DROPPED] = c                            # 0+1+2+3 = 6
    for q in range(cfg.nqueues):
        nic[nq(q, Q_PACKETS)] = 1_000_000 + q
        nic[nq(q, Q_BYTES)] = 128_000_000 + 128 * q
        nic[nq(q, Q_DROPS)] = 7 * q                         # 0+7+14+21 = 42
    s = procfs.Snapshot(cpu=cpu, nic=nic, cfg=cfg, btime=BTIME, uptime_ns=12_000_000_000,
                        effective_cpu=[0, 1, 2, 3])
    write_tree(str(tmp_path), procfs.tree(s))
    return str(tmp_path / "proc")


def test_psutil_reads_the_emulated_tree(tmp_path):
    proc = rendered_tree(tmp_path)
    real_path = psutil.PROCFS_PATH
    with procfs_path(proc):
        percpu = psutil.cpu_times(percpu=True)
        total = psutil.cpu_times()
        stats = psutil.cpu_stats()
        nics = psutil.net_io_counters(pernic=True, nowrap=False)
        boot = psutil.boot_time()
    assert psutil.PROCFS_PATH == real_path          # restored

    assert len(percpu) == 4
    for c, t in enumerate(percpu):
        assert t.user == (123 * (c + 1)) / 100
        assert t.nice == 0.0
        assert t.system == (45 * (c + 1)) / 100
        assert t.idle == (1000 - 100 * c) / 100
        assert t.iowait == 0.0
        assert t.irq == (7 * (c + 1)) / 100
        assert t.softirq == (10 + 2 * c) / 100
        assert t.steal == (3 * c) / 100
    assert total.user == 1230 / 100
    assert total.idle == 3400 / 100
    assert total.softirq == 52 / 100

    # intr: device vectors 1000..1003, LOC 4*2500, RES 0+10+20+30, CAL 0+5+10+15
    assert stats.interrupts == 4006 + 10_000 + 60 + 30
    assert stats.ctx_switches == 40_006
    assert stats.soft_interrupts == (400 + 401 + 402 + 403) + 4 * 250

    eth0 = nics["eth0"]
    assert eth0.bytes_recv == 4 * 128_000_000 + 128 * 6
    assert eth0.packets_recv == 4_000_006
    assert eth0.dropin == 6                         # rx_dropped + rx_missed_errors
    assert eth0.errin == 0                          # igb rx_errors excludes fifo errors
    assert eth0.bytes_sent == 0 and eth0.packets_sent == 0
    assert set(nics) == {"eth0"}

    assert boot == float(BTIME)


def test_tree_fifo_column_and_files_psutil_does_not_parse(tmp_path):
    proc = rendered_tree(tmp_path)
    line = open(f"{proc}/net/dev").read().splitlines()[2]
    fields = line.split(":", 1)[1].split()
    assert len(fields) == 16
    assert fields[4] == "42"                        # fifo = sum of rx_queue_N_drops
    assert open(f"{proc}/uptime").read() == "12.00 34.00\n"   # idle: 10 + 9 + 8 + 7 s
    stat_sys = tmp_path / "sys/class/net/eth0/statistics"
    assert (stat_sys / "rx_fifo_errors").read_text() == "42\n"
    assert (stat_sys / "rx_dropped").read_text() == "6\n"
