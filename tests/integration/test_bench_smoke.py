"""Smoke test of scripts/bench.py --quick: it runs, reports every part, and leaves nothing.

No timing assertions: speed targets are checked in benchmarks (docs/benchmarks.md), never in
tests, because this machine is shared and noisy.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(ROOT, "scripts", "bench.py")


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_bench_quick_reports_every_part_and_leaks_nothing():
    proc = subprocess.run([sys.executable, BENCH, "--quick"], capture_output=True, text=True,
                          timeout=280, cwd=ROOT)
    assert proc.returncode == 0, f"bench failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    r = json.loads(proc.stdout)

    assert r["bare"]["frames_per_s"] > 0
    assert r["bare"]["seq_errors"] == 0

    configs = {"default", "elephant-mice", "gro-bulk", "rfs-pinned", "rps-spread"}
    assert set(r["slowdown"]) == configs
    for name, f in r["slowdown"].items():
        assert f["emulated_ms"] >= 3.0, (name, f)        # --quick: 3 ms of traffic + drain
        assert f["wall_s"] > 0 and f["slowdown"] > 0, (name, f)
        assert f["frames"] > 0 and f["processed"] > 0, (name, f)
        assert f["unaccounted"] == 0, (name, f)
        assert not any(f["causality"].values()), (name, f)
        assert set(f["agents"]) == {"cpu0", "cpu1", "cpu2", "cpu3", "nic"}, (name, f)
        assert all(0 <= a["waited_share"] <= 1 for a in f["agents"].values()), (name, f)
        assert sum(a["cpu_s"] for a in f["agents"].values()) > 0, (name, f)

    ip = r["inproc"]
    assert ip["frames"] > 0 and ip["slowdown"] > 0 and ip["handovers"] > 0
    assert any("net_rx_action" in ln or "cumtime" in ln for ln in ip["profile_top_tottime"])
    assert r["bounds"]["multiprocess_over_one_process"] > 0

    assert r["machine"]["cores"] >= 1 and r["machine"]["python"]

    # Every segment the bench made is gone (segments of other runs on the machine are not ours).
    for name in r["shm_names"]:
        assert not os.path.exists(os.path.join("/dev/shm", name)), f"{name} left behind"
