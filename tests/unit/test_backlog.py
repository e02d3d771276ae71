"""enqueue_to_backlog, process_backlog, the RPS IPI and flow limit, through pure Cpus."""

import numpy as np

from cpus.backlog import enqueue_to_backlog, net_rps_send_ipi
from cpus.rps import skb_get_hash
from cpus.dev import netif_receive_skb_list, process_backlog
from emu.ring import BL_STATE
from cpus.napi import NAPI_STATE_SCHED
from cpus.netrx import net_rx_action
from emu.counters import C, Drop, src_drop

from .harness import Host

UDP = {"name": "u", "proto": "udp", "rate_pps": 1000.0, "flows": 16,
       "dst_ports": [9000], "frame_len": 128}


def host(ncpus=4, sets=(), sources=None):
    return Host(ncpus=ncpus, sets=list(sets), sources=sources or [UDP])


def test_max_plus_one_boundary_and_drops_on_target():
    h = host(sets=["net.core.netdev_max_backlog=10"])
    cpu0, cpu1 = h.cpus[0], h.cpus[1]
    skbs = h.frames(0, 15)
    accepted, qtails = enqueue_to_backlog(cpu0.sd, cpu0.net, skbs, h.backlogs[1])
    assert accepted.sum() == 11                        # the queue can hold max + 1
    assert len(h.backlogs[1].ring) == 11
    assert h.backlogs[1].dropped == 4                  # softnet dropped of the TARGET
    assert cpu0.counters[C.RX_DROPPED] == 4            # core rx_dropped where it ran
    assert cpu0.counters[src_drop(Drop.BACKLOG, 0)] == 4
    assert cpu1.counters[C.DROPPED] == 0
    assert list(qtails) == list(range(1, 12))          # post-increment tails


def test_remote_kick_is_one_ipi_batched_to_end_of_net_rx_action():
    h = host()
    cpu0 = h.cpus[0]
    cpu0.sd.in_net_rx_action = True
    enqueue_to_backlog(cpu0.sd, cpu0.net, h.frames(0, 5), h.backlogs[2])
    enqueue_to_backlog(cpu0.sd, cpu0.net, h.frames(0, 5), h.backlogs[2])  # not empty: no second kick
    assert cpu0.sd.rps_ipi_list == [2]
    assert h.inbox[2] == type(h.inbox[2])()            # nothing sent yet
    assert h.backlogs[2].ring.user(BL_STATE) & NAPI_STATE_SCHED
    cpu0.sd.in_net_rx_action = False
    net_rx_action(cpu0.sd, cpu0.net)                                # the end of the run sends them
    assert list(h.inbox[2]) == [("rps", 0)]
    assert cpu0.counters[C.IPI_SENT] == 1


def test_ipi_counts_received_rps_and_processes_backlog():
    h = host()
    cpu0, cpu2 = h.cpus[0], h.cpus[2]
    enqueue_to_backlog(cpu0.sd, cpu0.net, h.frames(0, 20), h.backlogs[2])
    net_rps_send_ipi(cpu0.sd, cpu0.net)
    cpu2.sd.irq_point()
    assert cpu2.counters[C.RECEIVED_RPS] == 1
    assert cpu2.counters[C.CAL] == 1
    assert cpu2.counters[C.PROCESSED] == 20
    assert len(h.backlogs[2].ring) == 0
    assert h.backlogs[2].head == 20
    assert not h.backlogs[2].ring.user(BL_STATE) & NAPI_STATE_SCHED


def test_local_target_goes_through_local_backlog():
    h = host(sets=["sys.class.net.eth0.queues.rx-0.rps_cpus=1",
                   "sys.class.net.eth0.queues.rx-1.rps_cpus=1",
                   "sys.class.net.eth0.queues.rx-2.rps_cpus=1",
                   "sys.class.net.eth0.queues.rx-3.rps_cpus=1"])
    cpu0 = h.cpus[0]
    b = h.frames(0, 30)
    h.dma(b)
    for q in set(int(x) for x in b["queue"]):
        h.raise_irq(q, 0)
    cpu0.sd.irq_point()
    assert cpu0.counters[C.BACKLOG_ENQUEUED] == 30
    assert cpu0.counters[C.IPI_SENT] == 0              # local: no IPI
    assert cpu0.counters[C.RECEIVED_RPS] == 0
    assert cpu0.counters[C.PROCESSED] == 30
    assert cpu0.counters[C.BACKLOG_POLLS] >= 1


def test_process_backlog_quota_and_repoll():
    h = host()
    cpu1 = h.cpus[1]
    enqueue_to_backlog(h.cpus[0].sd, h.cpus[0].net, h.frames(0, 100), h.backlogs[1])
    napi = cpu1.sd.backlog
    work = process_backlog(cpu1.sd, cpu1.net, napi, 64)
    assert work == 64
    assert cpu1.sd.process_queue.count == 36              # spliced whole, delivered up to quota
    assert h.backlogs[1].head == 64
    assert napi.state & NAPI_STATE_SCHED                # still scheduled: repoll
    work = process_backlog(cpu1.sd, cpu1.net, napi, 64)
    assert work == 36
    assert not napi.state & NAPI_STATE_SCHED
    assert cpu1.counters[C.PROCESSED] == 100


