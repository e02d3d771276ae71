"""Conservative synchronization of emulated time between the agents of one host.

Each agent (every CPU, and the NIC) owns its emulated time and publishes it here, in shared
memory. A CPU may act at time t (take an interrupt, read or write state another agent
touches) only once no other agent can still produce an effect on it that takes effect at t
or before. That is Chandy-Misra-Bryant conservative synchronization with lookahead, as
parallel simulators use it (SimBricks synchronizes each pair of simulators over the latency
of their link): every effect that crosses agents has a modelled minimum latency (the
[cost] lat_* keys), the smallest between CPUs being the lookahead L, so a CPU's horizon is
the earliest time another agent's effect can still reach it.

What each agent publishes, one word (PUB) each, written by that agent only:
- busy at time t: ``t << 1``. Whatever it does from now on happens at t or later, so its
  effects on others take effect at t + L or later.
- idle: ``(next << 1) | 1``, next being its own next event (a pending interrupt's time) or
  INF. It acts again at next, or when another agent's effect reaches it, so its bound is
  relayed from the others' (an idle agent never holds anybody back by itself).
And a second word, SEND, the same for what can reach another CPU from NET_RX (an IPI, an
enqueue on another CPU's socket or backlog): a CPU with no softirq pending or running
(quiet) sends nothing before its next interrupt or IPI, and then not before react ns of
handler and softirq entry, so it publishes SEND as if idle until max(now, its next event).
The message horizon and the horizons of data touched only from NET_RX read SEND (+ react);
the data horizon reads PUB.

Effects in flight are bounds too, so nothing is lost between the words:
- a message (IRQ, IPI) from s to r: SENT[s, r] counts them, TAKEN[s, r] counts those r has
  taken into its event heap, FIRST[s, r] is a lower bound of the earliest one's time (the
  time of the message that found the channel empty, lowered by any earlier one sent after).
- an RX queue's interrupt: QBOUND[q] is the earliest time it can take effect on the queue's
  CPU. The driver writes u + lat_mmio + lat_msi when it unmasks the queue at u; the NIC
  raises it as it learns more and writes the exact time when it sends the interrupt; the
  CPU writes INF when it has taken the interrupt into its heap.
A bound moves from one word to another (from a sender's PUB to a channel, from a channel to
the receiver's heap and PUB) by writing the new word first, then adding 1 to VERSION, then
releasing the old one; horizon() reads every word between two equal reads of VERSION (a
seqlock), so it never misses a bound in transit.

horizon() computes, from these words alone, the earliest time any effect can still reach a
CPU. With one L between every pair of CPUs the fixed point needs no graph search: an idle
CPU's bound is its own next event, or the earliest other CPU's bound plus L. The agent it is
bounded by (``by``) is the one whose progress lets it go: a CPU at its horizon registers
itself as waiting for that agent and blocks (processes outnumber cores: no spinning); the
agent wakes it when its published time passes the threshold.

Sync is one agent's end of all this: its cached horizon, its event heap (the messages it
has taken, by time), sending, and waiting. How it blocks, wakes another agent and moves
messages is its Port's business (a futex, mailboxes and ZeroMQ between processes,
emu.syncwait; a baton between threads in one process, emu.inproc), so the same agents run
either way.
"""

from __future__ import annotations

import heapq

import numpy as np

from . import atomic
from .jit import kernel

from .syncblock import (AGENT_WORDS, FINISHED, FRAMES_Q, GLOBAL_WORDS, INBOX, INF,  # noqa: F401
                        IPI_RES, IPI_RPS, IRQ, NEED, PACE_T0, PACE_TDF_MILLI, PUB, RUNNING,
                        SEND, STATE, STOP_AT, THRESH, THRESH2, VERSION, VIA, WAIT_NS, WAIT_ON,
                        WAIT_ON2, WAITS, WKIND, SyncBlock, busy, idle, layout_words)

WAIT_SLICE_NS = 50_000_000       # a blocked agent looks at its control channel this often
# what one look of a port's sync_until found: the horizon passed; a message to this agent
# is on its way (take it); its INBOX moved (drain); it waited (look again)
PASSED, MINE, INBOX_MOVED, WOKE = 0, 1, 2, 3
DATA = -1       # l_final of the data horizon: shared data is touched in (time, CPU) order
OWNED = -2      # ... of the owner's horizon: data that other CPUs touch only from NET_RX


class Stopped(Exception):
    """The run was told to stop at once, while this agent was waiting."""


@kernel
def nic_bound(qbound, qtarget, cpu):
    """The earliest time an RX interrupt can still take effect on cpu."""
    b = INF
    for q in range(qtarget.shape[0]):
        if qtarget[q] == cpu:
            v = np.int64(qbound[q])
            if v < b:
                b = v
    return b


