"""One emulated CPU's kernel: hardirq entry, NAPI scheduling, the receive path, the tasks.

Pure logic over plain data: rings, backlogs and sockets are objects over buffers (shared
memory in a run, private memory in tests), time is a CpuTime, and the few things that cross
a process boundary are hooks the shell sets: ``irq_point`` (take the hard interrupts that
are waiting), ``send_ipi`` (an RPS kick to another CPU), ``wake_remote`` (wake the user task
of another CPU) and ``unmask_irq`` (the driver's write to the NIC's interrupt mask).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from emu.clock import HARDIRQ, KSOFTIRQD, SOFTIRQ, SYSTEM, USER, CpuTime, jiffies
from emu.config import Config
from emu.counters import IRQ0, MAX_SOURCES, NET_RX_SOFTIRQ, C
from emu.ring import CONS, PROD, Ring
from emu.skb import SKB

from . import backlog as bl
from .driver import rx_clean, rx_clean_rps, rx_clean_udp
from .flow_limit import FlowLimit
from .gro import gro_receive_batch
from .ip import DeliverResult, _ip_in_stats, ip_rcv_deliver, parse, queue_entries
from .napi import (NAPI_STATE_MISSED, NAPI_STATE_PREFER_BUSY_POLL, NAPI_STATE_SCHED,
                   NAPI_STATE_SCHED_THREADED, Napi, napi_schedule_prep)
from .netrx import net_rx_action
from .rps import RxQueueRps, get_rps_cpu, save_qtail, skb_get_hash
from .sched import Scheduler, Task
from .sock import SOCK_ENTRY, SocketTable, UdpSocket
from .softirq import Softirq
from .softnet import SoftnetData

RX_IRQ_MASKED, RX_NAPI_STATE = 0, 1      # RX ring header user words

# counter slots as plain ints (an IntEnum index costs a conversion per use)
_PROCESSED = int(C.PROCESSED)
_NAPI_POLLS = int(C.NAPI_POLLS)
_IP_IN_RECEIVES = int(C.IP_IN_RECEIVES)
_IP_IN_DELIVERS = int(C.IP_IN_DELIVERS)
_GRO_RECEIVED = int(C.GRO_RECEIVED)
_GRO_NORMAL = int(C.GRO_NORMAL)
_USER_ON_RQ = int(C.USER_ON_RQ)

# Hard interrupts wait for a safe point; the user task reaches one at least this often in
# emulated time (8 datagrams at the default recvmsg + app costs). A read is one batch of
# numpy work, so with zero costs the whole recv_batch is one read.
SAFE_POINT_NS = 12_000


def _noop(*_args) -> None:
    return None


def warm() -> None:
    """Run every compiled kernel of the receive path once on a tiny input, with the argument
    types a run uses, so a CPU process pays numba's first-call cost before traffic starts."""
    from . import driver, gro, ip, sock
    driver.warm(SKB.itemsize, SOCK_ENTRY.itemsize)
    raw = np.zeros((1, ip._SKB_SIZE), dtype=np.uint8)
    ip._udp4_ok(raw)
    from emu.counters import cpu_block as _cb
    ip._ip_in_stats(raw, _cb())
    gro._any_tcp(raw)
    ip._sock_entries(raw, ip._NO_SIDX, np.full(65536, -1, dtype=np.int16), 1,
                     np.zeros((1, sock.SOCK_ENTRY.itemsize), dtype=np.uint8))
    sock.warm()
    from emu.counters import cpu_block
    ip._count_src_segs(np.zeros((1, sock.SOCK_ENTRY.itemsize), dtype=np.uint8),
                       np.zeros((1, 2), dtype=np.int64), cpu_block()[:MAX_SOURCES])


