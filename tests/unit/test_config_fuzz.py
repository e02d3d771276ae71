"""Random values for every config key: `emu run --check` answers 0 or 2, never a traceback.

Every leaf key of the resolved default config (queues, vectors, sources and sockets
included) gets values from a pool of the kinds users and typos produce: integers at and
beyond every boundary, non-finite and huge floats, empty and odd strings, lists, booleans.
A refusal must be one line naming the key; an acceptance must create nothing (--check).
The same property through real `emu run` processes is in tests/integration.
"""

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emu import cli
from emu.config import resolve


def _leaves(node, prefix=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}{k}.")
    elif isinstance(node, list) and node and isinstance(node[0], dict):
        for i, v in enumerate(node):
            yield from _leaves(v, f"{prefix}{i}.")
    else:
        yield prefix[:-1]


KEYS = sorted(set(_leaves(resolve().to_dict())))

INTS = st.one_of(st.integers(-3, 3), st.integers(-2**63, 2**64),
                 st.sampled_from([2**31 - 1, 2**31, 2**32, 2**53 + 1, 10**30, 65535, 65536,
                                  64, 63, 8192, 16384, 1 << 29, (1 << 29) + 1]))
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([math.inf, -math.inf, math.nan, 1e-9, 1e300, -0.0, 0.5]))
TEXT = st.one_of(st.text(max_size=12),
                 st.sampled_from(["", "0", "f", "ff", "fffffffff", "f" * 4000, "0-3", "3-0",
                                  "0-4294967295", "2147483648", "0,9999999999", "-1", "../x",
                                  "10.0.0.1:99", "1,2", "é", " ", "0x", "0xfg"]))


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return v                                   # a bare string: --set takes it as text


VALUES = st.one_of(INTS, FLOATS, TEXT, st.booleans(),
                   st.lists(st.one_of(st.integers(-5, 70000), st.floats()), max_size=4))
ASSIGNMENTS = st.lists(st.tuples(st.sampled_from(KEYS), VALUES), min_size=1, max_size=3)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ASSIGNMENTS)
def test_any_value_for_any_key_is_accepted_or_one_line(tmp_path_factory, capsys, assignments):
    run_dir = tmp_path_factory.mktemp("fuzz") / "run"
    args = ["run", "--check", "--run-dir", str(run_dir)]
    for key, value in assignments:
        args += ["--set", f"{key}={_toml(value)}"]
    rc = cli.main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc in (0, 2), (args, err)
    assert not any("Traceback" in line for line in err), err
    if rc == 2:
        assert len(err) == 1 and err[0].startswith("emu: "), (args, err)
    assert not run_dir.exists()