@kernel
def pending_to(sent, taken, first, r):
    """The earliest time a message on its way to r can take effect (INF: none)."""
    b = INF
    for s in range(sent.shape[0]):
        if sent[s, r] > taken[s, r]:
            v = np.int64(first[s, r])
            if v < b:
                b = v
    return b


@kernel
def inbox_count(sent, taken, r):
    """Messages counted as sent to agent r and not taken yet."""
    n = 0
    for s in range(sent.shape[0]):
        n += np.int64(sent[s, r]) - np.int64(taken[s, r])
    return n


@kernel
def _horizon_once(agents, qbound, qtarget, sent, taken, first, ncpus, me, l_final, l_relay,
                  word, react, exact):
    nic = ncpus
    tie = l_final < 0                          # DATA: no latency, ties broken by CPU number
    if tie:
        l_final = 0
    src = np.empty(ncpus, dtype=np.int64)      # the earliest time CPU j can act
    eff = np.empty(ncpus, dtype=np.int64)      # ... can have an effect (src + react if quiet)
    root = np.empty(ncpus, dtype=np.int64)     # whose progress moves it (j, or the NIC)
    via = np.full(ncpus, -1, dtype=np.int64)   # the NIC's bound: for which CPU's queues
    is_idle = np.zeros(ncpus, dtype=np.bool_)
    m1 = INF
    m2 = INF
    a1 = -1
    a2 = -1
    for j in range(ncpus):
        if j == me:
            continue
        root[j] = j
        if agents[j, STATE] == FINISHED:
            # It acts no more: neither its interrupts nor messages sent to it after it
            # finished (by a CPU whose last work ran past STOP_AT) can move anybody.
            src[j] = INF
            eff[j] = INF
            continue
        ex = (exact >> j) & 1 == 1             # this CPU's every act counts, quiet or not
        # PUB before SEND (the publisher stores SEND, then PUB): a PUB read here is never
        # newer than the SEND read after it, so the floor below never pairs an old quiet
        # SEND with a newer, later time
        u = np.int64(atomic.load(agents[j], PUB))
        v = u if ex or word == PUB else np.int64(atomic.load(agents[j], word))
        t = v >> 1
        if (v & 1) == 1:
            is_idle[j] = True
            b = nic_bound(qbound, qtarget, j)
            if b < t:
                t = b
                root[j] = nic
                via[j] = j
            b = pending_to(sent, taken, first, j)
            if b <= t:
                t = b
                root[j] = j
                via[j] = -1
            if word == SEND and not ex:
                # quiet but busy (PUB busy at u): it takes whatever comes at u or later
                if (u & 1) == 0 and (u >> 1) > t:
                    t = u >> 1
                    root[j] = j
                    via[j] = -1
        src[j] = t
        if is_idle[j] and not ex:
            t += react
        eff[j] = t
        if t < m1:
            m2 = m1
            a2 = a1
            m1 = t
            a1 = j
        elif t < m2:
            m2 = t
            a2 = j
    # effects aimed at me directly: my queues' interrupts, messages on their way to me
    h = nic_bound(qbound, qtarget, me)
    by = nic
    base = h
    vv = me
    p = pending_to(sent, taken, first, me)
    if p <= h:
        h = p
        by = me
        base = p
        vv = -1
    dj = np.full(ncpus, INF + 1, dtype=np.int64)   # each CPU's bound on me, and whose
    kj = np.zeros(ncpus, dtype=np.int64)          # progress moves it
    for j in range(ncpus):
        if j == me:
            continue
        d = eff[j]
        k = j
        if is_idle[j]:
            # woken by the earliest other CPU (not me: my own sends lower my cached horizon),
            # then as long as any interrupt takes before it can act
            relay = m1
            rr = a1
            if j == a1:
                relay = m2
                rr = a2
            rj = 0 if (exact >> j) & 1 == 1 else react
            if rr >= 0 and relay + l_relay + rj < d:
                d = relay + l_relay + rj
                k = rr
        d = d + l_final
        if tie and j > me:
            d += 1                             # at the same time, the lower CPU goes first
        dj[j] = d
        kj[j] = k
        if d < h:
            h = d
            by = root[k]
            base = src[k]
            vv = via[k]
    # The next CPU whose own progress is needed too (a different root): a waiter registers
    # on both, so that the first one's progress alone does not wake it only to sleep again.
    h2 = INF + 1
    by2 = -1
    base2 = 0
    for j in range(ncpus):
        if j == me:
            continue
        k = kj[j]
        r = root[k]
        if r != by and r < nic and dj[j] < h2:
            h2 = dj[j]
            by2 = r
            base2 = src[k]
    if h > INF:
        h = INF
    return h, by, base, vv, h2, by2, base2


