"""Every bad input is one line on stderr naming what is wrong and what is allowed, exit 2,
and nothing started or touched: a table of inputs and the words their message must carry.

These run `emu` in this process (emu.cli.main): a bad input is refused before any process,
segment, cache or file exists, so nothing here can start anything. The same kind of input
through a real `emu run` process is checked in tests/integration/test_run.py.
"""

import json
import os

import pytest

from emu import cli

BIG = str(2**31 - 1)

# (arguments after `emu run`, words the one line must contain)
RUN_TABLE = [
    (["--set", "net.core.netdev_budget=0"], "net.core.netdev_budget must be between 1"),
    (["--cpus", "0"], "run.cpus must be between 1 and 64"),
    (["--cpus", "65"], "run.cpus must be between 1 and 64"),
    (["--set", "ethtool.rx_ring=500"], "ethtool.rx_ring must be a power of two"),
    (["--set", "proc.irq.120.smp_affinity=10"], "names CPU 4, but the host has CPUs 0-3"),
    (["--set", "net.core.bogus=1"], "unknown config key 'net.core.bogus'"),
    (["--set", "net.core.netdev_budget=lots"], "net.core.netdev_budget: expected an integer"),
    (["--set", "nokey"], "expected KEY=VALUE"),
    (["--scenario", "nosuch"], "no such scenario"),
    (["--tdf", "-1"], "run.tdf must be 0 (as fast as the host allows) or between 1 and 1e6"),
    (["--tdf", "inf"], "run.tdf: expected a finite number, got inf"),
    (["--tdf", "nan"], "run.tdf: expected a finite number, got nan"),
    (["--tdf", "1e-9"], "run.tdf must be 0 (as fast as the host allows) or between 1 and 1e6"),
    (["--tdf", "1e12"], "run.tdf must be 0 (as fast as the host allows) or between 1 and 1e6"),
    (["--duration", "5"], "run.duration is emulated time and needs a unit (ns, us, µs, ms, s), "
                          "e.g. \"50ms\" or \"2s\"; got the bare number 5 (before this version "
                          "it meant wall-clock seconds)"),
    (["--duration", "inf"], "run.duration: expected emulated time with a unit"),
    (["--duration", "0ms"], "run.duration must be more than 0"),
    (["--duration", "5 min"], "run.duration: unknown time unit 'min'"),
    (["--duration", "5000s"], "run.duration must be at most 3600 s of emulated time"),
    (["--duration=-2ms"], "run.duration: expected a time >= 0"),
    (["--set", "run.drain=-1ms"], "run.drain: expected a time >= 0"),
    (["--set", "run.drain=2"], "run.drain is emulated time and needs a unit"),
    (["--set", "run.refresh=nan"], "run.refresh: expected a finite number, got nan"),
    (["--set", "run.placement=packed"], "run.placement must be one of pack, spread (got 'packed')"),
    (["--set", "traffic.sources.0.rate_pps=inf"], "traffic.sources.0.rate_pps: expected a finite"),
    (["--set", "traffic.sources.0.rate_pps=1e30"],
     "traffic.sources.0.rate_pps must be at most 8,223,684: a 10000 Mb/s link"),
    (["--set", "traffic.sources.3.rate_pps=2e7"], "traffic.sources.3.rate_pps must be at most"),
    (["--set", "traffic.sources.0.rate_pps=-1"], "traffic.sources.0.rate_pps must be >= 0"),
    (["--set", "traffic.sources.0.start_ms=inf"], "traffic.sources.0.start_ms: expected a finite"),
    (["--set", "traffic.sources.0.stop_ms=nan"], "traffic.sources.0.stop_ms: expected a finite"),
    (["--set", "traffic.sources.0.weights=[1.0, nan]"], "traffic.sources.0.weights must be"),
    (["--set", "ethtool.speed=5"], "ethtool.speed must be between 10 and 800000"),
    (["--set", f"net.core.netdev_max_backlog={BIG}"],
     "net.core.netdev_max_backlog=2147483647 (2147483648 slots) x run.cpus=4 needs"),
    (["--set", "ethtool.rx_queues=64", "--set", "net.core.rps_sock_flow_entries=536870912"]
     + [x for q in range(64) for x in ("--set", f"sys.class.net.eth0.queues.rx-{q}.rps_flow_cnt=536870912")],
     "of shared memory but /dev/shm has"),
    (["--config", "/nonexistent.toml"], "--config /nonexistent.toml: No such file"),
    (["--set", "net.core.gro_normal_batch=4"], "net.core.gro_normal_batch: not modelled"),
]


