"""x86 matrix allocator: one effective CPU per vector, most free vectors wins, ties low."""

import pytest

from emu.affinity import effective_cpus, reaffine

ALL4 = 0b1111


def test_one_cpu_per_mask():
    assert effective_cpus([1 << 0, 1 << 1, 1 << 2, 1 << 3], ALL4) == [0, 1, 2, 3]
    assert effective_cpus([1 << 2, 1 << 2, 1 << 2], ALL4) == [2, 2, 2]


def test_all_cpu_masks_spread_by_free_count():
    assert effective_cpus([ALL4] * 8, ALL4) == [0, 1, 2, 3, 0, 1, 2, 3]


def test_multi_cpu_mask_takes_the_cpu_with_most_free():
    # CPU 0 and 1 lose a vector each first, so the 0-2 mask lands on 2, then ties go low.
    assert effective_cpus([0b001, 0b010, 0b111, 0b111, 0b111], 0b111) == [0, 1, 2, 0, 1]


def test_ties_go_to_lowest_cpu():
    assert effective_cpus([0b1100, 0b1010], ALL4) == [2, 1]


def test_offline_cpus_are_skipped():
    assert effective_cpus([0b0011, ALL4], 0b1110) == [1, 2]


def test_mask_without_online_cpu_raises():
    with pytest.raises(ValueError):
        effective_cpus([0b0001], 0b1110)


def test_vectors_per_cpu_runs_out():
    # two free vectors per CPU: after CPU 0 has used both, the 0-1 mask goes to CPU 1
    assert effective_cpus([0b01, 0b01, 0b11], 0b11, vectors_per_cpu=2) == [0, 0, 1]


def test_reaffine_keeps_current_cpu_if_allowed():
    free = [5, 9, 9, 9]
    assert reaffine(0, ALL4, ALL4, free) == 0
    assert free == [5, 9, 9, 9]


def test_reaffine_moves_to_most_free():
    free = [5, 7, 9, 9]
    assert reaffine(0, 0b1110, ALL4, free) == 2
    assert free == [6, 7, 8, 9]


def test_reaffine_leaves_offline_cpu():
    free = [9, 9, 9, 9]
    assert reaffine(1, 0b0110, 0b1101, free) == 2
    assert free == [9, 10, 8, 9]


def test_reaffine_without_current_and_bad_mask():
    free = [3, 3]
    assert reaffine(-1, 0b11, 0b11, free) == 0
    assert free == [2, 3]
    with pytest.raises(ValueError):
        reaffine(0, 0b100, 0b11, free)
