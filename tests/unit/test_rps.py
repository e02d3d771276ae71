"""cpus.rps: skb_get_hash() and get_rps_cpu() (RPS map and RFS)."""

import struct

import numpy as np
import pytest

from cpus.rps import (FLOW, RPS_NO_CPU, RxQueueRps, get_rps_cpu, hash_32, new_flow_table,
                      new_sock_table, rfs_slot, rps_cpu_mask, save_qtail, skb_get_hash)
from emu.skb import HEAD, SKB


def _csum(b: bytes) -> int:
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def frame(src=(10, 0, 0, 1), dst=(10, 0, 0, 2), sport=1234, dport=80, proto=17,
          frag=0, l4=b""):
    body = struct.pack("!HH", sport, dport) + l4.ljust(16, b"\0")
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 1, frag, 64, proto, 0,
                     bytes(src), bytes(dst))
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    return bytes(6) + bytes(6) + b"\x08\x00" + ip + body


def skbs_from(frames, hashes=None, l4_hash=0):
    b = np.zeros(len(frames), dtype=SKB)
    for i, f in enumerate(frames):
        b["head"][i, :min(len(f), HEAD)] = np.frombuffer(f[:HEAD], dtype=np.uint8)
        b["len"][i] = len(f)
    b["segs"] = 1
    if hashes is not None:
        b["hash"] = np.asarray(hashes, dtype=np.uint32)
    b["l4_hash"] = l4_hash
    return b


def hashed(hashes):
    """skbs carrying a NIC L4 hash (used as is)."""
    return skbs_from([frame()] * len(hashes), hashes, l4_hash=1)


# ----------------------------------------------------------------------------- basics

def test_tables_and_mask():
    assert rps_cpu_mask(1) == 0 and rps_cpu_mask(4) == 3 and rps_cpu_mask(6) == 7
    t = new_sock_table(1000)
    assert t.dtype == np.uint32 and len(t) == 1024 and (t == RPS_NO_CPU).all()
    ft = new_flow_table(300)
    assert ft.dtype == FLOW and len(ft) == 512 and (ft["cpu"] == RPS_NO_CPU).all()
    assert new_sock_table(0) is None and new_flow_table(0) is None


def test_hash_32_is_the_golden_ratio_multiply():
    for v in (0, 1, 0x12345678, 0xFFFFFFFF):
        for bits in (1, 7, 12, 32):
            assert hash_32(v, bits) == ((v * 0x61C88647) & 0xFFFFFFFF) >> (32 - bits)
    arr = np.array([1, 0x12345678, 0xFFFFFFFF], dtype=np.uint32)
    assert hash_32(arr, 12).tolist() == [hash_32(int(v), 12) for v in arr]
    assert rfs_slot(arr, 9).tolist() == [hash_32(int(v), 9) for v in arr]


def test_rps_map_reciprocal_scale_over_ascending_cpus():
    rng = np.random.default_rng(1)
    h = rng.integers(1, 1 << 32, size=1000, dtype=np.uint64).astype(np.uint32)
    rxq = RxQueueRps([5, 1, 3], None)
    cpus, slots = get_rps_cpu(hashed(h), rxq, None, np.zeros(8, np.uint32), 8)
    m = [1, 3, 5]
    assert cpus.tolist() == [m[(int(x) * 3) >> 32] for x in h]
    assert (slots == -1).all()
    assert set(cpus.tolist()) == {1, 3, 5}
    assert cpus.dtype == np.int32 and slots.dtype == np.int32


def test_hash_zero_is_not_steered():
    rxq = RxQueueRps([0, 1], None)
    cpus, _ = get_rps_cpu(hashed([0, 7]), rxq, None, np.zeros(2, np.uint32), 2)
    assert cpus.tolist() == [-1, 0]


def test_map_cpu_offline_is_not_steered():
    rxq = RxQueueRps([2, 6], None)
    cpus, _ = get_rps_cpu(hashed([1, 0xFFFFFFFF]), rxq, None, np.zeros(4, np.uint32), 4)
    assert cpus.tolist() == [2, -1]


def test_no_map_no_flow_table_does_not_hash():
    b = skbs_from([frame()] * 3, [5, 6, 7])
    cpus, slots = get_rps_cpu(b, RxQueueRps([], None), new_sock_table(64),
                              np.zeros(4, np.uint32), 4)
    assert (cpus == -1).all() and (slots == -1).all()
    assert (b["sw_hash"] == 0).all() and b["hash"].tolist() == [5, 6, 7]


# ------------------------------------------------------------------------ software hash

