"""cpus.flow_limit: skb_flow_limit() and struct sd_flow_limit."""

import numpy as np

from cpus.flow_limit import FLOW_LIMIT_HISTORY, FlowLimit
from cpus.rps import hash_32

MAX = 1000
HALF = MAX >> 1


def hash_in_bucket(bucket, log=12, start=1):
    h = start
    while hash_32(h, log) != bucket:
        h += 1
    return h


ELEPHANT = hash_in_bucket(77)
MICE = [h for h in range(1, 100000) if hash_32(h, 12) not in (0, 77)][:400]


def test_table_layout():
    fl = FlowLimit(4096)
    assert fl.log_buckets == 12 and fl.num_buckets == 4096
    assert FLOW_LIMIT_HISTORY == 128
    assert fl.history_array.dtype == np.uint16 and len(fl.history_array) == 128
    assert fl.buckets_array.dtype == np.uint8 and len(fl.buckets_array) == 4096
    assert fl.count == 0 and fl.history_head == 0


def test_inactive_below_half_full():
    fl = FlowLimit()
    for _ in range(500):
        assert fl.check(ELEPHANT, HALF - 1, MAX) is False
    assert fl.history_head == 0 and not fl.buckets_array.any() and fl.count == 0
    assert FlowLimit.active(HALF, MAX) and not FlowLimit.active(HALF - 1, MAX)


def test_elephant_limited_after_owning_more_than_half_of_the_window():
    fl = FlowLimit()
    res = [fl.check(ELEPHANT, HALF, MAX) for _ in range(100)]
    assert res[:64] == [False] * 64                 # bucket reaches 64: not > 64
    assert all(res[64:])                            # 65th and later: dropped
    assert fl.count == 36
    assert fl.buckets_array[hash_32(ELEPHANT, 12)] == 100


def test_mice_are_not_limited():
    fl = FlowLimit()
    assert not any(fl.check(h, MAX, MAX) for h in MICE)
    assert fl.count == 0


def test_elephant_among_mice():
    fl = FlowLimit()
    drops_e = drops_m = 0
    mice = iter(MICE * 10)
    for k in range(1200):
        if k % 4:                                   # 3 of every 4 packets: the elephant
            drops_e += fl.check(ELEPHANT, 800, MAX)
        else:
            drops_m += fl.check(next(mice), 800, MAX)
    assert drops_m == 0
    assert drops_e > 0
    assert fl.count == drops_e
    # in steady state the elephant holds 96 of the last 128 entries
    assert fl.buckets_array[hash_32(ELEPHANT, 12)] == 96


def test_window_slides():
    fl = FlowLimit()
    for _ in range(128):
        fl.check(ELEPHANT, HALF, MAX)
    assert fl.check(ELEPHANT, HALF, MAX)            # still limited
    for h in MICE[:128]:                            # 128 other packets push it out
        fl.check(h, HALF, MAX)
    assert fl.buckets_array[hash_32(ELEPHANT, 12)] == 0
    assert fl.check(ELEPHANT, HALF, MAX) is False
    # inactive periods do not move the window
    before = bytes(fl.buckets)
    for _ in range(50):
        fl.check(ELEPHANT, 10, MAX)
    assert bytes(fl.buckets) == before


def test_bucket_zero_quirk_matches_the_kernel():
    # history starts as 128 entries of bucket 0 that were never counted: evicting them
    # decrements bucket 0 when it is non-zero, so a flow alone in bucket 0 never exceeds 1
    fl = FlowLimit()
    h0 = hash_in_bucket(0)
    assert not any(fl.check(h0, HALF, MAX) for _ in range(1000))
    assert fl.buckets_array[0] == 1


def test_batch_matches_scalar():
    rng = np.random.default_rng(3)
    hashes = np.where(rng.random(3000) < 0.6, ELEPHANT,
                      rng.integers(1, 1 << 32, size=3000)).astype(np.uint32)
    qlens = rng.integers(0, MAX + 1, size=3000)
    a, b = FlowLimit(), FlowLimit()
    got = a.check_batch(hashes, qlens, MAX)
    ref = [b.check(int(h), int(q), MAX) for h, q in zip(hashes, qlens)]
    assert got.tolist() == ref
    assert a.count == b.count == sum(ref)
    assert bytes(a.buckets) == bytes(b.buckets) and a.history_head == b.history_head
    assert not FlowLimit().check_batch(hashes, np.zeros(3000, int), MAX).any()


def test_small_table():
    fl = FlowLimit(1)
    assert fl.log_buckets == 0
    res = [fl.check(h, HALF, MAX) for h in MICE[:70]]   # everything shares bucket 0
    assert not any(res)
