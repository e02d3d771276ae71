"""The NIC's DMA step: a full ring drops before the frame is built, and nothing is lost."""

import numpy as np

from emu.counters import SRC_RING_DROP0, SRC_SENT0, N, Q_DROPS, Q_PACKETS, nic_block, nq
from emu.ring import Ring
from emu.skb import SKB
from nic.dma import dma_arrivals as _arrive

from .harness import Host

SRC = {"name": "u", "proto": "udp", "rate_pps": 1_000_000.0, "flows": 8,
       "dst_ports": [9000], "frame_len": 128}
TCP = {"name": "t", "proto": "tcp", "rate_pps": 1_000_000.0, "flows": 1,
       "dst_ports": [5201], "frame_len": 1514, "queue": 1}


def test_full_rings_drop_and_every_frame_is_counted_once():
    h = Host(["ethtool.speed=100000"], ncpus=2, sources=[SRC, TCP])
    rings = [Ring.local(SKB, 64) for _ in range(h.cfg.nqueues)]
    c = nic_block()
    seq = _arrive(h.sources, 0, 1_000_000, 0, rings, c)    # 1 ms at 2 Mpps: 2000 frames
    assert seq == 2000
    assert c[N.GENERATED] == 2000
    assert c[SRC_SENT0] == 1000 and c[SRC_SENT0 + 1] == 1000
    in_rings = sum(len(r) for r in rings)
    drops = sum(int(c[nq(q, Q_DROPS)]) for q in range(len(rings)))
    assert in_rings == sum(int(c[nq(q, Q_PACKETS)]) for q in range(len(rings)))
    assert in_rings + drops == 2000
    assert drops == int(c[SRC_RING_DROP0]) + int(c[SRC_RING_DROP0 + 1])
    assert all(len(r) == 64 for r in rings if len(r))       # what fits was taken
    seqs = np.concatenate([r.pop(64)["seq"] for r in rings])
    assert len(np.unique(seqs)) == in_rings


def test_dropped_frames_still_consume_tcp_sequence_space():
    h = Host(["ethtool.speed=100000"], ncpus=2, sources=[TCP])
    rings = [Ring.local(SKB, 64) for _ in range(h.cfg.nqueues)]
    c = nic_block()
    _arrive(h.sources, 0, 200_000, 0, rings, c)               # 200 frames, 64 fit
    kept = rings[1].pop(64)
    seq_of = lambda b: (b["head"][:, 38:42].astype(np.uint64) @ np.array([1 << 24, 1 << 16, 1 << 8, 1], dtype=np.uint64))
    first = int(seq_of(kept)[0])
    assert np.all(np.diff(seq_of(kept).astype(np.int64) % (1 << 32)) == 1460)
    _arrive(h.sources, 200_000, 201_000, 200, rings, c)       # one more frame, after 136 drops
    nxt = rings[1].pop(64)
    assert int(seq_of(nxt)[0]) == (first + 200 * 1460) % (1 << 32)
