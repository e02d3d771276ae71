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

    assert set(r["full"]) == {"1", "2", "4"}
    for n, f in r["full"].items():
        assert f["cpus"] == int(n) and f["rx_queues"] == int(n)
        assert f["frames_per_s"] > 0, f"full path at {n} CPUs processed nothing"
        assert f["delivered_per_s"] >= 0
        assert f["unaccounted"] == 0, f"conservation failed at {n} CPUs: {f}"
    assert r["ratio_full2_over_bare"] > 0

    rps = r["rps"]
    assert rps["direct"] > 0 and rps["rps"] > 0 and rps["ratio"] > 0
    assert rps["direct_run"]["unaccounted"] == 0
    assert rps["rps_run"]["unaccounted"] == 0
    assert rps["direct_run"]["rx_queues"] == 1 and rps["rps_run"]["rx_queues"] == 1
    assert rps["rps_run"]["received_rps"] > 0, "RPS run sent no frame through a backlog IPI"
    assert rps["direct_run"]["received_rps"] == 0

    assert r["machine"]["cores"] >= 1 and r["machine"]["python"]

    # Every segment the bench made is gone (segments of other runs on the machine are not ours).
    for name in r["shm_names"]:
        assert not os.path.exists(os.path.join("/dev/shm", name)), f"{name} left behind"