def test_rps_spreads_one_queue_over_three_cpus_with_exact_conservation():
    sets = [f"sys.class.net.eth0.queues.rx-{q}.rps_cpus=e" for q in range(4)]
    sets += [f"proc.irq.{120 + q}.smp_affinity=1" for q in range(4)]
    src = dict(UDP, flows=64, dst_ports=[9000, 9001, 9002, 9003])
    h = host(sets=sets, sources=[src])
    b = h.frames(0, 400)
    assert h.dma(b) == 400
    for q in range(4):
        h.raise_irq(q, 0)
    h.run_all()
    h.run_all()
    processed = [int(c.counters[C.PROCESSED]) for c in h.cpus]
    assert processed[0] == 0
    assert all(p > 0 for p in processed[1:])
    assert sum(processed) == 400
    assert all(int(c.counters[C.RECEIVED_RPS]) > 0 for c in h.cpus[1:])
    delivered = sum(int(c.counters[C.SRC_DELIVERED_0]) for c in h.cpus)
    queued = sum(len(s.ring) for s in h.sockets)
    drops = sum(int(c.counters[src_drop(r, 0)]) for c in h.cpus for r in range(len(Drop)))
    assert delivered + queued + drops == 400


def test_flow_limit_uses_enqueuing_cpu_table():
    sets = ["net.core.netdev_max_backlog=200", "net.core.flow_limit_cpu_bitmap=1"]
    h = host(sets=sets)
    cpu0, cpu3 = h.cpus[0], h.cpus[3]
    assert cpu0.sd.flow_limit is not None and cpu3.sd.flow_limit is None
    elephant = h.frames(0, 400)
    elephant["hash"] = 0x12345678                     # one flow
    elephant["l4_hash"] = 1
    acc, _ = enqueue_to_backlog(cpu0.sd, cpu0.net, elephant, h.backlogs[1])
    # 100 go in before the queue is half full; then the elephant fills its bucket of the
    # 128-packet history: 64 more pass, the 65th and every later one is limited.
    assert acc.sum() == 164
    assert cpu0.counters[C.FLOW_LIMIT_COUNT] == 400 - 164
    assert cpu0.counters[C.BACKLOG_DROP_FLOW_LIMIT] == cpu0.counters[C.FLOW_LIMIT_COUNT]
    assert h.backlogs[1].dropped == 400 - acc.sum()   # all drops land on the target
    # The same from CPU 3, whose bit is clear: only the qlen test drops.
    h2 = host(sets=sets)
    acc3, _ = enqueue_to_backlog(h2.cpus[3].sd, h2.cpus[3].net, elephant.copy(), h2.backlogs[1])
    assert acc3.sum() == 201
    assert h2.cpus[3].counters[C.FLOW_LIMIT_COUNT] == 0


def test_flow_limit_fast_path_matches_per_packet_rule():
    sets = ["net.core.netdev_max_backlog=1000", "net.core.flow_limit_cpu_bitmap=f"]
    h = host(sets=sets)
    acc, _ = enqueue_to_backlog(h.cpus[0].sd, h.cpus[0].net, h.frames(0, 300), h.backlogs[1])
    assert acc.all()                                   # below half full: never consulted
    assert h.cpus[0].sd.flow_limit.count == 0
    assert np.all(h.backlogs[1].ring.pop(300)["seq"] == np.arange(300))


def test_rfs_last_qtail_counts_in_the_slots_own_cpu():
    sets = ["net.core.rps_sock_flow_entries=64"]
    sets += [f"sys.class.net.eth0.queues.rx-{q}.rps_flow_cnt=1" for q in range(4)]
    src = dict(UDP, flows=2)
    h = host(sets=sets, sources=[src])
    cpu0 = h.cpus[0]
    skbs = h.frames(0, 40)
    q = 0
    skbs["queue"] = q
    hashes = skb_get_hash(skbs, cpu0.net.hash_seed)
    table = h.sock_table
    mask = 3                                       # rps_cpu_mask for 4 CPUs
    last = int(hashes[-1])
    other = next(int(x) for x in hashes if int(x) != last)
    # the last skb's flow is read on CPU 1, the other on CPU 2: the slot ends on CPU 1,
    # while CPU 2 (enqueued after CPU 1 when grouped by target) has the larger tails
    for hsh, want in ((last, 1), (other, 2)):
        table[hsh & (len(table) - 1)] = (hsh & ~mask) | want
    enqueue_to_backlog(h.cpus[3].sd, h.cpus[3].net, h.frames(0, 200), h.backlogs[2])   # CPU 2's tails start at 200
    before = {c: h.backlogs[c].tail for c in (1, 2)}
    netif_receive_skb_list(cpu0.sd, cpu0.net, skbs, q)
    ft = h.flow_tables[q]
    cur = int(ft["cpu"][0])
    assert cur in (1, 2)
    # last_qtail is a tail this batch produced on the CPU the slot names
    assert before[cur] < int(ft["last_qtail"][0]) <= h.backlogs[cur].tail
    assert sum(len(h.backlogs[c].ring) for c in (1, 2)) == 240
