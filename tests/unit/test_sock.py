"""UDP sockets: truesize, the 6.18 rcvbuf rule, lazy rmem release, recvmsg MIBs, RFS record,
the port table, and concurrent producers with one reader."""

import threading

import numpy as np
import pytest

from cpus.sock import SocketTable, UdpSocket, record_flow, release_plan, rps_cpu_mask
from emu.skb import INT_MAX, SOCK_ENTRY, socket_ring_capacity, truesize_of
from emu.counters import SRC_DELIVERED0, C, cpu_block
from emu.ring import Ring

TS = 2624          # SKB_TRUESIZE(2048) on x86_64 6.x
RPS_NO_CPU = 0xFFFF


def mk(port=9000, rcvbuf=212992, reader_cpu=0, lock=True, **kw):
    cap = socket_ring_capacity(rcvbuf, TS)
    return UdpSocket(Ring.local(SOCK_ENTRY, cap), threading.Lock() if lock else None, port,
                     rcvbuf, reader_cpu, **kw)


def entries(n, seq0=0, lens=128, src=0, hash_=0xABCDEF01):
    e = np.zeros(n, dtype=SOCK_ENTRY)
    e["seq"] = seq0 + np.arange(n)
    e["len"] = lens
    e["truesize"] = truesize_of(e["len"])
    e["hash"] = hash_
    e["src"] = src
    e["segs"] = 1
    return e


def admit_ref(sizes, rmem, rcvbuf):
    acc = []
    for s in sizes:
        s = int(s)
        ok = not (rmem + s > rcvbuf and (rcvbuf > INT_MAX >> 1 or rmem != 0))
        acc.append(ok)
        if ok:
            rmem += s
    return np.array(acc, dtype=bool), rmem


def enq(sock, e):
    """(accepted count, reader to wake) of one enqueue."""
    accepted, woke = sock.enqueue(e)
    return int(accepted.sum()), woke


