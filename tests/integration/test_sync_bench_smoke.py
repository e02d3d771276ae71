"""Smoke test of scripts/sync_bench.py --quick: it runs, reports every mechanism, leaves nothing.

No speed assertions: the figures are for the benchmark's reader, and this machine is shared
and noisy. The no_leaks fixture (conftest) fails the test if a process is left behind.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(ROOT, "scripts", "sync_bench.py")
MECHANISMS = {"futex", "futex_njit", "eventfd", "pipe", "zmq", "yield", "sleep"}


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_sync_bench_quick_reports_every_mechanism_and_leaks_nothing():
    proc = subprocess.run([sys.executable, BENCH, "--quick"], capture_output=True, text=True,
                          timeout=110, cwd=ROOT)
    assert proc.returncode == 0, f"sync_bench failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    r = json.loads(proc.stdout)

    assert set(r["quiet"]) == {"pingpong", "ring", "waiting"}
    waiting = r["quiet"].pop("waiting")
    assert set(waiting) == MECHANISMS
    assert all(w["cpu_share"] > 0 and w["seconds"] > 0 for w in waiting.values())
    for ring, rows in r["quiet"].items():
        assert set(rows) == MECHANISMS, ring
        for mech, f in rows.items():
            assert f["rounds"] > 0, (ring, mech)
            for key in ("round_median_us", "round_p99_us", "hop_median_us",
                        "cpu_us_per_round", "cpu_us_per_hop"):
                assert f[key] > 0, (ring, mech, key, f[key])
    assert all(v > 0 for v in r["call_us"].values())
    assert "loaded" not in r

    for name in r["shm_names"]:
        assert not os.path.exists(os.path.join("/dev/shm", name)), f"{name} left behind"
