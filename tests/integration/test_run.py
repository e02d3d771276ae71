"""Real processes: a short run, an overload run, a killed CPU, Ctrl-C, bad input, emu clean."""

import json
import os
import signal
import subprocess

import psutil
import pytest

from .conftest import report, run_emu, start_emu, wait_manifest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

FAST = ["--tdf", "100", "--no-progress", "--set", "run.drain=3"]


def test_short_run_conserves_every_frame(tmp_path):
    run_dir = str(tmp_path / "run")
    r = run_emu("run", "--duration", "2", "--run-dir", run_dir, *FAST)
    assert r.returncode == 0, r.stderr
    rep = report(run_dir)
    c = rep["conservation"]
    assert c["generated"] > 1000
    assert c["unaccounted"] == 0
    assert c["delivered"] > 0
    assert rep["udp"]["InDatagrams"] > 0
    assert rep["udp"]["NoPorts"] > 0                     # the closed-port source
    assert len(rep["cpus"]) == 4 and len(rep["rx_queues"]) == 4
    assert all(q["irqs_raised"] > 0 for q in rep["rx_queues"])
    assert "conservation: generated" in r.stdout and "unaccounted 0" in r.stdout
    for rel in ("proc/net/softnet_stat", "proc/interrupts", "proc/softirqs", "proc/stat",
                "proc/uptime", "proc/net/dev", "proc/net/snmp", "sys/devices/system/cpu/online",
                "sys/class/net/eth0/statistics/rx_packets", "proc/irq/120/smp_affinity",
                "proc/sys/net/core/netdev_budget", "config.toml", "manifest.json"):
        assert os.path.exists(os.path.join(run_dir, rel)), rel
    softnet = open(os.path.join(run_dir, "proc/net/softnet_stat")).read().splitlines()
    assert len(softnet) == 4 and all(len(line.split()) == 15 for line in softnet)
    processed = sum(int(line.split()[0], 16) for line in softnet)
    assert processed == sum(c["processed"] for c in rep["cpus"])
    with open(os.path.join(run_dir, "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest["state"] == "closed"
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                   for p in manifest["pids"].values())


def test_rendered_tree_reads_with_psutil(tmp_path):
    run_dir = str(tmp_path / "run")
    r = run_emu("run", "--duration", "1", "--cpus", "2", "--run-dir", run_dir, *FAST)
    assert r.returncode == 0, r.stderr
    rep = report(run_dir)
    old = psutil.PROCFS_PATH
    psutil.PROCFS_PATH = os.path.join(run_dir, "proc")
    try:
        assert len(psutil.cpu_times(percpu=True)) == 2
        stats = psutil.cpu_stats()
        nic = psutil.net_io_counters(pernic=True, nowrap=False)["eth0"]
    finally:
        psutil.PROCFS_PATH = old
    assert stats.interrupts > 0 and stats.soft_interrupts > 0
    assert nic.packets_recv == sum(q["packets"] for q in rep["rx_queues"])
    assert nic.bytes_recv == sum(q["bytes"] for q in rep["rx_queues"])


OVERLOAD = """
[net.core]
netdev_budget = 100
[proc.irq.120]
smp_affinity = "1"
[proc.irq.121]
smp_affinity = "1"
[proc.irq.122]
smp_affinity = "1"
[proc.irq.123]
smp_affinity = "1"
[[traffic.sources]]
name = "flood"
pattern = "constant"
proto = "udp"
rate_pps = 3000000
flows = 256
dst_ports = [9000, 9001, 9002, 9003]
frame_len = 64
"""


def test_overload_squeezes_and_drops_are_all_accounted(tmp_path):
    cfg = tmp_path / "overload.toml"
    cfg.write_text(OVERLOAD)
    run_dir = str(tmp_path / "run")
    r = run_emu("run", "--config", str(cfg), "--duration", "3", "--run-dir", run_dir, *FAST)
    assert r.returncode == 0, r.stderr
    rep = report(run_dir)
    cpu0 = rep["cpus"][0]
    assert cpu0["time_squeeze"] > 0           # 4 NAPIs of weight 64 on one CPU, budget 100
    assert cpu0["hardirqs"] > 0
    assert all(c["hardirqs"] == 0 for c in rep["cpus"][1:])
    c = rep["conservation"]
    assert c["dropped"]["ring_full"] > 0
    assert c["unaccounted"] == 0
    assert sum(q["nic_drops"] for q in rep["rx_queues"]) == c["dropped"]["ring_full"]
    softnet0 = open(os.path.join(run_dir, "proc/net/softnet_stat")).readline().split()
    assert int(softnet0[2], 16) == cpu0["time_squeeze"]


def test_sigkill_of_a_cpu_fails_the_run_cleanly(tmp_path):
    run_dir = str(tmp_path / "run")
    p = start_emu("run", "--duration", "60", "--run-dir", run_dir, *FAST)
    try:
        m = wait_manifest(run_dir)
        victim = m["pids"]["cpu1"]
        os.kill(victim, signal.SIGKILL)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
    assert p.returncode == 3, err
    assert "cpu1" in err and "SIGKILL" in err
    assert err.strip().splitlines()[-1].startswith("emu: cpu1")
    for pid in m["pids"].values():
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not os.path.exists("/dev/shm/" + m["shm"][0])


def test_ctrl_c_ends_the_run_with_a_report(tmp_path):
    run_dir = str(tmp_path / "run")
    p = start_emu("run", "--duration", "60", "--run-dir", run_dir, *FAST)
    try:
        m = wait_manifest(run_dir)
        import time
        time.sleep(1.0)
        os.killpg(p.pid, signal.SIGINT)          # what a terminal's Ctrl-C does
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
    assert p.returncode == 130, err
    assert "conservation: generated" in out
    rep = report(run_dir)
    assert rep["interrupted"] is True
    assert rep["conservation"]["unaccounted"] == 0
    assert not os.path.exists("/dev/shm/" + m["shm"][0])


@pytest.mark.parametrize("args, words", [
    (["--set", "net.core.netdev_budget=0"], "net.core.netdev_budget must be"),
    (["--cpus", "0"], "run.cpus must be between 1 and 64"),
    (["--set", "ethtool.rx_ring=500"], "power of two"),
    (["--set", "proc.irq.120.smp_affinity=10"], "names CPU 4"),
    (["--tdf", "0"], "run.tdf must be > 0"),
    (["--set", "net.core.bogus=1"], "unknown config key 'net.core.bogus'"),
    (["--scenario", "nosuch"], "no such scenario"),
    (["--config", "/nonexistent.toml"], "--config /nonexistent.toml"),
])
def test_bad_input_starts_nothing(tmp_path, args, words):
    run_dir = tmp_path / "run"
    r = run_emu("run", "--run-dir", str(run_dir), *args, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], r.stderr
    assert not run_dir.exists()


def test_clean_removes_only_what_the_manifest_names(tmp_path):
    name = f"emu-cleantest-{os.getpid()}"
    fd = os.open(f"/dev/shm/{name}", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    os.ftruncate(fd, 4096)
    os.close(fd)
    ours = subprocess.Popen(["python3", "-c", "import setproctitle, time; "
                             "setproctitle.setproctitle('emu cpu/9'); time.sleep(60)"])
    other = subprocess.Popen(["sleep", "60"])
    try:
        import time
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if " ".join(psutil.Process(ours.pid).cmdline()).startswith("emu "):
                break
            time.sleep(0.05)
        manifest = {"pids": {"cpu9": ours.pid, "nic": other.pid}, "shm": [name]}
        (tmp_path / "manifest.json").write_text(json.dumps(manifest))
        r = run_emu("clean", str(tmp_path), timeout=60)
        assert r.returncode == 0, r.stderr
        assert ours.wait(10) is not None
        assert other.poll() is None                   # not an emulator process: untouched
        assert not os.path.exists(f"/dev/shm/{name}")
        assert f"/dev/shm/{name} removed" in r.stdout
    finally:
        for p in (ours, other):
            if p.poll() is None:
                p.kill()
                p.wait(10)
        if os.path.exists(f"/dev/shm/{name}"):
            os.unlink(f"/dev/shm/{name}")


def test_clean_without_manifest_is_bad_input(tmp_path):
    r = run_emu("clean", str(tmp_path), timeout=30)
    assert r.returncode == 2
    assert "no manifest.json" in r.stderr