def admit(sizes, rmem, rcvbuf):
    """The receive-buffer rule as UdpSocket.enqueue applies it: skbs of these truesizes
    offered to a socket whose sk_rmem_alloc is rmem; (accepted mask, rmem after)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    cap = 1 << max(1, int(len(sizes)) + 1).bit_length()
    sk = UdpSocket(Ring.local(SOCK_ENTRY, cap), None, 9000, rcvbuf, 0)
    sk.ring.set_user(0, rmem)
    e = np.zeros(len(sizes), dtype=SOCK_ENTRY)
    e["truesize"] = sizes
    accepted, _ = sk.enqueue(e)
    return accepted, sk.rmem()


def release_ref(sizes, deficit, rq, rest, thr):
    """udp_skb_destructor -> udp_rmem_release(partial=1), one skb at a time."""
    released = 0
    m = len(sizes)
    if m and rq == 0:
        rq = m + rest
    for i, s in enumerate(sizes):
        rq -= 1
        deficit += int(s)
        if deficit < thr and rq > 0:
            continue
        released += deficit
        deficit = 0
        rq = (m - i - 1) + rest
    return released, deficit, rq


# -- truesize and ring size ------------------------------------------------------------------

def test_truesize_2k_buffers_and_4k_steps():
    got = truesize_of(np.array([60, 1514, 2048, 2049, 4096, 4097, 9014]))
    assert list(got) == [2624, 2624, 2624, 4096 + 576, 4096 + 576, 8192 + 576, 12288 + 576]
    assert got.dtype == np.uint32


@pytest.mark.parametrize("rcvbuf", [2304, 2624, 5000, 212992, 4194304])
def test_ring_capacity_never_the_limit(rcvbuf):
    cap = socket_ring_capacity(rcvbuf, TS)
    assert cap & (cap - 1) == 0
    acc, _ = admit(np.full(cap + 10, TS), 0, rcvbuf)
    assert acc.sum() < cap


# -- the receive-buffer rule -------------------------------------------------------------------

def test_rule_exact_boundary():
    acc, rmem = admit(np.full(5, TS), 0, 3 * TS)
    assert list(acc) == [True, True, True, False, False] and rmem == 3 * TS
    acc, rmem = admit(np.full(5, TS), 0, 3 * TS - 1)
    assert list(acc) == [True, True, False, False, False] and rmem == 2 * TS


def test_rule_first_packet_always_accepted_when_empty():
    acc, rmem = admit(np.array([5000, 100]), 0, 2304)
    assert list(acc) == [True, False] and rmem == 5000       # overshoots rcvbuf
    acc, _ = admit(np.array([3000]), 1, 2304)                 # not empty: no exception
    assert not acc[0]


def test_rule_huge_rcvbuf_has_no_empty_exception():
    big = (INT_MAX >> 1) + 1
    acc, rmem = admit(np.array([big + 1]), 0, big)
    assert not acc[0] and rmem == 0


def test_rule_later_smaller_skb_fits():
    big = int(truesize_of(np.array([3000]))[0])
    acc, rmem = admit(np.array([TS, big, TS, big, TS]), 0, 2 * TS + 100)
    assert list(acc) == [True, False, True, False, False] and rmem == 2 * TS


@pytest.mark.parametrize("seed", range(20))
def test_rule_matches_sequential_reference(seed):
    rng = np.random.default_rng(seed)
    sizes = truesize_of(rng.integers(60, 9014, int(rng.integers(1, 80))))
    rmem = int(rng.choice([0, 0, int(rng.integers(1, 100000))]))
    rcvbuf = int(rng.integers(2304, 120000))
    acc, r = admit(sizes, rmem, rcvbuf)
    ref_acc, ref_r = admit_ref(sizes, rmem, rcvbuf)
    assert (acc == ref_acc).all() and r == ref_r


def test_enqueue_counts_and_state_words():
    s = mk(rcvbuf=3 * TS)
    n, woke = enq(s, entries(2))
    assert (n, woke) == (2, True)
    n, woke = enq(s, entries(3, seq0=2))
    assert (n, woke) == (1, False)
    assert s.rmem() == 3 * TS and s.drops() == 2 and s.queued() == 3
    n, woke = enq(s, entries(0))
    assert (n, woke) == (0, False)


def test_enqueue_without_lock_object():
    s = mk(lock=False)
    assert enq(s, entries(4)) == (4, True)


# -- reader side --------------------------------------------------------------------------------

def test_recvmsg_counts_at_read_time():
    s = mk()
    c = cpu_block()
    enq(s, entries(5, src=3))
    assert c[C.UDP_IN_DATAGRAMS] == 0
    got, left = s.recvmsg(2, 0, c)
    assert list(got["seq"]) == [0, 1] and left == 3
    got, left = s.recvmsg(10, 0, c)
    assert list(got["seq"]) == [2, 3, 4] and left == 0
    got, left = s.recvmsg(10, 0, c)
    assert len(got) == 0 and left == 0
    assert c[C.UDP_IN_DATAGRAMS] == 5 and c[C.USER_DATAGRAMS] == 5
    assert c[C.RECVMSG_CALLS] == 3 and c[SRC_DELIVERED0 + 3] == 5
    assert s.rmem() == 0


def test_rmem_given_back_lazily_like_udp_rmem_release():
    rcvbuf = 40 * TS                    # forward_threshold = 10 TS
    s = mk(rcvbuf=rcvbuf)
    c = cpu_block()
    enq(s, entries(30))
    s.recvmsg(4, 0, c)                  # deficit 4 TS < threshold: nothing given back yet
    assert s.rmem() == 30 * TS
    s.recvmsg(6, 0, c)                  # deficit reaches 10 TS: released, rest spliced
    assert s.rmem() == 20 * TS
    s.recvmsg(20, 0, c)                 # reader queue emptied: everything back
    assert s.rmem() == 0


def test_lazy_release_moves_the_drop_boundary():
    rcvbuf = 8 * TS                     # forward_threshold = 2 TS
    lazy, eager = mk(rcvbuf=rcvbuf), mk(rcvbuf=rcvbuf, defer_release=False)
    c = cpu_block()
    for s in (lazy, eager):
        enq(s, entries(8))
        s.recvmsg(1, 0, c)              # one read: lazy keeps its truesize charged
    assert enq(lazy, entries(1))[0] == 0
    assert enq(eager, entries(1))[0] == 1


@pytest.mark.parametrize("seed", range(20))
def test_release_plan_matches_per_skb_reference(seed):
    rng = np.random.default_rng(100 + seed)
    thr = int(rng.integers(0, 60000))
    sizes = truesize_of(rng.integers(60, 9014, int(rng.integers(0, 200)))).astype(np.int64)
    deficit = int(rng.integers(0, max(1, thr)))
    rq = int(rng.integers(0, len(sizes) + 1)) if rng.random() < 0.7 else 0
    rest = int(rng.integers(0, 5))
    assert release_plan(sizes, deficit, rq, rest, thr) == release_ref(sizes, deficit, rq, rest, thr)


def test_drain_always_returns_rmem_to_zero():
    rng = np.random.default_rng(3)
    s = mk(rcvbuf=50 * TS)
    c = cpu_block()
    for _ in range(200):
        enq(s, entries(int(rng.integers(0, 6)), lens=int(rng.integers(60, 9000))))
        s.recvmsg(int(rng.integers(0, 5)), 0, c)
    while s.queued():
        s.recvmsg(7, 0, c)
    assert s.rmem() == 0


# -- RFS: sk_rxhash and sock_rps_record_flow ------------------------------------------------------

def test_connected_socket_records_flow_on_read():
    s = mk(connect="10.0.0.1:10000")
    c = cpu_block()
    table = np.full(256, RPS_NO_CPU, dtype=np.uint32)
    h = 0xABCDEF05
    enq(s, entries(3, hash_=h))
    assert s.rxhash() == h
    s.recvmsg(1, 3, c, table, ncpus=6)
    mask = rps_cpu_mask(6)
    assert mask == 7
    assert table[h & 255] == (h & ~mask & 0xFFFFFFFF) | 3
    assert (np.delete(table, h & 255) == RPS_NO_CPU).all()
    # the same value again: the entry is not written (read-only table would raise)
    table.flags.writeable = False
    s.recvmsg(1, 3, c, table, ncpus=6)
    table.flags.writeable = True
    s.recvmsg(1, 5, c, table, ncpus=6)
    assert table[h & 255] == (h & ~7 & 0xFFFFFFFF) | 5


def test_unconnected_socket_never_records():
    s = mk()
    c = cpu_block()
    table = np.full(64, RPS_NO_CPU, dtype=np.uint32)
    enq(s, entries(2, hash_=0x1234))
    s.recvmsg(2, 1, c, table, ncpus=4)
    assert (table == RPS_NO_CPU).all() and s.rxhash() == 0


def test_rxhash_saved_even_for_a_dropped_skb_and_zero_hash_skipped():
    s = mk(rcvbuf=TS, connect="10.0.0.1:1")
    enq(s, entries(1, hash_=0x11))
    enq(s, entries(1, hash_=0x22))          # dropped, but sk_rxhash updated first
    assert s.drops() == 1 and s.rxhash() == 0x22
    table = np.full(16, RPS_NO_CPU, dtype=np.uint32)
    record_flow(table, 0, 1, 4)
    assert (table == RPS_NO_CPU).all()


def test_rps_cpu_mask():
    assert [rps_cpu_mask(n) for n in (1, 2, 3, 4, 5, 8, 9, 64)] == [0, 1, 3, 3, 7, 7, 15, 63]


# -- port table ----------------------------------------------------------------------------------

def test_socket_table_lookup():
    a, b = mk(port=9000), mk(port=53)
    conn = mk(port=7000, connect="10.0.0.9:4000")
    anyp = mk(port=7001, connected=True)       # connected without a known peer: any source
    t = SocketTable([a, b, conn, anyp])
    assert [s.index for s in t.sockets] == [0, 1, 2, 3]
    dport = np.array([9000, 53, 1, 7000, 7000, 7000, 7001])
    saddr = np.array([0, 0, 0, 0x0A000009, 0x0A000009, 0x0A00000A, 5])
    sport = np.array([0, 0, 0, 4000, 4001, 4000, 6])
    assert list(t.lookup(dport, saddr, sport)) == [0, 1, -1, 2, -1, -1, 3]
    assert t.port_map.dtype == np.int16 and t.port_map.shape == (65536,)


def test_socket_table_rejects_double_bind():
    with pytest.raises(ValueError):
        SocketTable([mk(port=9000), mk(port=9000)])


def test_connect_string_and_bool_forms():
    s = mk(connect="192.168.1.2:5353")
    assert s.connected and s.peer_addr == 0xC0A80102 and s.peer_port == 5353
    assert not mk(connect="").connected
    assert mk(port=1, rcvbuf=4096, reader_cpu=0, connected=True).connected


# -- concurrency -----------------------------------------------------------------------------------

@pytest.mark.parametrize("rcvbuf", [400 * TS, 16 * TS])
def test_three_producers_one_reader_no_loss_no_dup(rcvbuf):
    s = mk(rcvbuf=rcvbuf)
    c = cpu_block()
    per_thread, batch = 3000, 7
    accepted = [[] for _ in range(3)]
    done = threading.Event()
    got = []

    def producer(t):
        for b0 in range(0, per_thread, batch):
            e = entries(min(batch, per_thread - b0), seq0=t * 1_000_000 + b0, src=t)
            mask, _ = s.enqueue(e)
            accepted[t].extend(e["seq"][mask].tolist())

    def reader():
        while not done.is_set() or s.queued():
            out, _ = s.recvmsg(5, 0, c)
            got.extend(out["seq"].tolist())

    threads = [threading.Thread(target=producer, args=(t,)) for t in range(3)]
    r = threading.Thread(target=reader)
    r.start()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    done.set()
    r.join()
    assert len(got) == len(set(got))
    assert sorted(got) == sorted(x for a in accepted for x in a)
    for t in range(3):                          # each producer's datagrams stay in order
        mine = [x for x in got if x // 1_000_000 == t]
        assert mine == sorted(mine)
        assert c[SRC_DELIVERED0 + t] == len(accepted[t])
    total = 3 * per_thread
    assert len(got) + s.drops() == total
    assert s.rmem() == 0 and s.queued() == 0