@kernel
def horizon(glob, agents, qbound, qtarget, sent, taken, first, ncpus, me, l_final, l_relay,
            word, react, exact):
    """(h, by, base, via): no effect of another agent can reach CPU me before h, an effect
    of a CPU taking l_final after that CPU acts (lat_ipi for an IPI; DATA for shared data:
    no latency, and at equal times the lower CPU first), an idle CPU being woken l_relay
    after another acts (by an IPI). The bound
    comes from agent by, whose progress moves it: a CPU (its published time, or its next
    event), the NIC (ncpus: the interrupt bound of CPU via's queues), or me (a message
    already on its way to me); base is that agent's own bound. All -1 if the words kept
    changing while it read them (rare; the caller tries again)."""
    for _ in range(1000):
        v1 = atomic.load(glob, VERSION)
        atomic.fence()
        h, by, base, via, h2, by2, base2 = _horizon_once(agents, qbound, qtarget, sent, taken,
                                                         first, ncpus, me, l_final, l_relay,
                                                         word, react, exact)
        atomic.fence()
        if atomic.load(glob, VERSION) == v1:
            return h, by, base, via, h2, by2, base2
    m1 = np.int64(-1)
    return m1, m1, m1, m1, m1, m1, m1


@kernel
def block_views(flat, ncpus, nqueues):
    """(glob, agents, qbound, sent, taken, first, held): SyncBlock's views, in compiled code,
    from the block's words (a kernel that takes the one array instead of seven spends a
    third of the time getting its arguments from Python)."""
    nagents = ncpus + 1
    a = GLOBAL_WORDS + nagents * AGENT_WORDS
    m = nagents * nagents
    q = a + nqueues
    return (flat[:GLOBAL_WORDS], flat[GLOBAL_WORDS:a].reshape((nagents, AGENT_WORDS)),
            flat[a:q], flat[q:q + m].reshape((nagents, nagents)),
            flat[q + m:q + 2 * m].reshape((nagents, nagents)),
            flat[q + 2 * m:q + 3 * m].reshape((nagents, nagents)),
            flat[q + 3 * m:q + 4 * m].reshape((nagents, nagents)))


@kernel
def horizon_of(flat, qtarget, ncpus, nqueues, me, l_final, l_relay, word, react, exact):
    """horizon() over the block's words (block_views)."""
    glob, agents, qbound, sent, taken, first, _held = block_views(flat, ncpus, nqueues)
    return horizon(glob, agents, qbound, qtarget, sent, taken, first, ncpus, me, l_final,
                   l_relay, word, react, exact)


@kernel
def publish(agents, me, value, send, react):
    """Store this agent's PUB and SEND, then (after a full barrier: a waiter registers, then
    reads them) return the mask of agents waiting for it whose threshold the new time passes
    (the SEND time for a waiter on the message horizon, else the PUB time). Busy or idle
    alike: this agent's bound is at most the time it publishes (idle: its next event), so
    below the threshold the waiter could not go on anyway; and a waiter whose bound came
    from this agent's relay is registered on the relay's root instead. A waiter on SEND
    counts react on a quiet word as the horizon does (a threshold set while this agent was
    not quiet is passed once it is, by react)."""
    agents[me, SEND] = np.uint64(send)
    atomic.store(agents[me], PUB, np.uint64(value))
    t = np.int64(value) >> 1
    ts = np.int64(send) >> 1
    if (np.int64(send) & 1) == 1:
        ts += react
    mine = np.uint64(me + 1)
    mask = 0
    for w in range(agents.shape[0]):
        on1 = agents[w, WAIT_ON] == mine
        on2 = agents[w, WAIT_ON2] == mine
        if not (on1 or on2):
            continue
        kind = agents[w, WKIND]
        if on1:
            ok = (ts if kind else t) >= np.int64(agents[w, THRESH])
            other = np.int64(agents[w, WAIT_ON2]) - 1
            othr = np.int64(agents[w, THRESH2])
        else:
            ok = (ts if kind else t) >= np.int64(agents[w, THRESH2])
            other = np.int64(agents[w, WAIT_ON]) - 1
            othr = np.int64(agents[w, THRESH])
        if ok and other >= 0:
            # the waiter's other holder too (its word's time is at least its bound: this
            # never keeps asleep a waiter that could go on)
            ow = np.int64(agents[other, SEND if kind else PUB])
            ov = ow >> 1
            if kind and (ow & 1) == 1:
                ov += react
            ok = ov >= othr
        if ok:
            mask |= 1 << w
    return mask


@kernel
def waiting_for(agents, me):
    """Mask of the agents registered as waiting for agent me (after a full barrier)."""
    atomic.fence()
    mask = 0
    for w in range(agents.shape[0]):
        if agents[w, WAIT_ON] == np.uint64(me + 1) or agents[w, WAIT_ON2] == np.uint64(me + 1):
            mask |= 1 << w
    return mask


