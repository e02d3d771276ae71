"""A start that takes too long names the child furthest behind and the step it is in."""

import time

import pytest

from emu import cluster as cluster_mod
from emu.cluster import Cluster
from emu.config import resolve
from emu.errors import EmuError


class _Ctl:
    def poll(self, _ms):
        return 0


def _cluster(tmp_path, monkeypatch):
    c = Cluster(resolve(), run_dir=str(tmp_path / "run"), run_id="0000cafe")
    c.ctl = _Ctl()
    monkeypatch.setattr(c, "_drain_control", lambda: [])
    return c


def test_the_error_names_the_child_furthest_behind_and_its_step(tmp_path, monkeypatch):
    c = _cluster(tmp_path, monkeypatch)
    now = time.monotonic()
    steps = {"nic": ("handshake", True), "cpu0": ("handshake", False),
             "cpu1": ("attach", False), "cpu2": ("cache load", False),
             "cpu3": ("cache load", False)}
    for role, (step, ready) in steps.items():
        ch = c.children[role]
        ch.step, ch.ready = step, ready
    c.children["cpu2"].since = now - 50          # in 'cache load' the longest
    c.children["cpu3"].since = now - 10
    monkeypatch.setattr(cluster_mod, "START_TIMEOUT", 0.0)
    with pytest.raises(EmuError) as e:
        c._wait_ready(now - 1, lambda _l: None, lambda: 0)
    msg = str(e.value)
    assert msg.startswith("cpu2 ") and "at step 'cache load' for 50 s" in msg
    assert "(4 of 5 not ready)" in msg


def test_progress_while_starting_names_who_everyone_waits_for(tmp_path, monkeypatch):
    c = _cluster(tmp_path, monkeypatch)
    for role, ch in c.children.items():
        ch.ready = role != "cpu1"
    c.children["cpu1"].step = "attach"
    lines = []
    monkeypatch.setattr(cluster_mod, "PROGRESS_EVERY", 0.0)
    monkeypatch.setattr(cluster_mod, "START_TIMEOUT", 0.05)
    with pytest.raises(EmuError):
        c._wait_ready(time.monotonic(), lines.append, lambda: 0)
    assert any("4/5 ready" in ln and "waiting for cpu1 (attach)" in ln for ln in lines), lines


def test_a_signal_while_starting_stops_at_once(tmp_path, monkeypatch):
    from emu.kcache import Interrupted
    c = _cluster(tmp_path, monkeypatch)
    with pytest.raises(Interrupted) as e:
        c._wait_ready(time.monotonic(), lambda _l: None, lambda: 15)
    assert e.value.exit_status == 143
