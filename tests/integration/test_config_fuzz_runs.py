"""Random config values through real `emu run` processes: exit 0 or 2, no traceback, and
nothing left behind (the autouse no_leaks fixture checks processes, segments, semaphores).

The in-process property test (tests/unit/test_config_fuzz.py) covers many more values
through `emu run --check`; this one catches what only a running host can show: a value the
checks accept but a NIC or CPU process then crashes on.
"""

import os
import uuid

import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from tests.unit.test_config_fuzz import KEYS, VALUES, _toml

from .conftest import run_emu

pytestmark = [pytest.mark.integration]

# Keys that only make a run longer or larger without exercising anything new: a host of 64
# CPUs or a day of drain is valid input, but not for a test that must end in seconds.
SLOW = {"run.cpus", "run.duration", "run.drain", "run.tdf", "run.refresh", "run.run_dir",
        "ethtool.rx_queues"}
RUN_KEYS = [k for k in KEYS if k not in SLOW]


@pytest.mark.timeout(900)
@settings(max_examples=int(os.environ.get("EMU_FUZZ_RUNS", "8")), deadline=None,
          suppress_health_check=list(HealthCheck),
          phases=[Phase.explicit, Phase.reuse, Phase.generate])   # each example is a real run:
# shrinking one would take minutes, and the failing example is printed as found
@given(st.lists(st.tuples(st.sampled_from(RUN_KEYS), VALUES), min_size=1, max_size=2))
def test_a_run_with_random_values_exits_0_or_2(tmp_path_factory, assignments):
    run_dir = str(tmp_path_factory.mktemp("fuzzrun") / uuid.uuid4().hex[:8])
    args = ["run", "--run-dir", run_dir, "--duration", "3ms", "--no-progress",
            "--set", "run.drain=1ms"]
    for key, value in assignments:
        args += ["--set", f"{key}={_toml(value)}"]
    assume(not any("\0" in a for a in args))          # no command line can carry a NUL
    r = run_emu(*args, timeout=240)
    assert r.returncode in (0, 2), (args, r.stderr[-3000:])
    assert "Traceback" not in r.stderr, (args, r.stderr[-3000:])
    if r.returncode == 2:
        assert len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
        assert not os.path.exists(os.path.join(run_dir, "manifest.json"))