def test_l3_hash_is_replaced_by_a_symmetric_software_hash():
    fw = frame((10, 0, 0, 1), (192, 168, 1, 7), 40000, 53)
    rv = frame((192, 168, 1, 7), (10, 0, 0, 1), 53, 40000)
    other = frame((10, 0, 0, 1), (192, 168, 1, 7), 40001, 53)
    b = skbs_from([fw, rv, other], [0x1111, 0x1111, 0x1111])
    h = skb_get_hash(b)
    assert h[0] == h[1] != h[2]
    assert (h != 0x1111).all() and (h != 0).all()
    assert (b["sw_hash"] == 1).all() and (b["hash"] == h).all()
    assert (b["l4_hash"] == 1).all()              # __skb_set_sw_hash(.., flow_keys_have_l4)
    # stored: a second call changes nothing, whatever the seed
    assert (skb_get_hash(b, seed=99) == h).all()
    # the key is per run
    h2 = skb_get_hash(skbs_from([fw], [0x1111]), seed=1)
    assert h2[0] != h[0]


def test_l4_hash_from_the_nic_is_kept():
    b = skbs_from([frame()], [0xDEAD], l4_hash=1)
    assert skb_get_hash(b).tolist() == [0xDEAD] and b["sw_hash"][0] == 0


def test_fragments_hash_without_ports():
    a = frame(frag=0x2000, sport=1, dport=2)           # first fragment (MF)
    z = frame(frag=0x0010, sport=7, dport=9)           # later fragment
    whole = frame(sport=1, dport=2)
    b = skbs_from([a, z, whole])
    h = skb_get_hash(b)
    assert h[0] == h[1] != h[2]
    assert b["l4_hash"].tolist() == [0, 0, 1]


def test_software_hash_spreads_flows():
    frames = [frame(sport=1000 + k) for k in range(4000)]
    h = skb_get_hash(skbs_from(frames))
    assert len(np.unique(h)) == 4000
    cpus = (h.astype(np.uint64) * 4) >> 32
    counts = np.bincount(cpus.astype(int), minlength=4)
    assert counts.min() > 850


# -------------------------------------------------------------------------------- RFS

NCPU = 4
MASK = rps_cpu_mask(NCPU)


def rfs_setup(h, recv_cpu, cnt=256, entries=1024):
    st = new_sock_table(entries)
    st[h & (len(st) - 1)] = (h & ~MASK & 0xFFFFFFFF) | recv_cpu
    ft = new_flow_table(cnt)
    return st, ft, RxQueueRps([0, 1, 2, 3], ft)


def test_rfs_steers_to_the_cpu_of_the_last_recvmsg():
    h = 0x9ABC1234
    st, ft, rxq = rfs_setup(h, 2)
    heads = np.array([10, 20, 30, 40], dtype=np.uint32)
    cpus, slots = get_rps_cpu(hashed([h, h]), rxq, st, heads, NCPU)
    slot = hash_32(h, 8)
    assert cpus.tolist() == [2, 2] and slots.tolist() == [slot, slot]
    assert ft["cpu"][slot] == 2 and ft["last_qtail"][slot] == 30   # set_rps_cpu: head(2)


@pytest.mark.parametrize("head_old, last_qtail, moves", [
    (99, 100, False),                     # head(old) - last_qtail < 0: packets still queued
    (100, 100, True),
    (150, 100, True),
    (0xFFFFFFEF, 0xFFFFFFF0, False),
    (5, 0xFFFFFFF0, True),                # u32 wrap-around: (s32)(5 - 0xfffffff0) = 21
    (0x7FFFFFF0, 0xFFFFFFF0, False),      # difference 2**31 reads as negative
])
def test_migration_waits_for_the_old_cpu_to_drain(head_old, last_qtail, moves):
    h = 0x12345678
    st, ft, rxq = rfs_setup(h, 2)
    slot = hash_32(h, 8)
    ft["cpu"][slot] = 1
    ft["last_qtail"][slot] = last_qtail
    heads = np.array([0, head_old, 777, 0], dtype=np.uint32)
    cpus, slots = get_rps_cpu(hashed([h]), rxq, st, heads, NCPU)
    assert slots.tolist() == [slot]
    if moves:
        assert cpus.tolist() == [2]
        assert ft["cpu"][slot] == 2 and ft["last_qtail"][slot] == 777
    else:
        assert cpus.tolist() == [1]
        assert ft["cpu"][slot] == 1 and ft["last_qtail"][slot] == last_qtail


def test_unset_or_invalid_current_cpu_moves_at_once():
    h = 0x12345678
    st, ft, rxq = rfs_setup(h, 3)
    slot = hash_32(h, 8)
    ft["cpu"][slot] = 9                                  # >= nr_cpu_ids (offline)
    ft["last_qtail"][slot] = 1 << 30
    cpus, _ = get_rps_cpu(hashed([h]), rxq, st, np.zeros(4, np.uint32), NCPU)
    assert cpus.tolist() == [3] and ft["cpu"][slot] == 3


