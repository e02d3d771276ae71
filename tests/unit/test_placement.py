"""run.placement: which host cores the children are pinned to (emu.placement), and how a
child pins itself (emu.child.pin). Speed only: a run's counters are the same either way."""

import os

import pytest

from emu import placement
from emu.child import pin

NAMES = ["nic", "cpu0", "cpu1", "cpu2", "cpu3"]


def test_pack_puts_every_cpu_process_on_the_last_core_and_the_nic_on_the_one_before():
    pins = placement.plan("pack", {0, 1}, NAMES)
    assert pins == {"nic": {0}, "cpu0": {1}, "cpu1": {1}, "cpu2": {1}, "cpu3": {1}}
    assert placement.describe(pins) == "CPU processes on host core 1, NIC on host core 0"


def test_pack_keeps_to_the_cores_the_orchestrator_may_use():
    # as under `taskset -c 2,5,7`: the highest two allowed, not 0 and 1
    pins = placement.plan("pack", {7, 2, 5}, NAMES)
    assert pins["nic"] == {5} and all(pins[n] == {7} for n in NAMES[1:])


def test_a_child_the_host_would_not_pin_is_named():
    pins = placement.plan("pack", {0, 1}, NAMES)
    del pins["cpu2"]
    assert placement.describe(pins, ["cpu2"]) == (
        "CPU processes on host core 1, NIC on host core 0 "
        "(cpu2: the host refused the core, placed by the OS)")
    assert placement.describe({}, ["nic"]) == (
        "placed by the OS (nic: the host refused the core, placed by the OS)")


def test_nothing_is_pinned_when_spread_or_with_one_core():
    assert placement.plan("spread", {0, 1, 2, 3}, NAMES) == {}
    assert placement.plan("pack", {3}, NAMES) == {}
    assert placement.describe({}) == "placed by the OS"


def test_an_unknown_placement_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"run.placement must be one of pack, spread \(got 'x'\)"):
        placement.plan("x", {0, 1}, NAMES)


def test_pin_sets_this_process_affinity_and_leaves_it_for_none():
    before = os.sched_getaffinity(0)
    try:
        core = min(before)
        assert pin([core])
        assert os.sched_getaffinity(0) == {core}
        assert pin(None) and pin([])
        assert os.sched_getaffinity(0) == {core}
    finally:
        os.sched_setaffinity(0, before)


def test_a_refused_pin_is_not_an_error():
    # a core the host does not have: the process stays where it is (speed only)
    before = os.sched_getaffinity(0)
    assert pin([4095]) is False
    assert os.sched_getaffinity(0) == before