class Cpu:
    def __init__(self, cpu_id: int, cfg: Config, time: CpuTime, counters: np.ndarray,
                 rx_rings: list[Ring], backlogs: list[bl.Backlog], socks: SocketTable,
                 sock_table: np.ndarray | None = None,
                 flow_tables: list[np.ndarray | None] | None = None,
                 hash_seed: int = 0, cpu_counters: list[np.ndarray] | None = None):
        self.id = cpu_id
        self.cfg = cfg
        self.ncpus = cfg.ncpus
        self.hz = cfg["run.hz"]
        self.time = time
        self.counters = counters
        self.ctx = SYSTEM
        self.in_hardirq = False
        core = cfg["net.core"]
        self.netdev_budget = core["netdev_budget"]
        self.netdev_budget_usecs = core["netdev_budget_usecs"]
        self.netdev_max_backlog = core["netdev_max_backlog"]
        self.dev_rx_weight = core["dev_weight"] * core["dev_weight_rx_bias"]
        cost = cfg["cost"]
        self.cost_hardirq = cost["hardirq"]
        self.cost_softirq_entry = cost["softirq_entry"]
        self.cost_napi_poll = cost["napi_poll"]
        self.cost_rx_frame = cost["rx_frame"]
        self.cost_gro = cost["gro"]
        self.cost_netif_receive = cost["netif_receive"]
        self.cost_udp_rcv = cost["udp_rcv"]
        self.cost_tcp_rcv = cost["tcp_rcv"]
        self.cost_rps_enqueue = cost["rps_enqueue"]
        self.cost_ipi_send = cost["ipi_send"]
        self.cost_ipi = cost["ipi"]
        self.cost_recvmsg = cost["recvmsg"]
        self.cost_app = cost["app"]
        self.cost_context_switch = cost["context_switch"]
        self.gro = cfg["sys.class.net.eth0.gro"]
        self.hash_seed = hash_seed

        self.sd = SoftnetData(cpu_id, counters)
        self.softirq = Softirq(self, self.hz)
        self.softirq.handlers[NET_RX_SOFTIRQ] = lambda: net_rx_action(self)

        self.rx_rings = rx_rings
        weight = cfg["sys.class.net.eth0.napi_weight"]
        self.napis = [Napi(f"eth0-rx-{q}", weight, self._driver_poll, queue=q,
                           state_store=r.hdr, state_index=16 + RX_NAPI_STATE)
                      for q, r in enumerate(rx_rings)]
        self.backlogs = backlogs
        mine = backlogs[cpu_id]
        self.sd.backlog = Napi(f"backlog/{cpu_id}", self.dev_rx_weight,
                               lambda n, quota: bl.process_backlog(self, n, quota),
                               state_store=mine.ring.hdr, state_index=16 + bl.BL_STATE)
        self.process_queue = bl.ProcessQueue()

        fl_mask = int(core["flow_limit_cpu_bitmap"].replace(",", ""), 16)
        self.flow_limit = FlowLimit(core["flow_limit_table_len"]) if fl_mask >> cpu_id & 1 else None
        self.sock_table = sock_table
        flow_tables = flow_tables or [None] * len(rx_rings)
        self.rps_queues = []
        for q in range(len(rx_rings)):
            mask = cfg.rps_mask(q)
            cpus = [c for c in range(self.ncpus) if mask >> c & 1]
            self.rps_queues.append(RxQueueRps(cpus, flow_tables[q]))
        self.rps_active = [r.active for r in self.rps_queues]
        # Queues whose polls may take the compiled UDP path (cpus.driver): no RPS to steer
        # by, and only wildcard sockets, so the destination port alone picks the socket.
        self.udp_fast = [not a and len(socks) > 0 and not socks.has_connected_sockets
                         for a in self.rps_active]
        # Queues whose steering is the RPS map alone (no RFS): cpus.driver.rx_clean_rps.
        rfs = sock_table is not None and len(sock_table) > 0
        self.rps_map_only = [r.map is not None and not (rfs and r.flow_table is not None)
                             for r in self.rps_queues]
        self._grow_buffers(cfg["sys.class.net.eth0.napi_weight"])
        self.heads = np.zeros(self.ncpus, dtype=np.uint32)

        self.socks = socks
        self.my_sockets: list[UdpSocket] = [s for s in socks.sockets if s.reader_cpu == cpu_id]
        self.recv_batch = cfg["sched.recv_batch"]
        sched = cfg["sched"]
        self.ksoftirqd = Task(f"ksoftirqd/{cpu_id}", sched["ksoftirqd_nice"])
        self.user = Task("user", sched["user_nice"])
        self.sched = Scheduler([self.ksoftirqd, self.user], sched["sched_latency_ns"],
                               sched["min_granularity_ns"], sched["wakeup_granularity_ns"])
        self.prev_task: Task | None = None
        # Every CPU's counter block, to read a remote user task's USER_ON_RQ (None: unknown,
        # so every remote wakeup sends its IPI).
        self.cpu_counters = cpu_counters
        counters[C.USER_ON_RQ] = int(self.user.runnable)
        self.last_jiffy = jiffies(time.now(), self.hz)

        # hooks the process shell replaces
        self.irq_point: Callable[[], None] = _noop
        self.send_ipi: Callable[[int], None] = _noop
        self.wake_remote: Callable[[int], None] = _noop
        self.unmask_irq: Callable[[int], None] = self._unmask_irq
        self.on_read: Callable[[np.ndarray], None] | None = None   # sees what the app read

    # -- time ------------------------------------------------------------------------------
    def charge(self, ns: int) -> None:
        self.time.charge(self.ctx, ns)

    def need_resched(self) -> bool:
        return self.sched.need_resched

    # -- hard interrupts -------------------------------------------------------------------
    def hardirq(self, queue: int) -> None:
        """An RX vector fired here: handle_edge_irq -> driver ISR -> napi_schedule_irqoff."""
        self._irq_enter()
        self.counters[IRQ0 + queue] += 1
        self.charge(self.cost_hardirq)
        n = self.napis[queue]
        if napi_schedule_prep(n):
            self.napi_schedule(n)
        self._irq_exit()

    def ipi_rps(self) -> None:
        """The RPS IPI (rps_trigger_softirq): schedule the backlog NAPI, count received_rps."""
        self._irq_enter()
        self.counters[C.CAL] += 1
        self.charge(self.cost_ipi)
        self.napi_schedule(self.sd.backlog)
        self.counters[C.RECEIVED_RPS] += 1
        self._irq_exit()

    def ipi_resched(self) -> None:
        """A reschedule IPI: a remote CPU woke this CPU's user task (ttwu_queue)."""
        self._irq_enter()
        self.counters[C.RES] += 1
        self.charge(self.cost_hardirq)
        self.wake_user()
        self._irq_exit()

    def _irq_enter(self) -> None:
        self._saved_ctx = self.ctx
        self.ctx = HARDIRQ
        self.in_hardirq = True

    def _irq_exit(self) -> None:
        self.in_hardirq = False
        self.ctx = self._saved_ctx
        if not self.softirq.serving and self.softirq.pending:
            self.softirq.handle_softirqs(False)    # invoke_softirq on the irq stack

    def wakeup_softirqd(self) -> None:
        if self.sched.wake(self.ksoftirqd):
            self.counters[C.KSOFTIRQD_WAKEUPS] += 1

    # -- NAPI ------------------------------------------------------------------------------
    def napi_schedule(self, n: Napi) -> None:
        """____napi_schedule: append to this CPU's poll list; raise NET_RX unless inside it."""
        n.list_owner = self.id
        self.sd.poll_list.append(n)
        if not self.sd.in_net_rx_action:
            self.softirq.raise_softirq(NET_RX_SOFTIRQ)

    def napi_complete_done(self, n: Napi, work_done: int) -> bool:
        if n in self.sd.poll_list:
            self.sd.poll_list.remove(n)
        n.list_owner = -1
        val = n.state
        new = val & ~(NAPI_STATE_MISSED | NAPI_STATE_SCHED | NAPI_STATE_SCHED_THREADED
                      | NAPI_STATE_PREFER_BUSY_POLL)
        if val & NAPI_STATE_MISSED:
            new |= NAPI_STATE_SCHED
        n.state = new
        if val & NAPI_STATE_MISSED:
            self.napi_schedule(n)
            return False
        return True

    def napi_complete(self, n: Napi) -> bool:
        return self.napi_complete_done(n, 0)

    def _unmask_irq(self, queue: int) -> None:
        self.rx_rings[queue].set_user(RX_IRQ_MASKED, 0)

    def _grow_buffers(self, n: int) -> None:
        """The per-poll scratch the compiled driver path fills: one poll's skbs and entries."""
        n = max(1, int(n))
        self._skb_buf = np.empty(n, dtype=SKB)
        self._skb_raw = self._skb_buf.view(np.uint8).reshape(n, SKB.itemsize)
        self._ent_buf = np.empty(n, dtype=SOCK_ENTRY)
        self._ent_raw = self._ent_buf.view(np.uint8).reshape(n, SOCK_ENTRY.itemsize)
        self._grp_buf = np.empty(n, dtype=SKB)
        self._grp_raw = self._grp_buf.view(np.uint8).reshape(n, SKB.itemsize)

    def _driver_poll(self, n: Napi, budget: int) -> int:
        """The emulated driver's NAPI poll: clean up to budget descriptors of one RX ring."""
        q = n.queue
        ring = self.rx_rings[q]
        hdr = ring.hdr
        cons = int(hdr[CONS])
        work = min(budget, int(hdr[PROD]) - cons)
        if work > 0:
            counters = self.counters
            if work > self._skb_buf.shape[0]:
                self._grow_buffers(work)
            steered = False
            if self.udp_fast[q]:
                ok, counts, small = rx_clean_udp(ring.raw, cons, work, self._skb_raw,
                                                 self.socks.port_map, len(self.socks),
                                                 self._ent_raw)
            elif self.rps_map_only[q]:
                steered, counts = rx_clean_rps(ring.raw, cons, work, self._skb_raw,
                                               self.rps_queues[q].map, self.ncpus, self.gro,
                                               self._grp_raw)
                ok = False
            else:
                rx_clean(ring.raw, cons, work, self._skb_raw)
                ok = False
            hdr[CONS] = cons + work          # release the slots after reading them
            self.charge(work * self.cost_rx_frame)
            if self.gro:
                self.charge(work * self.cost_gro)
            if steered or ok:
                if self.gro:                         # no TCP: every frame is GRO_NORMAL
                    counters[_GRO_RECEIVED] += work
                    counters[_GRO_NORMAL] += work
                counters[_NAPI_POLLS] += 1
                if steered:
                    self._steer_grouped(counts)
                else:
                    self._deliver_udp(work, counts, small)
            else:
                skbs = self._skb_buf[:work].copy()
                if self.gro:
                    skbs = gro_receive_batch(skbs, counters, q)
                counters[_NAPI_POLLS] += 1
                self.netif_receive_skb_list(skbs, q)
        elif work < 0:
            raise AssertionError(f"RX ring {q}: producer index behind consumer index")
        if work < budget and self.napi_complete_done(n, work):
            self.unmask_irq(q)
        return work

    def _steer_grouped(self, counts: np.ndarray) -> None:
        """netif_receive_skb_list for a batch cpus.driver.rx_clean_rps already steered:
        enqueue each target's skbs (CPUs in ascending order), then deliver the unsteered."""
        grouped = self._grp_buf
        counts = counts.tolist()
        at = counts[0]
        for c in range(self.ncpus):
            k = counts[c + 1]
            if k:
                bl.enqueue_to_backlog(self, grouped[at:at + k], self.backlogs[c])
                at += k
        if counts[0]:
            self.deliver(grouped[:counts[0]])

    def _deliver_udp(self, n: int, counts: np.ndarray, small: bool) -> None:
        """deliver() for a batch that passed every check of the UDP fast path, its socket
        entries already built (cpus.driver.rx_clean_udp)."""
        counters = self.counters
        counters[_PROCESSED] += n
        res = DeliverResult()
        res.ip = res.udp = n
        counters[_IP_IN_RECEIVES] += n
        _ip_in_stats(self._skb_raw[:n], counters)
        queue_entries(self._ent_buf[:n], counts, small, counters, self.socks, res)
        counters[_IP_IN_DELIVERS] += n
        self.charge(n * (self.cost_netif_receive + self.cost_udp_rcv))
        if res.woken:
            self._wake_readers(res.woken)

    # -- the stack ---------------------------------------------------------------------------
    def skb_get_hash(self, skbs: np.ndarray) -> np.ndarray:
        return skb_get_hash(skbs, self.hash_seed)

    def netif_receive_skb_list(self, skbs: np.ndarray, queue: int) -> None:
        """RPS steering (get_rps_cpu) or synchronous delivery on this CPU."""
        if not self.rps_active[queue]:
            self.deliver(skbs)
            return
        rxq = self.rps_queues[queue]
        for c, b in enumerate(self.backlogs):
            self.heads[c] = b.head
        cpus, slots = get_rps_cpu(skbs, rxq, self.sock_table, self.heads, self.ncpus,
                                  self.hash_seed)
        local = cpus < 0
        ft = rxq.flow_table
        saved = []
        # As netif_receive_skb_list_internal: steered skbs are enqueued first, the rest are
        # delivered here afterwards.
        for target in np.unique(cpus[~local]):
            idx = np.nonzero(cpus == target)[0]
            accepted, qtails = bl.enqueue_to_backlog(self, skbs[idx], self.backlogs[int(target)])
            if ft is not None and len(qtails):
                saved.append((idx[accepted], qtails, int(target)))
        if saved:
            # Store each skb's tail in skb order, and only into a slot that still points at
            # the CPU the skb went to, so last_qtail always counts in that CPU's queue.
            idx = np.concatenate([s[0] for s in saved])
            tails = np.concatenate([s[1] for s in saved])
            tgt = np.concatenate([np.full(len(s[0]), s[2]) for s in saved])
            order = np.argsort(idx, kind="stable")
            sl, tails, tgt = slots[idx][order], tails[order], tgt[order]
            ok = sl >= 0
            ok[ok] = ft["cpu"][sl[ok]] == tgt[ok]
            save_qtail(ft, sl[ok], tails[ok])
        if local.any():
            self.deliver(skbs[local])

    def deliver(self, skbs: np.ndarray) -> None:
        """__netif_receive_skb: count processed, then IPv4 / UDP / TCP delivery."""
        n = len(skbs)
        if not n:
            return
        self.counters[C.PROCESSED] += n
        parsed = parse(skbs)
        res = ip_rcv_deliver(skbs, parsed, self.counters, self.socks)
        self.charge(n * self.cost_netif_receive + res.udp * self.cost_udp_rcv
                    + res.tcp * self.cost_tcp_rcv)
        if res.woken:
            self._wake_readers(res.woken)

    def _wake_readers(self, woken: list[tuple[int, int]]) -> None:
        for _sock, reader in woken:
            if reader == self.id:
                self.wake_user()
            elif self.cpu_counters is None:
                self.wake_remote(reader)
            elif not self.cpu_counters[reader][_USER_ON_RQ]:
                # try_to_wake_up: a task already on its runqueue, or already being woken,
                # needs no IPI; the waker marks it (p->__state leaves TASK_INTERRUPTIBLE) so
                # later wakers send none. The producer published the skb before it read
                # USER_ON_RQ (its socket unlock is the barrier), and the reader re-checks its
                # queues after clearing it (sleep_user).
                self.cpu_counters[reader][_USER_ON_RQ] = 1
                self.wake_remote(reader)

    def net_rps_send_ipi(self) -> None:
        """net_rps_action_and_irq_enable: send the IPIs queued by enqueue_to_backlog."""
        targets = self.sd.rps_ipi_list
        if not targets:
            return
        self.sd.rps_ipi_list = []
        for t in targets:
            self.charge(self.cost_ipi_send)
            self.counters[C.IPI_SENT] += 1
            self.send_ipi(t)

    # -- tasks --------------------------------------------------------------------------------
    def schedule(self) -> bool:
        """Run the next task for one slice; False when the CPU goes idle."""
        now = self.time.now()
        j = jiffies(now, self.hz)
        if j > self.last_jiffy:
            if self.sched.current is not None:
                self.counters[C.LOC] += j - self.last_jiffy
                self.sched.tick(now)
            self.last_jiffy = j
        if self.my_sockets and not self.user.runnable and any(len(s.ring) for s in self.my_sockets):
            self.wake_user()
        task = self.sched.pick_next(now)
        if task is not self.prev_task:
            self.counters[C.CTXT] += 1
            if task is not None:
                self.ctx = SYSTEM
                self.charge(self.cost_context_switch)
            self.prev_task = task
        if task is None:
            return False
        # The task's clock excludes interrupt time (IRQ_TIME_ACCOUNTING); ksoftirqd's own
        # softirq work is its run time.
        acct = self.time.acct
        if task is self.ksoftirqd:
            t0 = int(acct[KSOFTIRQD])
            self.run_ksoftirqd()
            ran = int(acct[KSOFTIRQD]) - t0
        else:
            t0 = int(acct[USER]) + int(acct[SYSTEM])
            self.run_user()
            ran = int(acct[USER]) + int(acct[SYSTEM]) - t0
        self.sched.account(task, ran)
        return True

    def run_ksoftirqd(self) -> None:
        """run_ksoftirqd: one handle_softirqs(true) per turn, then cond_resched."""
        self.counters[C.KSOFTIRQD_RUNS] += 1
        if self.softirq.pending:
            self.softirq.handle_softirqs(True)
        if not self.softirq.pending:
            self.sched.sleep(self.ksoftirqd)

    def run_user(self) -> None:
        """The application: recvmsg on each of its sockets, a chunk at a time."""
        left = self.recv_batch
        per = self.cost_recvmsg + self.cost_app
        chunk = max(1, SAFE_POINT_NS // per) if per else left
        remaining_total = 0
        for s in self.my_sockets:
            while left > 0:
                self.ctx = SYSTEM
                entries, remaining = s.recvmsg(min(chunk, left), self.id, self.counters,
                                               self.sock_table, self.ncpus)
                k = len(entries)
                if k:
                    if self.on_read is not None:
                        self.on_read(entries)
                    self.charge(k * self.cost_recvmsg)
                    self.ctx = USER
                    self.charge(k * self.cost_app)
                    left -= k
                self.irq_point()
                if self.sched.need_resched:
                    break
                if remaining == 0:
                    break
            remaining_total += len(s.ring)
            if self.sched.need_resched:
                break
        self.ctx = SYSTEM
        if remaining_total == 0:
            self.sleep_user()

    def wake_user(self) -> None:
        self.sched.wake(self.user)
        self.counters[C.USER_ON_RQ] = 1

    def sleep_user(self) -> None:
        """Block the user task unless a datagram arrived: set the state, then re-check.

        As set_current_state() before the condition check: USER_ON_RQ is cleared first, then
        each socket's lock is taken and dropped (a full barrier, pairing with the producer's
        unlock before it reads USER_ON_RQ), then the queues are checked again, so a datagram
        queued meanwhile is seen here or its producer sees the task asleep and sends the IPI.
        """
        self.counters[C.USER_ON_RQ] = 0
        for s in self.my_sockets:
            s.lock.acquire()
            s.lock.release()
        if any(len(s.ring) for s in self.my_sockets):
            self.counters[C.USER_ON_RQ] = 1
            return
        self.sched.sleep(self.user)

    # -- the idle loop's softirq check ------------------------------------------------------
    def idle_softirq(self) -> None:
        """Pending bits raised from task context are left to ksoftirqd (already woken)."""
        if self.softirq.pending and not self.ksoftirqd.runnable:
            self.wakeup_softirqd()


assert SOFTIRQ == 1
