"""Real processes: a short run, an overload run, a killed CPU, signals, bad input, emu clean."""

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from .conftest import report, run_emu, start_emu, wait_manifest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

FAST = ["--no-progress"]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _child_pids(manifest: dict) -> list[int]:
    return [e["pid"] for e in manifest["pids"].values()]


def _wait_gone(pids, timeout: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if _alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if _alive(p)]
    return alive


def _finish(p: subprocess.Popen, timeout: float = 90):
    try:
        return p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


def test_short_run_conserves_every_frame(tmp_path):
    run_dir = str(tmp_path / "run")
    r = run_emu("run", "--duration", "20ms", "--run-dir", run_dir, *FAST)
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
    assert not any(_alive(p) for p in _child_pids(manifest))
    # --no-progress: no progress line at all, only the header
    assert [ln for ln in r.stderr.splitlines() if ln.strip()] == [r.stderr.splitlines()[0]]


def test_rendered_tree_reads_with_psutil(tmp_path):
    run_dir = str(tmp_path / "run")
    r = run_emu("run", "--duration", "10ms", "--cpus", "2", "--run-dir", run_dir, *FAST)
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
    r = run_emu("run", "--config", str(cfg), "--duration", "30ms", "--run-dir", run_dir, *FAST)
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
    p = start_emu("run", "--duration", "10s", "--run-dir", run_dir, *FAST)
    try:
        m = wait_manifest(run_dir)
        os.kill(m["pids"]["cpu1"]["pid"], signal.SIGKILL)
        out, err = _finish(p)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
    assert p.returncode == 3, err
    assert "cpu1" in err and "SIGKILL" in err
    assert err.strip().splitlines()[-1].startswith("emu: cpu1")
    assert not _wait_gone(_child_pids(m))
    assert not os.path.exists(f"/dev/shm/emu-{m['run_id']}")


def _signal_run(tmp_path, how, signals=(signal.SIGINT,), pause=1.0, extra=(), gap=0.5):
    """Start a long run, send it signals once it runs (gap s apart: two signals at once would
    merge into one), return (returncode, out, err, manifest)."""
    run_dir = str(tmp_path / "run")
    p = start_emu("run", "--duration", "10s", "--run-dir", run_dir, *FAST, *extra)
    try:
        m = wait_manifest(run_dir)
        time.sleep(pause)
        for sig in signals:
            if how == "group":
                os.killpg(p.pid, sig)                # what a terminal (or systemd) does
            else:
                os.kill(p.pid, sig)                  # kill PID
            time.sleep(gap)
        out, err = _finish(p)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
    return p.returncode, out, err, m, run_dir


@pytest.mark.parametrize("how, sig, status", [
    ("group", signal.SIGINT, 130),          # Ctrl-C
    ("pid", signal.SIGTERM, 143),           # kill PID
    ("group", signal.SIGTERM, 143),         # kill -TERM -PGID, timeout(1), systemd
    ("group", signal.SIGHUP, 129),          # the terminal went away
])
def test_a_signal_ends_the_run_with_its_report(tmp_path, how, sig, status):
    rc, out, err, m, run_dir = _signal_run(tmp_path, how, (sig,))
    assert rc == status, err
    assert "conservation: generated" in out
    rep = report(run_dir)
    assert rep["interrupted"] is True and rep["signal"] == sig.name
    assert rep["drained"] is True
    assert rep["conservation"]["unaccounted"] == 0
    with open(os.path.join(run_dir, "manifest.json")) as f:
        assert json.load(f)["state"] == "closed"
    assert "Traceback" not in err, err
    assert not _wait_gone(_child_pids(m))


