"""try_to_wake_up across CPUs: a remote reader gets a reschedule IPI only while it sleeps.

Default sockets: ports 9000..9003, reader_cpu = index % cpus, so with 2 CPUs ports 9001 and
9003 are read on CPU 1 and 9000, 9002 on CPU 0.
"""

from collections import deque

import numpy as np

from cpus.dev import netif_receive_skb
from emu.counters import C

from .harness import Host

TO_CPU1 = {"name": "u", "proto": "udp", "rate_pps": 1000.0, "flows": 8,
           "dst_ports": [9001], "frame_len": 128}
TO_CPU0 = dict(TO_CPU1, name="z", dst_ports=[9000])
P9000, P9001, P9002, P9003 = range(4)      # socket indexes


def host(sources=None, sets=()):
    h = Host(ncpus=2, sets=list(sets), sources=sources or [TO_CPU1, TO_CPU0])
    assert [s.reader_cpu for s in h.sockets] == [0, 1, 0, 1]
    return h


def on_rq(h, c):
    return int(h.counters[c][C.USER_ON_RQ])


def test_initially_asleep_and_not_on_runqueue():
    h = host()
    for c in range(2):
        assert not h.cpus[c].tasks.user.runnable
        assert on_rq(h, c) == 0


def test_remote_delivery_to_a_sleeping_reader_sends_one_resched_ipi():
    h = host()
    cpu0, cpu1 = h.cpus
    netif_receive_skb(cpu0.sd, cpu0.net, h.frames(0, 10))
    assert len(h.sockets[P9001].ring) == 10
    assert list(h.inbox[1]) == [("res", 0)]
    assert not h.inbox[0]
    assert on_rq(h, 0) == 0 and not cpu0.tasks.user.runnable     # the producer's own task: untouched
    # the queue is no longer empty: more datagrams wake nobody again
    netif_receive_skb(cpu0.sd, cpu0.net, h.frames(0, 5))
    assert len(h.sockets[P9001].ring) == 15
    assert list(h.inbox[1]) == [("res", 0)]
    # the target takes the IPI: counted in RES there, its task runnable and on the runqueue
    assert h.counters[1][C.RES] == 0
    cpu1.sd.irq_point()
    assert h.counters[1][C.RES] == 1 and h.counters[0][C.RES] == 0
    assert cpu1.tasks.user.runnable and on_rq(h, 1) == 1
    assert not h.inbox[1]


def test_remote_delivery_to_a_runnable_reader_sends_no_ipi():
    h = host()
    cpu0, cpu1 = h.cpus
    cpu1.tasks.wake_user()
    assert on_rq(h, 1) == 1 and cpu1.tasks.user.runnable
    netif_receive_skb(cpu0.sd, cpu0.net, h.frames(0, 10))
    assert len(h.sockets[P9001].ring) == 10                # delivered all the same
    assert h.inbox[1] == deque()
    cpu1.sd.irq_point()
    assert h.counters[1][C.RES] == 0


def test_without_remote_counters_every_remote_wakeup_sends_the_ipi():
    h = host()
    cpu0, cpu1 = h.cpus
    cpu1.tasks.wake_user()
    cpu0.tasks.cpu_counters = None                                 # USER_ON_RQ unknown
    netif_receive_skb(cpu0.sd, cpu0.net, h.frames(0, 3))
    assert list(h.inbox[1]) == [("res", 0)]


def test_local_reader_is_woken_directly():
    h = host(sources=[TO_CPU0])
    cpu0 = h.cpus[0]
    netif_receive_skb(cpu0.sd, cpu0.net, h.frames(0, 4))
    assert len(h.sockets[P9000].ring) == 4
    assert cpu0.tasks.user.runnable and on_rq(h, 0) == 1
    assert not h.inbox[0] and not h.inbox[1]


def test_two_sockets_of_one_sleeping_reader_both_filled_wake_it():
    both = dict(TO_CPU1, dst_ports=[9001, 9003])
    h = host(sources=[both])
    netif_receive_skb(h.cpus[0].sd, h.cpus[0].net, h.frames(0, 8))
    assert len(h.sockets[P9001].ring) == 4 and len(h.sockets[P9003].ring) == 4
    assert h.inbox[1] and set(h.inbox[1]) == {("res", 0)}
    h.cpus[1].sd.irq_point()
    assert h.counters[1][C.RES] >= 1 and on_rq(h, 1) == 1 and h.cpus[1].tasks.user.runnable
    h.run(1)
    assert h.counters[1][C.USER_DATAGRAMS] == 8 and on_rq(h, 1) == 0


def test_one_sleeping_reader_gets_one_ipi_even_when_two_of_its_sockets_fill():
    both = dict(TO_CPU1, dst_ports=[9001, 9003])
    h = host(sources=[both])
    netif_receive_skb(h.cpus[0].sd, h.cpus[0].net, h.frames(0, 8))
    assert list(h.inbox[1]) == [("res", 0)]


# -- sleep_user ------------------------------------------------------------------------------

def test_sleep_user_with_empty_sockets_sleeps():
    h = host()
    cpu1 = h.cpus[1]
    cpu1.tasks.wake_user()
    cpu1.tasks.sleep_user()
    assert not cpu1.tasks.user.runnable and on_rq(h, 1) == 0