@kernel
def register_wait(agents, me, by, thresh, need, frames_q, via, kind, by2, thresh2):
    """Say whom this agent waits for and until when, then a full barrier (its next read of
    the others' words comes after, so a publisher either sees it waiting or it sees the
    publisher's new time)."""
    a = agents[me]
    a[THRESH] = np.uint64(thresh)
    a[NEED] = np.uint64(need)
    a[FRAMES_Q] = np.uint64(frames_q)
    a[VIA] = np.uint64(via + 1)
    a[WKIND] = np.uint64(kind)
    a[THRESH2] = np.uint64(max(thresh2, 0))
    a[WAIT_ON2] = np.uint64(by2 + 1)
    atomic.store(a, WAIT_ON, np.uint64(by + 1))


@kernel
def wait_plan(data, readers, ncpus, me, need, h, by, base, h2, by2, base2):
    """What a CPU whose horizon (h, from agent by, whose own bound is base; h2, by2, base2:
    the next CPU whose progress is needed too) does not pass need registers: (thresh,
    kind, second, thresh2). The threshold is how far by's word must move for h to pass
    need; kind 1 if it is on by's SEND word (every horizon but the data horizon, data:
    True, reads SEND, except for the CPUs in readers, whose PUB counts), 0 on PUB. The
    second holder (-1: none) counts only when the first is another CPU, the second is not
    this one and holds it back at need too, and its threshold is on the same word."""
    kind = 0 if data or (readers >> by) & 1 == 1 else 1
    second = -1
    thresh2 = 0
    if by2 >= 0 and 0 <= by < ncpus and by != me and by2 != me and h2 <= need:
        kind2 = 0 if data or (readers >> by2) & 1 == 1 else 1
        if kind2 == kind:
            second = by2
            thresh2 = base2 + (need + 1 - h2)
    return base + (need + 1 - h), kind, second, thresh2


@kernel
def end_wait(agents, held, me, by, waited):
    """A wait ends: if it slept (waited >= 0 real ns), count it, and for whom (HELD[me, by];
    [me, me] is waiting for work, not held); then say it no longer waits."""
    if waited >= 0:
        agents[me, WAIT_NS] += np.uint64(waited)
        agents[me, WAITS] += np.uint64(1)
        held[me, by] += np.uint64(waited)
    agents[me, WAIT_ON] = np.uint64(0)
    agents[me, WAIT_ON2] = np.uint64(0)


@kernel
def full_fence():
    """A full barrier, for Python code between a store and a load of shared words."""
    atomic.fence()


@kernel
def count_sent(glob, agents, sent, me, dst):
    """A message from me to dst is on its way: SENT, the receiver's INBOX, then VERSION."""
    sent[me, dst] += np.uint64(1)
    atomic.add(agents[dst], INBOX, np.uint64(1))
    atomic.add(glob, VERSION, np.uint64(1))


@kernel
def bump(glob):
    """VERSION += 1: a bound has its new word; the old one may go after this."""
    atomic.add(glob, VERSION, np.uint64(1))


def _order(kind: int, arg: int, src: int, seq: int) -> tuple:
    """The order of events due at the same time, whatever order they arrived in: by kind,
    then an interrupt by its queue (whether the NIC or the CPU itself settled it), an IPI
    by its sender; the arrival sequence last (one sender's messages keep their order)."""
    return (kind, arg if kind == IRQ else src, seq)