def test_a_second_ctrl_c_skips_the_drain(tmp_path):
    # Slow readers (300 us of work per datagram) behind 64 MB receive buffers: emptying the
    # sockets takes seconds of emulated time and tens of thousands of reads, so the drain
    # that the first Ctrl-C starts is still going when the second one comes. (A slow reader
    # alone is not enough: time in which little happens passes in little wall time. A CPU
    # whose socket is empty idles to the drain's end at once, as nothing can reach it any
    # more, so the run's emulated span says nothing here: the sockets left queued do.) The
    # reads cost wall time, not emulated time: three seconds of traffic queue about a second
    # of drain (measured: 0.6 s after two), and the second Ctrl-C comes 0.1 s after the first.
    rc, out, err, m, run_dir = _signal_run(tmp_path, "group", (signal.SIGINT, signal.SIGINT),
                                           pause=3.0, gap=0.1,
                                           extra=("--set", "cost.app=300000",
                                                  "--set", "net.core.rmem_default=67108864",
                                                  "--set", "run.drain=3600s"))
    assert rc == 130, err
    rep = report(run_dir)
    assert rep["drained"] is False
    assert rep["conservation"]["unaccounted"] == 0        # what did not drain is counted queued
    assert rep["conservation"]["queued"]["sockets"] > 0    # stopped where it got to
    assert "Traceback" not in err


def test_a_run_directory_in_use_is_refused_and_a_reused_one_is_cleared(tmp_path):
    run_dir = str(tmp_path / "run")
    p = start_emu("run", "--duration", "10s", "--run-dir", run_dir, *FAST)
    try:
        wait_manifest(run_dir)
        r = run_emu("run", "--duration", "10ms", "--run-dir", run_dir, *FAST, timeout=60)
        assert r.returncode == 2
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and f"in use by a live run (pid {p.pid})" in lines[0], r.stderr
        os.killpg(p.pid, signal.SIGINT)
        _finish(p)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
    first = report(run_dir)
    assert os.path.exists(os.path.join(run_dir, "proc", "stat"))
    # A reused directory starts empty of the last run's outputs: a run that fails to start
    # leaves no report.json or proc/ of the previous one to be mistaken for its own.
    again = run_emu("run", "--run-dir", run_dir, "--set", "run.cpus=2",
                  "--set", "traffic.sources.0.rate_pps=1e6", *FAST, timeout=120)
    assert again.returncode == 0, again.stderr
    second = report(run_dir)
    assert second["run_id"] != first["run_id"]
    assert len(second["cpus"]) == 2


def test_nothing_outlives_a_sigkilled_orchestrator_and_resource_tracker(tmp_path):
    run_dir = str(tmp_path / "run")
    sems_before = {n for n in os.listdir("/dev/shm") if n.startswith("sem.")}
    p = start_emu("run", "--duration", "10s", "--run-dir", run_dir, *FAST)
    try:
        m = wait_manifest(run_dir)
        helpers = psutil.Process(p.pid).children()   # fork server, resource tracker
        os.kill(p.pid, signal.SIGKILL)
        for h in helpers:
            try:
                h.kill()
            except psutil.NoSuchProcess:
                pass
        p.wait(10)
        left = _wait_gone(_child_pids(m) + [h.pid for h in helpers])
        assert not left, f"still running: {left}"
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
    assert not os.path.exists(f"/dev/shm/emu-{m['run_id']}")
    assert {n for n in os.listdir("/dev/shm") if n.startswith("sem.")} <= sems_before


@pytest.mark.parametrize("args, words", [
    (["--set", "net.core.netdev_budget=0"], "net.core.netdev_budget must be"),
    (["--tdf", "inf"], "run.tdf: expected a finite number"),
    (["--duration", "inf"], "run.duration: expected emulated time with a unit"),
    (["--set", "traffic.sources.0.rate_pps=1e30"], "a 10000 Mb/s link"),
    (["--set", "net.core.netdev_max_backlog=2147483647"], "of shared memory but /dev/shm has"),
    (["--scenario", "nosuch"], "no such scenario"),
])
def test_bad_input_starts_nothing(tmp_path, args, words):
    run_dir = tmp_path / "run"
    r = run_emu("run", "--run-dir", str(run_dir), *args, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], r.stderr
    assert not run_dir.exists()