@pytest.mark.parametrize("args, words", RUN_TABLE, ids=[" ".join(a)[:60] for a, _ in RUN_TABLE])
def test_bad_run_input_is_one_line_exit_2(tmp_path, capsys, args, words):
    run_dir = tmp_path / "run"
    rc = cli.main(["run", "--run-dir", str(run_dir), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and words in err[0], err
    assert err[0].startswith("emu: ")
    assert not run_dir.exists()


def _cfg_file(tmp_path, data: bytes) -> str:
    p = tmp_path / "bad.toml"
    p.write_bytes(data)
    return str(p)


FILE_TABLE = [
    (b"[run]\ncpus = 2\n# caf\xe9\n", "not UTF-8 text (byte 0xe9 at offset"),
    (b"[run\ncpus = 2\n", "not valid TOML"),
    (b"[run]\ntdf = inf\n", "run.tdf: expected a finite number, got inf"),
    (b"[run]\nduration = nan\n", "run.duration is emulated time and needs a unit"),
    (b"[run]\nduration = 5.0\n", "got the bare number 5 (before this version it meant"),
    (b"[[traffic.sources]]\nname = 'x'\nrate_pps = inf\n", "traffic.sources.0.rate_pps: expected a finite"),
    (b"[[traffic.sources]]\nname = 'x'\non_ms = -inf\n", "traffic.sources.0.on_ms: expected a finite"),
    (b"traffic = 3\n", "traffic"),
    (b"[net.core]\ngro_normal_batch = 4\n", "net.core.gro_normal_batch: not modelled"),
]


@pytest.mark.parametrize("data, words", FILE_TABLE, ids=[w[:30] for _, w in FILE_TABLE])
def test_bad_config_file_is_one_line_exit_2(tmp_path, capsys, data, words):
    run_dir = tmp_path / "run"
    rc = cli.main(["run", "--run-dir", str(run_dir), "--config", _cfg_file(tmp_path, data)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and words in err[0], err
    assert not run_dir.exists()


def test_config_that_is_a_directory(tmp_path, capsys):
    rc = cli.main(["run", "--run-dir", str(tmp_path / "r"), "--config", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "is a directory" in err[0]


def _run_dir_cases(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    locked = tmp_path / "ro"
    locked.mkdir()
    os.chmod(locked, 0o500)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    return [
        (str(a_file), "is a file, not a directory"),
        (str(a_file / "run"), "is a file, so nothing can be created under it"),
        ("/proc/emu-run", "inside /proc"),
        ("/sys/kernel/emu", "inside /sys"),
        (str(locked / "run"), "is not writable"),
        (str(theirs), "is not empty and no earlier run wrote it"),
    ]


def test_bad_run_directories(tmp_path, capsys):
    cases = _run_dir_cases(tmp_path)
    for path, words in cases:
        if "not writable" in words and os.geteuid() == 0:
            continue                                   # root writes anywhere
        rc = cli.main(["run", "--run-dir", path])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2, path
        assert len(err) == 1 and words in err[0], (path, err)
    assert (tmp_path / "theirs" / "notes.txt").read_text() == "mine"


def test_check_starts_nothing(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert cli.main(["run", "--check", "--run-dir", str(run_dir)]) == 0
    assert "fine" in capsys.readouterr().err
    assert not run_dir.exists()


# -- emu clean ---------------------------------------------------------------------------

GOOD = {"run_id": "0123abcd", "state": "closed",
        "orchestrator": {"pid": 999999, "create_time": 1.0},
        "pids": {"cpu0": {"pid": 999998, "create_time": 1.0, "title": "emu cpu/0"}},
        "shm": []}


def _with(**kw):
    m = json.loads(json.dumps(GOOD))
    for k, v in kw.items():
        if v is _DEL:
            del m[k]
        else:
            m[k] = v
    return m


_DEL = object()

CLEAN_TABLE = [
    ([1, 2, 3], "expected a JSON object, got list"),
    (_with(run_id=_DEL), "the key 'run_id' is missing"),
    (_with(pids=_DEL), "the key 'pids' is missing"),
    (_with(run_id="../x"), "run_id must be 8 hex digits"),
    (_with(pids={"cpu0": {"pid": "12", "create_time": 1.0, "title": "emu cpu/0"}}),
     "pids.cpu0.pid must be a process id"),
    (_with(pids={"cpu0": {"pid": 1.5, "create_time": 1.0, "title": "emu cpu/0"}}),
     "pids.cpu0.pid must be a process id"),
    (_with(pids={"cpu0": {"pid": 1, "create_time": 1.0, "title": "emu cpu/0"}}),
     "pids.cpu0.pid must be a process id"),
    (_with(pids={"cpu0": 1234}), "pids.cpu0 must be an object"),
    (_with(pids={"sshd": {"pid": 1234, "create_time": 1.0, "title": "emu cpu/0"}}),
     "pids has an unknown role 'sshd'"),
    (_with(pids={"cpu0": {"pid": 1234, "create_time": 1.0, "title": "bash"}}),
     "pids.cpu0.title must be 'emu cpu/0'"),
    (_with(pids=[1, 2]), "pids must be an object"),
    (_with(shm="emu-0123abcd"), "shm must be a list"),
    (_with(shm=["../../tmp/x"]), "shm names '../../tmp/x'"),
    (_with(shm=["/tmp/x"]), "shm names '/tmp/x'"),
    (_with(shm=["emu-ffffffff"]), "a run's only segment is 'emu-0123abcd'"),
    (_with(orchestrator={"pid": 5}), "orchestrator.create_time must be a positive number"),
]


@pytest.mark.parametrize("manifest, words", CLEAN_TABLE, ids=[w[:40] for _, w in CLEAN_TABLE])
def test_malformed_manifest_is_one_line_exit_2(tmp_path, capsys, manifest, words):
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    rc = cli.main(["clean", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and words in err[0], err


def test_clean_of_a_file_or_garbage(tmp_path, capsys):
    f = tmp_path / "f"
    f.write_text("x")
    assert cli.main(["clean", str(f)]) == 2
    assert "is a file, not a run directory" in capsys.readouterr().err
    (tmp_path / "manifest.json").write_bytes(b"\xff\xfe{")
    assert cli.main(["clean", str(tmp_path)]) == 2
    assert "not JSON" in capsys.readouterr().err
    assert cli.main(["clean", str(tmp_path / "nothing")]) == 2
    assert "no such directory" in capsys.readouterr().err