def test_unmatched_ident_falls_back_to_the_rps_map():
    h = 0x12345678
    st, ft, rxq = rfs_setup(h, 2)
    other = h ^ 0x00100000                # same sock-table index, other high bits
    cpus, slots = get_rps_cpu(hashed([other]), rxq, st, np.zeros(4, np.uint32), NCPU)
    assert cpus.tolist() == [(other * 4) >> 32] and slots.tolist() == [-1]
    assert (ft["cpu"] == RPS_NO_CPU).all()


def test_empty_sock_entry_and_no_map():
    st = new_sock_table(64)
    ft = new_flow_table(64)
    rxq = RxQueueRps([], ft)
    b = hashed([0x1234])
    cpus, slots = get_rps_cpu(b, rxq, st, np.zeros(4, np.uint32), NCPU)
    assert cpus.tolist() == [-1] and slots.tolist() == [-1]


def test_desired_cpu_beyond_nr_cpu_ids_uses_the_map():
    ncpus = 3                             # mask 3: ident can name cpu 3, which does not exist
    h = 0x40000001
    st = new_sock_table(16)
    st[h & 15] = (h & ~3 & 0xFFFFFFFF) | 3
    ft = new_flow_table(16)
    rxq = RxQueueRps([0, 1, 2], ft)
    cpus, slots = get_rps_cpu(hashed([h]), rxq, st, np.zeros(3, np.uint32), ncpus)
    assert cpus.tolist() == [(h * 3) >> 32] and slots.tolist() == [-1]
    assert ft["cpu"][hash_32(h, 4)] == 3            # set_rps_cpu still records it


def test_save_qtail_last_store_wins_and_skips():
    ft = new_flow_table(8)
    save_qtail(ft, np.array([3, -1, 3, 5], np.int32), np.array([10, 11, 12, 13], np.uint32))
    assert ft["last_qtail"][3] == 12 and ft["last_qtail"][5] == 13
    save_qtail(ft, np.array([5], np.int32), np.array([99], np.uint32),
               enqueued=np.array([False]))
    assert ft["last_qtail"][5] == 13
    save_qtail(None, np.array([1]), np.array([1]))


def _reference(hashes, ft, st, heads, ncpus, rps_map):
    """Per-skb transcription of get_rps_cpu() + set_rps_cpu()."""
    mask = rps_cpu_mask(ncpus)
    log = len(ft).bit_length() - 1
    out = []
    for h in hashes.tolist():
        cpu, slot = -1, -1
        if h:
            ident = int(st[h & (len(st) - 1)])
            done = False
            if not ((ident ^ h) & ~mask & 0xFFFFFFFF):
                nxt = ident & mask
                s = hash_32(h, log)
                tc = int(ft["cpu"][s])
                if tc != nxt:
                    d = (int(heads[tc]) - int(ft["last_qtail"][s])) & 0xFFFFFFFF if tc < ncpus else 0
                    if tc >= ncpus or d < 0x80000000:
                        if nxt < ncpus:
                            ft["last_qtail"][s] = heads[nxt]
                        ft["cpu"][s] = nxt
                        tc = nxt
                if tc < ncpus:
                    cpu, slot, done = tc, s, True
            if not done and rps_map:
                c = rps_map[(h * len(rps_map)) >> 32]
                if c < ncpus:
                    cpu = c
        out.append((cpu, slot))
    return out


def test_batch_matches_a_per_packet_transcription():
    rng = np.random.default_rng(5)
    ncpus = 6
    mask = rps_cpu_mask(ncpus)
    flows = rng.integers(1, 1 << 32, size=300, dtype=np.uint64).astype(np.uint32)
    st = new_sock_table(256)
    for h in flows[:200].tolist():         # 2/3 of the flows have a socket read somewhere
        st[h & 255] = (h & ~mask & 0xFFFFFFFF) | int(rng.integers(0, 8))
    ft1 = new_flow_table(64)               # small: slot collisions between flows
    for s in range(64):
        ft1["cpu"][s] = rng.choice([RPS_NO_CPU, 0, 1, 2, 3, 4, 5, 7])
        ft1["last_qtail"][s] = rng.integers(0, 1 << 32)
    ft2 = ft1.copy()
    heads = rng.integers(0, 1 << 32, size=ncpus, dtype=np.uint64).astype(np.uint32)
    pkts = flows[rng.integers(0, 300, size=2000)]
    cpus, slots = get_rps_cpu(hashed(pkts), RxQueueRps([0, 2, 4, 5], ft1), st, heads, ncpus)
    ref = _reference(pkts, ft2, st, heads, ncpus, [0, 2, 4, 5])
    assert list(zip(cpus.tolist(), slots.tolist())) == ref
    assert (ft1 == ft2).all()