def _manifest_for(proc: psutil.Process, role: str, run_id: str, shm: list) -> dict:
    title = "emu nic/eth0" if role == "nic" else f"emu cpu/{role[3:]}"
    return {"run_id": run_id, "state": "running",
            "orchestrator": {"pid": 4_000_000, "create_time": 1.0},
            "pids": {role: {"pid": proc.pid, "create_time": proc.create_time(), "title": title}},
            "shm": shm}


def _titled(title: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", "import setproctitle, time; "
                          f"setproctitle.setproctitle({title!r}); time.sleep(60)"])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if " ".join(a for a in psutil.Process(p.pid).cmdline() if a) == title:
                return p
        except psutil.Error:
            pass
        time.sleep(0.05)
    p.kill()
    raise AssertionError("the titled process never showed its title")


def test_clean_removes_only_what_the_manifest_names_and_is_ours(tmp_path):
    run_id = f"{os.getpid() & 0xFFFFFFFF:08x}"
    name = f"emu-{run_id}"
    ours = other = None
    try:
        fd = os.open(f"/dev/shm/{name}", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        os.ftruncate(fd, 4096)
        os.close(fd)
        ours = _titled("emu cpu/9")
        other = subprocess.Popen(["sleep", "60"])
        m = _manifest_for(psutil.Process(ours.pid), "cpu9", run_id, [name])
        m["pids"]["nic"] = {"pid": other.pid, "create_time": psutil.Process(other.pid).create_time(),
                            "title": "emu nic/eth0"}
        (tmp_path / "manifest.json").write_text(json.dumps(m))
        r = run_emu("clean", str(tmp_path), timeout=60)
        assert r.returncode == 0, r.stderr
        assert ours.wait(10) is not None
        assert other.poll() is None                   # not an emulator process: untouched
        assert f"nic: pid {other.pid}" not in r.stdout
        assert f"cpu9: pid {ours.pid} " in r.stdout      # stopped (or killed: a zombie of ours)
        assert not os.path.exists(f"/dev/shm/{name}")
        assert f"/dev/shm/{name} removed" in r.stdout
    finally:
        for p in (ours, other):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)
        if os.path.exists(f"/dev/shm/{name}"):
            os.unlink(f"/dev/shm/{name}")


def test_clean_leaves_a_reused_pid_alone(tmp_path):
    """A pid whose start time differs from the manifest's is another process now."""
    ours = _titled("emu cpu/0")
    try:
        m = _manifest_for(psutil.Process(ours.pid), "cpu0", "0000beef", [])
        m["pids"]["cpu0"]["create_time"] -= 100.0
        (tmp_path / "manifest.json").write_text(json.dumps(m))
        r = run_emu("clean", str(tmp_path), timeout=60)
        assert r.returncode == 0, r.stderr
        assert ours.poll() is None and "nothing to clean" in r.stdout
    finally:
        ours.kill()
        ours.wait(10)


def test_clean_refuses_names_outside_dev_shm(tmp_path):
    victim = tmp_path / "x"
    victim.write_text("keep me")
    for shm in ([str(victim)], [f"../..{victim}"]):
        m = {"run_id": "0000beef", "state": "closed",
             "orchestrator": {"pid": 4_000_000, "create_time": 1.0}, "pids": {}, "shm": shm}
        (tmp_path / "manifest.json").write_text(json.dumps(m))
        r = run_emu("clean", str(tmp_path), timeout=60)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert victim.read_text() == "keep me"


def test_clean_refuses_a_live_run(tmp_path):
    run_dir = str(tmp_path / "run")
    p = start_emu("run", "--duration", "10s", "--run-dir", run_dir, *FAST)
    try:
        m = wait_manifest(run_dir)
        r = run_emu("clean", run_dir, timeout=60)
        assert r.returncode == 2 and "is still running" in r.stderr, r.stderr
        assert all(_alive(pid) for pid in _child_pids(m))
        os.killpg(p.pid, signal.SIGINT)
        _finish(p)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
    assert p.returncode == 130


def test_clean_without_manifest_is_bad_input(tmp_path):
    r = run_emu("clean", str(tmp_path), timeout=30)
    assert r.returncode == 2
    assert "no manifest.json" in r.stderr