class Sync:
    """One agent's end of the synchronization: publishing, its horizon, its event heap,
    sending, and blocking, through a Port that knows how to block, wake and carry messages:

        port.send(dst, msg)         deliver a message tuple to agent dst (False: not sent,
                                    the run is stopping at once)
        port.recv(n)                n messages of this agent's inbox (they are counted in
                                    SENT, so they are on their way); a list
        port.seq()                  this agent's wake sequence, read before checking
        port.block(seq, timeout)    sleep unless woken since seq was read (or the timeout)
        port.wake(agent)            wake an agent
        port.sync_until             None, or _until / wait_idle in compiled code (its
                                    kernel, arrays and params: emu.syncwait.CompiledWait;
                                    see Sync._until_port)
        port.wall_ns()              real time, for the wait statistics
        port.sleep_until(wall_ns)   pacing: sleep until that real time
        port.stopping()             True when the run must end now (waits then return, and
                                    the agent's loop raises Stopped at its next safe point)
    """

    def __init__(self, sb: SyncBlock, me: int, lat_ipi: int, lat_data: int, port):
        self.sb = sb
        self.me = me
        self.ncpus = sb.ncpus
        self.l_msg = int(lat_ipi)    # another CPU's message takes effect this much later
        self.l_data = int(lat_data)  # its queued entry is seen this much later (by stamp)
        self.port = port
        self._agents = sb.agents
        self._pparams: dict = {}     # the port's compiled wait's parameters, per horizon kind
        self._hargs = (sb.flat, sb.qtarget, sb.ncpus, sb.nqueues, me, self.l_msg)
        self.h = 0                   # cached horizon: nothing at all can reach me before it
        self.hm = 0                  # ... no message (IRQ, IPI) before this one
        self.ho = 0                  # ... nothing on data this CPU owns (until_owned)
        self.pub = 0                 # the value last published (the block starts busy at 0)
        self.send_word = 0           # ... and its SEND word
        # quiet(): this agent sends no message before it takes another interrupt or IPI, and
        # then not before react ns of work (set by a CPU; None: it may send at any time)
        self.quiet = None
        self.react = 0
        self.heap: list = []         # (te, seq, kind, arg, src) of the messages taken
        self._seq = 0
        self.late_msgs = 0           # messages that came after the horizon had passed them
        self._second = (INF + 1, -1, 0)   # the last horizon's second CPU holding this back
        self._inbox_seen = 0         # INBOX at the last drain
        self.stopped = False         # told to stop at once: waits return, the loop ends
        # frames_check(q, t): the NIC has written every frame of queue q arriving by t (or
        # the ring has no room left); set by an agent that reads RX rings
        self.frames_check = None

    # -- publishing ------------------------------------------------------------------------
    def _send_of(self, value: int) -> int:
        """The SEND word that goes with PUB value: value itself, unless this CPU is busy
        and quiet."""
        quiet = self.quiet
        if not value & 1 and quiet is not None and quiet():
            # Quiet: the next message can only follow an interrupt, taken no earlier than
            # now and than the first one it holds (or one still on its way, which the
            # horizon reads from the channels as for an idle agent).
            heap = self.heap
            t = INF
            if heap:
                t = value >> 1
                if heap[0][0] > t:
                    t = heap[0][0]
            return ((t if t < INF else INF) << 1) | 1           # idle(max(now, next))
        return value

    def _publish(self, value: int, force: bool = False, wake: bool = True) -> None:
        send = self._send_of(value)
        if value == self.pub and send == self.send_word and not force:
            return
        self.pub = value
        self.send_word = send
        mask = publish(self._agents, self.me, value, send, self.react)
        if mask and wake:
            self._wake_mask(mask)

    def _wake_mask(self, mask: int) -> None:
        w = 0
        while mask:
            if mask & 1:
                self.port.wake(w)
            mask >>= 1
            w += 1

    def busy(self, t: int) -> None:
        self._publish(busy(t))

    def idle(self, nxt: int) -> None:
        self._publish(idle(nxt))

    def finish(self) -> None:
        """This agent will not act again: idle for ever, and say so."""
        self.idle(INF)
        self.sb.agents[self.me, STATE] = FINISHED
        self._wake_mask(waiting_for(self.sb.agents, self.me))
        self.port.wake(self.sb.nic)

    def stop_at(self) -> int:
        return int(self.sb.glob[STOP_AT])

    def pace(self, t: int) -> None:
        """Paced (run.tdf): wait until the wall clock allows emulated time t."""
        tdf = int(self.sb.glob[PACE_TDF_MILLI])
        if tdf:
            self.port.sleep_until(int(self.sb.glob[PACE_T0]) + t * tdf // 1000)
            if self.port.stopping():
                raise Stopped()

    def expect_own(self, te: int, kind: int, arg: int) -> None:
        """An event this agent settled itself (an interrupt whose time it computed): into
        its heap, as if it had been sent to it."""
        self._seq += 1
        heapq.heappush(self.heap, (te, _order(kind, arg, self.me, self._seq), kind, arg, self.me))
        if self.send_word & 1 and te < self.send_word >> 1:
            self._publish(self.pub)              # quiet until an earlier interrupt now

    def expect_irq(self, q: int, b: int) -> None:
        """Queue q's interrupt may take effect on this CPU from b on (the driver unmasked
        it): the bound is in QBOUND before this CPU moves on."""
        self.sb.qbound[q] = b
        bump(self.sb.glob)
        if b < self.h:
            self.h = b
        if b < self.ho:
            self.ho = b
        if b < self.hm:
            self.hm = b

    # -- the horizon -------------------------------------------------------------------------
    def horizon(self, l_final: int | None = None, exact: int = 0) -> tuple[int, int, int, int]:
        """The data horizon (l_final None: the others' PUB words), or the message horizon
        (their SEND words: a quiet CPU's message comes react after its next interrupt), or
        the owner's horizon (OWNED: SEND words, no latency); with ``exact`` (a mask of
        CPUs), those CPUs' PUB words in any case (the readers of the sockets touched)."""
        lf, word, react = self._mode(l_final)
        flat, qtarget, ncpus, nq, me, l_msg = self._hargs
        while True:
            h, by, base, via, h2, by2, base2 = horizon_of(flat, qtarget, ncpus, nq, me, lf,
                                                          l_msg, word, react, exact)
            if h >= 0:
                self._second = (h2, by2, base2)
                return h, by, base, via

    def _mode(self, l_final: int | None) -> tuple[int, int, int]:
        """(l_final, word, react) of the horizon kernel for the data horizon (None, DATA),
        the owner's (OWNED) or the message horizon (lat_ipi)."""
        if l_final is None or l_final == DATA:
            return DATA, PUB, 0
        if l_final == OWNED:
            return DATA, SEND, self.react
        return l_final, SEND, self.react

    def _at(self, t: int) -> None:
        """Busy at t, within a cached horizon: publish it if the word moves (a waiter on this
        CPU may go on)."""
        v = int(t) << 1                          # busy(t)
        if v != self.pub:
            self._publish(v)

    def until(self, t: int) -> None:
        """Return once no other agent can still produce any effect on this CPU at t or
        before (a store it would see, a message): before reading or writing state other
        CPUs share. Every message due by t is then in the heap. Blocks while it could."""
        if t < self.h:
            self._at(t)
            return
        self._until(t, DATA)

    def until_owned(self, t: int) -> None:
        """until(t) for data this CPU owns and other CPUs touch only from NET_RX (its
        sockets' receive side, its task's run state): a quiet CPU (with no softirq pending
        or running) cannot touch it before it takes an interrupt, so only the time it can
        next do so holds this CPU back, not its published time."""
        if t < self.ho:
            self._at(t)
            return
        self._until(t, OWNED)

    def until_readers(self, t: int, readers: int) -> None:
        """until(t) for the receive side of the sockets read on the CPUs in the mask
        readers (their queues, rmem, the readers' run state), from NET_RX: those CPUs touch
        them in any context, every other CPU only from NET_RX, so only the time a quiet one
        can next get there holds this CPU back."""
        if t < self.h:
            self._at(t)
            return
        self._until(t, OWNED, readers)

    def until_msgs(self, t: int) -> None:
        """Return once no message (IRQ, IPI) can still come for this CPU at t or before,
        and every one due by then is in the heap: where interrupts are taken."""
        if t < self.hm:
            self._at(t)
            return
        self._until(t, self.l_msg)

    def _passed(self, h: int, lf: int, readers: int) -> None:
        """The horizon (lf, readers) is h: into the caches, data horizon <= owner's horizon
        <= message horizon (the readers' is not cached)."""
        if readers:
            return
        if lf == self.l_msg:
            self.hm = h
        elif lf == OWNED:
            self.ho = h
            if h > self.hm:
                self.hm = h
        else:
            self.h = h
            if h > self.ho:
                self.ho = h
            if h > self.hm:
                self.hm = h

    def _until(self, t: int, lf: int, readers: int = 0) -> None:
        if self.port.sync_until is not None:
            self._until_port(t, lf, readers)
            return
        self.busy(t)
        while True:
            self.drain()
            h, by, base, via = self.horizon(lf, readers)
            if h > t:
                self._passed(h, lf, readers)
                return
            if by == self.me:
                if self.stopped:
                    return
                self._inbox_seen = -1            # a message to me is on its way: take it
                continue                         # (counted in SENT, maybe not in INBOX yet)
            thresh, kind, second, thresh2 = wait_plan(lf == DATA, readers, self.ncpus, self.me,
                                                      t, h, by, base, *self._second)
            self._block_horizon(by, thresh, t, lf, readers, via, kind, (second, thresh2), False)
            if self.stopped:
                return

    def _port_params(self, lf: int):
        """The port's compiled wait's parameters for the horizon kind lf (made once)."""
        key = (lf, self.react)
        p = self._pparams.get(key)
        if p is None:
            lfk, word, react = self._mode(lf)
            p = self._pparams[key] = self.port.sync_until.params(self.react, lf == DATA, lfk,
                                                                 self.l_msg, word, react)
        return p

    def _until_port(self, t: int, lf: int, readers: int) -> None:
        """_until through the port's compiled wait (port.sync_until: publish, the horizon,
        wait_plan and the wait, as _until does them step by step)."""
        v = int(t) << 1                          # busy(t)
        cw = self.port.sync_until
        kernel, (flat, qtarget, wake_base) = cw.kernel, cw.arrays
        prm = self._port_params(lf)
        while True:
            send = self._send_of(v)
            changed = v != self.pub or send != self.send_word
            self.pub = v
            self.send_word = send
            status, h = kernel(flat, qtarget, wake_base, prm, t, v, send, changed, readers,
                               self._inbox_seen, False, -1)
            if status == PASSED:
                self._passed(h, lf, readers)
                return
            if status == MINE:
                if self.stopped:
                    return
                self._inbox_seen = -1            # a message to me is on its way: take it
                self.drain()
            elif status == INBOX_MOVED:
                self.drain()
            elif self.port.stopping():           # WOKE: as block() says
                self.stopped = True
                return

    def wait_idle(self, stop_at: int) -> int:
        """This CPU has nothing to run: publish idle, block until its next event (or
        stop_at) is due and nothing else can come first; return that time."""
        cw = self.port.sync_until
        if cw is not None:
            kernel, (flat, qtarget, wake_base) = cw.kernel, cw.arrays
            prm = self._port_params(self.l_msg)
        while True:
            self.drain()
            nxt = self.next_event()
            goal = min(nxt, stop_at)
            if cw is not None:
                v = idle(nxt)                    # an idle word is its own SEND word
                changed = v != self.pub or v != self.send_word
                self.pub = self.send_word = v
                status, h = kernel(flat, qtarget, wake_base, prm, goal, v, v, changed, 0,
                                   self._inbox_seen, True, stop_at)
                if status == PASSED:
                    self.hm = h
                    return goal
                if status == MINE:
                    self._inbox_seen = -1
                    continue
                if status == INBOX_MOVED:
                    continue
                if self.port.stopping():
                    self.stopped = True
                    raise Stopped()              # idle: nothing in hand, a safe point
                stop_at = min(stop_at, self.stop_at())
                continue
            self.idle(nxt)
            h, by, base, via = self.horizon(self.l_msg)
            if h > goal:
                self.hm = h
                return goal
            if by == self.me:
                self._inbox_seen = -1
                continue
            thresh, kind, second, thresh2 = wait_plan(False, 0, self.ncpus, self.me, goal, h,
                                                      by, base, *self._second)
            self._block_horizon(by, thresh, goal, self.l_msg, 0, via, kind, (second, thresh2),
                                True)
            if self.stopped:
                raise Stopped()                  # idle: nothing in hand, a safe point
            stop_at = min(stop_at, self.stop_at())

    def _clear(self, lf: int, need: int, exact: int = 0) -> bool:
        """A waiter's last look before it sleeps: it may go on, or a message to it is on
        its way (taking it comes first)."""
        h, by, _base, _via = self.horizon(lf, exact)
        return h > need or by == self.me

    def _inbox_changed(self) -> bool:
        return int(self.sb.agents[self.me, INBOX]) != self._inbox_seen

    def _block_horizon(self, by: int, thresh: int, need: int, l_final: int, exact: int,
                       via: int, msgs: bool, also: tuple, inbox: bool) -> None:
        """block() until this CPU's horizon (l_final, exact) passes need, or a message to it
        is on its way, or (inbox) its INBOX moved (a process port does all of _until in
        compiled code instead: port.sync_until)."""
        self.block(by, thresh, need, 0,
                   lambda: self._clear(l_final, need, exact) or (inbox and self._inbox_changed()),
                   via, msgs, also)

    def block(self, by: int, thresh: int, need: int, frames_q: int, ready,
              via: int = -1, msgs: bool = False, also: tuple = (-1, 0)) -> None:
        """Register as waiting for agent by (until its published time reaches thresh; the
        NIC: until CPU via's interrupt bound does, or queue frames_q - 1's frames have
        arrived up to need) and, with also = (CPU, threshold), for that CPU's time too (the
        one that passes its threshold last wakes this one), check ready() once more, then
        sleep one slice at most. The caller loops: every wake-up may be spurious."""
        port = self.port
        sb = self.sb
        seq = port.seq()
        register_wait(sb.agents, self.me, by, thresh, need, frames_q, via, int(msgs),
                      also[0], also[1])
        if by == sb.nic and self.me != sb.nic and sb.agents[by, WAIT_ON]:
            port.wake(by)                        # the NIC sleeps: it has work now
        waited = -1
        if not ready():
            t0 = port.wall_ns()
            port.block(seq, WAIT_SLICE_NS)
            waited = port.wall_ns() - t0
        end_wait(sb.agents, sb.held, self.me, by, waited)
        if port.stopping():
            # Not raised here: this may be the middle of a poll, with frames in hand. The
            # waits return, the work in hand finishes unsynchronized, and the agent stops
            # at its next safe point (its loop's top, or idle), where nothing is in flight.
            self.stopped = True

    # -- frames from the NIC -----------------------------------------------------------------
    def wait_frames(self, q: int, t: int) -> None:
        """Block until frames_check(q, t) holds (the NIC wakes this agent)."""
        self.busy(t)
        while not self.frames_check(q, t) and not self.stopped:
            self.block(self.sb.nic, t, t, q + 1, lambda: self.frames_check(q, t))

    # -- messages --------------------------------------------------------------------------
    def send(self, dst: int, kind: int, te: int, arg: int) -> None:
        """A message that takes effect on agent dst at te."""
        sb = self.sb
        me = self.me
        if sb.sent[me, dst] == sb.taken[me, dst] or te < sb.first[me, dst]:
            sb.first[me, dst] = te               # messages of a pair may come out of order
        if not self.port.send(dst, (kind, te, arg, me)):   # before it is counted: a mailbox
            return                                          # slot is written when counted
        count_sent(sb.glob, sb.agents, sb.sent, me, dst)
        if sb.agents[dst, WAIT_ON]:
            self.port.wake(dst)
        # the receiver may answer from te on
        if te < self.h:
            self.h = te
        if te < self.ho:
            self.ho = te
        if te + self.l_msg < self.hm:
            self.hm = te + self.l_msg

    def drain(self) -> int:
        """Take every message counted as sent to this agent into the heap; how many."""
        sb = self.sb
        me = self.me
        seen = int(sb.agents[me, INBOX])         # read before SENT: senders count it after
        if seen == self._inbox_seen:
            return 0                             # nothing counted since the last look
        self._inbox_seen = seen
        n = inbox_count(sb.sent, sb.taken, me)
        if n <= 0:
            return 0
        msgs = self.port.recv(n)
        counts = [0] * sb.nagents
        irqs = []
        promised = self.hm
        for kind, te, arg, src in msgs:
            if te < promised:
                self.late_msgs += 1              # a causality error: must never happen
            self._seq += 1
            heapq.heappush(self.heap, (te, _order(kind, arg, src, self._seq), kind, arg, src))
            counts[src] += 1
            if kind == IRQ:
                irqs.append(arg)
        # The bound of what was taken moves from the channel to the heap, so into PUB (idle)
        # or SEND (quiet): the new word first, then VERSION, then the channel is released.
        # Then the waiters are checked again, even if the word stayed as it was: one held
        # back by the message in the channel may go on now (a quiet CPU takes it no earlier
        # than its own time, which the word already says), and it must find TAKEN updated.
        republish = self.pub & 1 or self.send_word & 1
        if self.pub & 1:
            self._publish(idle(self.next_event()), wake=False)
        elif self.send_word & 1:
            self._publish(self.pub, wake=False)
        bump(sb.glob)
        taken = sb.taken
        for s, c in enumerate(counts):
            if c:
                taken[s, me] += c
        for q in irqs:
            sb.qbound[q] = INF
        if republish:
            self._publish(self.pub, force=True)
        return len(msgs)

    def next_event(self) -> int:
        return self.heap[0][0] if self.heap else INF

    def due(self, t: int) -> list:
        """The events of the heap due at t or before, in time order."""
        out = []
        heap = self.heap
        while heap and heap[0][0] <= t:
            out.append(heapq.heappop(heap))
        return out


def warm() -> None:
    """Compile (or load) this module's kernels with the argument types a run uses."""
    buf = bytearray(layout_words(2, 2) * 8 + SyncBlock.futex_bytes(2) + 64)
    sb = SyncBlock(buf, 0, layout_words(2, 2) * 8, 2, 2, [0, 1])
    sb.init()
    horizon(sb.glob, sb.agents, sb.qbound, sb.qtarget, sb.sent, sb.taken, sb.first, 2, 0, 100,
            1000, PUB, 0, 0)
    horizon_of(sb.flat, sb.qtarget, 2, 2, 0, 100, 1000, PUB, 0, 0)
    block_views(sb.flat, 2, 2)
    _horizon_once(sb.agents, sb.qbound, sb.qtarget, sb.sent, sb.taken, sb.first, 2, 0, 100,
                  1000, PUB, 0, 0)
    publish(sb.agents, 0, 2, 2, 0)
    waiting_for(sb.agents, 0)
    register_wait(sb.agents, 0, 1, 5, 5, 0, -1, 0, -1, 0)
    end_wait(sb.agents, sb.held, 0, 1, 5)
    wait_plan(False, 0, 2, 0, 10, 5, 1, 3, 7, 0, 2)
    wait_plan(True, 1, 2, 0, 10, 5, 1, 3, INF + 1, -1, 0)
    end_wait(sb.agents, sb.held, 0, 1, -1)
    bump(sb.glob)
    count_sent(sb.glob, sb.agents, sb.sent, 0, 1)
    full_fence()
    nic_bound(sb.qbound, sb.qtarget, 0)
    pending_to(sb.sent, sb.taken, sb.first, 0)
    inbox_count(sb.sent, sb.taken, 0)