def test_sleep_user_keeps_the_task_runnable_when_its_socket_is_not_empty():
    h = host()
    cpu0, cpu1 = h.cpus
    cpu1.tasks.wake_user()
    netif_receive_skb(cpu0.sd, cpu0.net, h.frames(0, 3))
    assert not h.inbox[1]
    cpu1.tasks.sleep_user()
    assert cpu1.tasks.user.runnable and on_rq(h, 1) == 1


def test_sleep_user_ignores_sockets_read_elsewhere():
    h = host(sources=[TO_CPU0])
    cpu0, cpu1 = h.cpus
    netif_receive_skb(cpu0.sd, cpu0.net, h.frames(0, 3))                             # port 9000: read on CPU 0
    cpu1.tasks.wake_user()
    cpu1.tasks.sleep_user()
    assert not cpu1.tasks.user.runnable and on_rq(h, 1) == 0
    assert len(h.sockets[P9000].ring) == 3


class _Recorder:
    """A socket lock that logs acquire/release with the reader's USER_ON_RQ at that moment,
    and can run a hook (a producer) just before the first acquire."""

    def __init__(self, name, lock, h, log, hook=None):
        self.name, self.lock, self.h, self.log, self.hook = name, lock, h, log, hook

    def acquire(self):
        if self.hook is not None:
            hook, self.hook = self.hook, None
            hook()
        self.log.append(("acquire", self.name, on_rq(self.h, 1)))
        return self.lock.acquire()

    def release(self):
        self.log.append(("release", self.name, on_rq(self.h, 1)))
        self.lock.release()


def test_sleep_user_clears_on_rq_then_takes_and_drops_each_of_its_socket_locks():
    h = host()
    cpu1 = h.cpus[1]
    log = []
    for s in h.sockets:
        s.lock = _Recorder(s.port, s.lock, h, log)
    cpu1.tasks.wake_user()
    cpu1.tasks.sleep_user()
    # only CPU 1's sockets, each taken then dropped, all after USER_ON_RQ was cleared
    assert log == [("acquire", 9001, 0), ("release", 9001, 0),
                   ("acquire", 9003, 0), ("release", 9003, 0)]
    assert not cpu1.tasks.user.runnable
    assert all(not s.lock.lock.locked() for s in h.sockets)


def test_datagram_queued_during_the_sleep_barrier_is_not_lost():
    """A producer that enqueues while the reader is going to sleep: it reads USER_ON_RQ
    after the reader cleared it, so it sends the IPI, and the reader's re-check sees the
    datagram and stays runnable. Either way the reader is not left asleep with data."""
    h = host()
    cpu0, cpu1 = h.cpus
    log = []
    s = h.sockets[P9001]
    s.lock = _Recorder(9001, s.lock, h, log, hook=lambda: netif_receive_skb(cpu0.sd, cpu0.net, h.frames(0, 2)))
    cpu1.tasks.wake_user()
    cpu1.tasks.sleep_user()
    assert len(s.ring) == 2
    assert cpu1.tasks.user.runnable and on_rq(h, 1) == 1
    assert list(h.inbox[1]) == [("res", 0)]
    # the producer's enqueue (under the same lock) came before the reader's barrier
    assert [e[0] for e in log] == ["acquire", "release", "acquire", "release"]
    cpu1.sd.irq_point()
    assert h.counters[1][C.RES] == 1 and cpu1.tasks.user.runnable


# -- the whole path: NIC ring, hardirq and NAPI on CPU 0, the reader on CPU 1 ---------------

def _receive_on_cpu0(h, n):
    b = h.frames(0, n)
    assert h.dma(b) == n
    for q in np.unique(b["queue"]):
        h.raise_irq(int(q), 0)
    h.run(0)
    assert h.counters[0][C.PROCESSED] >= n


def test_full_path_sleeping_reader_gets_one_ipi_and_reads_everything():
    h = host(sources=[TO_CPU1])
    cpu1 = h.cpus[1]
    _receive_on_cpu0(h, 40)
    assert len(h.sockets[P9001].ring) == 40
    assert list(h.inbox[1]) == [("res", 0)]
    h.run(1)
    assert h.counters[1][C.RES] == 1
    assert h.counters[1][C.USER_DATAGRAMS] == 40
    assert len(h.sockets[P9001].ring) == 0
    assert not cpu1.tasks.user.runnable and on_rq(h, 1) == 0       # read all, back to sleep
    # asleep again: the next burst wakes it again
    _receive_on_cpu0(h, 10)
    assert list(h.inbox[1]) == [("res", 0)]
    h.run(1)
    assert h.counters[1][C.RES] == 2 and h.counters[1][C.USER_DATAGRAMS] == 50


def test_full_path_runnable_reader_gets_no_ipi_and_still_reads():
    h = host(sources=[TO_CPU1])
    cpu1 = h.cpus[1]
    cpu1.tasks.wake_user()
    _receive_on_cpu0(h, 40)
    assert not h.inbox[1]
    h.run(1)
    assert h.counters[1][C.RES] == 0
    assert h.counters[1][C.USER_DATAGRAMS] == 40
    assert not cpu1.tasks.user.runnable and on_rq(h, 1) == 0
