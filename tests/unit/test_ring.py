"""The descriptor ring: order, wrap-around, capacity, published indices."""

import threading

import numpy as np

from emu.ring import Ring
from emu.skb import SKB


def test_push_pop_wraps_and_keeps_order():
    r = Ring.local(SKB, 8)
    seq = 0
    for round_ in range(10):
        b = np.zeros(5, dtype=SKB)
        b["seq"] = np.arange(seq, seq + 5)
        assert r.push(b) == 5
        out = r.pop(5)
        assert list(out["seq"]) == list(range(seq, seq + 5))
        seq += 5
    assert len(r) == 0


def test_full_ring_takes_what_fits():
    r = Ring.local(SKB, 8)
    b = np.zeros(12, dtype=SKB)
    b["seq"] = np.arange(12)
    assert r.push(b) == 8
    assert r.free() == 0
    assert r.push(b) == 0
    assert list(r.pop(100)["seq"]) == list(range(8))


def test_spsc_threads_no_loss_no_dup():
    r = Ring.local(SKB, 64)
    total = 20000
    got = []

    def produce():
        seq = 0
        while seq < total:
            b = np.zeros(min(64, total - seq), dtype=SKB)
            b["seq"] = np.arange(seq, seq + len(b))
            seq += r.push(b)

    t = threading.Thread(target=produce)
    t.start()
    while len(got) < total:
        out = r.pop(64)
        got.extend(out["seq"].tolist())
    t.join(10)
    assert got == list(range(total))
