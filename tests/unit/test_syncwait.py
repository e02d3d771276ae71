"""The process Port's mailboxes: a CPU's IPIs to another CPU through the sync block."""

import threading

import pytest

from emu.syncblock import IPI_RES, IPI_RPS, MBOX_SLOTS, SyncBlock, layout_words
from emu.syncwait import ProcPort
from emu.timesync import Sync


def _block(ncpus=2):
    words = layout_words(ncpus, 0)
    buf = bytearray(words * 8 + SyncBlock.futex_bytes(ncpus) + 64)
    sb = SyncBlock(buf, 0, words * 8, ncpus, 0, [])
    sb.init()
    return sb


def _sync(sb, me, stop=lambda: False):
    return Sync(sb, me, 1000, 100, ProcPort(sb, me, None, {}, "test", stop))


def test_ipis_arrive_in_order_with_their_sender_and_are_counted_taken():
    sb = _block(3)
    s0, s1, s2 = _sync(sb, 0), _sync(sb, 1), _sync(sb, 2)
    s0.send(2, IPI_RES, 5000, 0)
    s1.send(2, IPI_RPS, 4000, 1)
    s0.send(2, IPI_RPS, 6000, 0)
    assert s2.drain() == 3
    assert [(te, kind, src) for te, _o, kind, _a, src in sorted(s2.heap)] == [
        (4000, IPI_RPS, 1), (5000, IPI_RES, 0), (6000, IPI_RPS, 0)]
    assert int(sb.taken[0, 2]) == 2 and int(sb.taken[1, 2]) == 1
    assert s2.drain() == 0


def test_the_mailbox_wraps_round_its_slots():
    sb = _block()
    s0, s1 = _sync(sb, 0), _sync(sb, 1)
    got = []
    for k in range(3 * MBOX_SLOTS + 5):
        s0.send(1, IPI_RES, 1000 + k, 0)
        if k % 7 == 6:
            s1.drain()
            got += s1.due(1 << 40)
    s1.drain()
    got += s1.due(1 << 40)
    assert [e[0] for e in got] == [1000 + k for k in range(3 * MBOX_SLOTS + 5)]


@pytest.mark.compiled           # the sender wakes the receiver through the futex
@pytest.mark.timeout(20)
def test_a_full_mailbox_makes_the_sender_wait_for_the_receiver():
    sb = _block()
    s0, s1 = _sync(sb, 0), _sync(sb, 1)
    for k in range(MBOX_SLOTS):
        s0.send(1, IPI_RES, 1000 + k, 0)
    sent = threading.Event()

    def one_more():
        s0.send(1, IPI_RES, 99_999, 0)
        sent.set()

    th = threading.Thread(target=one_more)
    th.start()
    assert not sent.wait(0.2)                       # no slot: it waits, overwriting nothing
    assert s1.drain() == MBOX_SLOTS
    assert sent.wait(10)
    th.join(10)
    assert s1.drain() == 1
    assert [e[0] for e in s1.due(1 << 40)] == [1000 + k for k in range(MBOX_SLOTS)] + [99_999]


@pytest.mark.compiled
@pytest.mark.timeout(20)
def test_a_stop_ends_the_wait_for_a_full_mailbox():
    sb = _block()
    stop = threading.Event()
    s0 = _sync(sb, 0, stop.is_set)
    for k in range(MBOX_SLOTS):
        s0.send(1, IPI_RES, 1000 + k, 0)
    stop.set()
    s0.send(1, IPI_RES, 99_999, 0)                  # returns: the run is ending anyway,
    assert int(sb.sent[0, 1]) == MBOX_SLOTS         # and the IPI is not counted as sent


@pytest.mark.compiled
@pytest.mark.timeout(20)
def test_the_compiled_wait_does_not_sleep_once_the_run_stops_at_once():
    """STOPPING is part of the compiled wait's last look: a CPU held back by a peer that
    will not move returns stopped without sleeping at all (no wait is counted)."""
    from emu.syncblock import PUB, SEND, STOPPING, WAITS, busy

    sb = _block(2)
    s0 = _sync(sb, 0)
    s0.quiet = lambda: False
    sb.agents[1, PUB] = busy(1000)                  # cpu1 stays behind
    sb.agents[1, SEND] = busy(1000)
    sb.agents[2, PUB] = (1 << 63) - 1               # the NIC: idle for ever
    sb.agents[2, SEND] = (1 << 63) - 1
    sb.glob[STOPPING] = 1
    s0.until(50_000)
    assert s0.stopped
    assert int(sb.agents[0, WAITS]) == 0            # it registered, looked, and did not sleep
