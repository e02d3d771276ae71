"""The Port of emu.timesync.Sync for an agent in a process of its own: a futex per agent in
the sync block to block and wake; a CPU's IPIs to another CPU go through their mailbox in
the sync block, the NIC's interrupts through the receiving CPU's ZeroMQ inbox.

Measured alternatives (scripts/sync_bench.py, passing a token round 5 processes on 2
cores): a futex word published and waited on by one compiled call each costs ~13 us of CPU
per hop, an eventfd ~10 us, futex calls through ctypes ~33 us, a ZeroMQ message 5-7 times
more than the futex; spinning is out of the question with more processes than cores. The
futex word is in the shared segment (no file descriptor to pass around), so it wins.

Every message is counted in the sync block (SENT) once it is on its way, so the receiver
knows how many to take from each sender. An IPI is in its mailbox slot before it is
counted: taking it is a read of shared memory, with no hop through ZeroMQ's I/O thread
(60-85 us of wall time on this 2-core machine, on the critical path of every remote
wake-up). The NIC's interrupts stay on ZeroMQ (the NIC raises IRQs over ZeroMQ, as the
design says): the receiver waits for exactly the number counted.
"""

from __future__ import annotations

import time

import numpy as np

from . import futex
from .futexc import bump_wake, load_word, monotonic_ns, wait_change
from .jit import kernel
from .protocol import Msg, pack, unpack
from .syncblock import INBOX, MBOX_SLOTS, STOP_AT, STOPPING, WAIT_ON
from .timesync import (INBOX_MOVED, MINE, PASSED, WAIT_SLICE_NS, WOKE, block_views, end_wait,
                       horizon, publish as publish_words, register_wait, wait_plan)

RECV_SLICE_MS = 50
STOP_CHECK_NS = 20_000_000


@kernel
def _wait_horizon(flat, qtarget, wake_base, ncpus, nqueues, me, lf, l_relay, word, react, exact,
                  need, by, thresh, via, kind, by2, thresh2, inbox_seen, check_inbox,
                  timeout_ns):
    """Sync.block of CPU me with ready() its horizon check (Sync._clear, and with
    check_inbox an INBOX that moved since inbox_seen; and STOPPING), over this port's futex
    words, in one call: read the wake sequence, register (register_wait), wake the NIC if it
    is what this waits for and it sleeps, look once more, sleep at most timeout_ns unless
    woken since, count the wait (end_wait). The real ns slept, or -1 if it did not sleep."""
    glob, agents, qbound, sent, taken, first, held = block_views(flat, ncpus, nqueues)
    nic = ncpus
    base = wake_base.ctypes.data
    mine = base + 64 * me                        # word 16 * agent of uint32s
    seq = load_word(mine)
    register_wait(agents, me, by, thresh, need, 0, via, kind, by2, thresh2)
    if by == nic and agents[nic, WAIT_ON] != 0:
        bump_wake(base + 64 * nic, 1)            # the NIC sleeps: it has work now
    # ready: the run stops at once, the inbox moved, or (below) the horizon passed
    ready = glob[STOPPING] != 0 or (check_inbox and np.int64(agents[me, INBOX]) != inbox_seen)
    if not ready:
        while True:
            h, hb, _b, _v, _h2, _b2, _c2 = horizon(glob, agents, qbound, qtarget, sent, taken,
                                                   first, ncpus, me, lf, l_relay, word, react,
                                                   exact)
            if h >= 0:
                break
        ready = h > need or hb == me
    waited = -1
    if not ready:
        t0 = monotonic_ns()
        wait_change(mine, seq, timeout_ns)
        waited = monotonic_ns() - t0
    end_wait(agents, held, me, by, waited)
    return waited


@kernel
def _wake(wake_base, agent):
    """ProcPort.wake from compiled code: the next wake sequence, and a futex wake."""
    bump_wake(wake_base.ctypes.data + 64 * agent, 1)


# the words of a CompiledWait's parameters (one int64 array per horizon kind)
P_NCPUS, P_NQUEUES, P_ME, P_REACT, P_DATA, P_LF, P_RELAY, P_WORD, P_HREACT, P_TIMEOUT, P_SLICE = \
    range(11)


@kernel
def _sync_until_p(flat, qtarget, wake_base, prm, need, value, send, changed, exact, inbox_seen,
                  check_inbox, stop_at):
    """_sync_until with the arguments that stay the same for a horizon kind in prm (a
    call with four arrays and eight numbers costs half as much to make from Python)."""
    return _sync_until(flat, qtarget, wake_base, prm[P_NCPUS], prm[P_NQUEUES], prm[P_ME], need,
                       value, send, prm[P_REACT], changed, prm[P_DATA] != 0, prm[P_LF],
                       prm[P_RELAY], prm[P_WORD], prm[P_HREACT], exact, inbox_seen,
                       check_inbox, stop_at, prm[P_TIMEOUT], prm[P_SLICE])


@kernel
def _sync_until(flat, qtarget, wake_base, ncpus, nqueues, me, need, value, send, react,
                changed, data, lf, l_relay, word, hreact, exact, inbox_seen, check_inbox,
                stop_at, timeout_ns, slice_ns):
    """Sync._until (or wait_idle, with check_inbox) in one call, up to where Python must act:
    publish value and send if changed (waking the waiters whose thresholds they pass), then
    look until the INBOX moved since inbox_seen (INBOX_MOVED: drain), the horizon passes
    need (PASSED, and h) or a message to this CPU is on its way (MINE), waiting as
    wait_plan says (_wait_horizon) while it does neither; WOKE after a wait once the
    orchestrator said STOP (STOPPING), STOP_AT moved from stop_at (>= 0), or slice_ns have
    passed (Python then looks at its control channel). (status, h)."""
    glob, agents, qbound, sent, taken, first, _held = block_views(flat, ncpus, nqueues)
    if changed:
        mask = publish_words(agents, me, value, send, react)
        w = 0
        while mask:
            if mask & 1:
                _wake(wake_base, w)
            mask >>= 1
            w += 1
    t_end = monotonic_ns() + slice_ns
    while True:
        if np.int64(agents[me, INBOX]) != inbox_seen:
            return INBOX_MOVED, 0
        while True:
            h, by, base, via, h2, by2, base2 = horizon(glob, agents, qbound, qtarget, sent,
                                                       taken, first, ncpus, me, lf, l_relay,
                                                       word, hreact, exact)
            if h >= 0:
                break
        if h > need:
            return PASSED, h
        if by == me:
            return MINE, 0
        thresh, kind, second, thresh2 = wait_plan(data, exact, ncpus, me, need, h, by, base,
                                                  h2, by2, base2)
        left = t_end - monotonic_ns()            # the slice's end bounds the sleep too
        if left <= 0:
            return WOKE, 0
        _wait_horizon(flat, qtarget, wake_base, ncpus, nqueues, me, lf, l_relay, word, hreact,
                      exact, need, by, thresh, via, kind, second, thresh2, inbox_seen,
                      check_inbox, min(timeout_ns, left))
        if (glob[STOPPING] != 0 or (stop_at >= 0 and np.int64(glob[STOP_AT]) != stop_at)
                or monotonic_ns() >= t_end):
            return WOKE, 0


@kernel
def _mbox_take(sent, taken, mbox, me, ncpus, out):
    """The IPIs in the mailboxes to CPU me that are counted as sent and not taken yet,
    into out's rows as (kind, te, arg, sender), in sender order; how many."""
    n = 0
    for s in range(ncpus):
        for k in range(taken[s, me], sent[s, me]):
            if n == out.shape[0]:                # more than the mailboxes hold: never (send
                return -1                        # waits while one is full)
            row = mbox[s, me, k % MBOX_SLOTS]
            out[n, 0] = row[0]
            out[n, 1] = row[1]
            out[n, 2] = row[2]
            out[n, 3] = s
            n += 1
    return n


class CompiledWait:
    """A ProcPort's Sync._until / wait_idle in compiled code: Sync calls kernel(*arrays,
    params(...), need, value, send, changed, exact, inbox_seen, check_inbox, stop_at),
    params being made once per horizon kind."""

    def __init__(self, sb, me: int):
        self.kernel = _sync_until_p
        self.arrays = (sb.flat, sb.qtarget, sb.wake_base)
        self._base = (sb.ncpus, sb.nqueues, me)

    def params(self, react: int, data: bool, lf: int, l_relay: int, word: int,
               hreact: int) -> np.ndarray:
        p = np.zeros(11, dtype=np.int64)
        p[P_NCPUS], p[P_NQUEUES], p[P_ME] = self._base
        p[P_REACT], p[P_DATA], p[P_LF], p[P_RELAY] = react, int(data), lf, l_relay
        p[P_WORD], p[P_HREACT], p[P_TIMEOUT], p[P_SLICE] = word, hreact, WAIT_SLICE_NS, \
            STOP_CHECK_NS
        return p


class ProcPort:
    def __init__(self, sb, me: int, inbox, peers: dict, run_id: str, stop_check):
        """inbox: this agent's PULL socket (None if it receives nothing); peers: agent ->
        PUSH socket; stop_check(): True once the orchestrator has said STOP."""
        self.sb = sb
        self.me = me
        self.inbox = inbox
        self.peers = peers
        self.run_id = run_id
        self.stop_check = stop_check
        self._stopping = False
        self._stop_checked = 0
        self.addr = [futex.word_address(sb.wake_base, 16 * a) for a in range(sb.nagents)]
        self.sync_until = CompiledWait(sb, me)
        self._mbox_out = np.zeros((sb.ncpus * MBOX_SLOTS, 4), dtype=np.int64)
        self._wait_change = futex.wait_change      # bound once: futex's lazy module
        self._bump_wake = bump_wake

    def send(self, dst: int, msg) -> bool:
        sb = self.sb
        me = self.me
        if me == sb.nic or dst == sb.nic:
            self.peers[dst].send(pack(self.run_id, Msg.EVENT, list(msg)))
            return True
        n = int(sb.sent[me, dst])
        while n - int(sb.taken[me, dst]) >= MBOX_SLOTS:    # full: the receiver is behind
            self.wake(dst)
            if self.stopping():
                return False                # the run ends now: the IPI is not sent
            time.sleep(0.0001)
        slot = sb.mbox[me, dst, n % MBOX_SLOTS]
        slot[0] = msg[0]
        slot[1] = msg[1]
        slot[2] = msg[2]
        return True

    def recv(self, n: int) -> list:
        """Every message counted as sent to this agent and not taken yet (n of them)."""
        sb = self.sb
        me = self.me
        out = []
        if me != sb.nic:
            k = _mbox_take(sb.sent, sb.taken, sb.mbox, me, sb.ncpus, self._mbox_out)
            if k < 0:
                raise RuntimeError(f"cpu{me}'s mailboxes hold more IPIs than they have slots")
            if k:
                out = self._mbox_out[:k].tolist()
        want = int(sb.sent[sb.nic, me]) - int(sb.taken[sb.nic, me])
        inbox = self.inbox
        got = 0
        while got < want:
            if inbox.poll(RECV_SLICE_MS):
                kind, body = unpack(inbox.recv(), self.run_id)
                out.append(tuple(body))
                got += 1
            elif self.stopping():
                break
        return out

    def seq(self) -> int:
        return int(self.sb.wake[self.me])

    def block(self, seq: int, timeout_ns: int) -> None:
        self._wait_change(self.addr[self.me], seq, timeout_ns)

    def wake(self, agent: int) -> None:
        self._bump_wake(self.addr[agent], 1)

    def wall_ns(self) -> int:
        return time.monotonic_ns()

    def sleep_until(self, wall_ns: int) -> None:
        """Paced: sleep until then, in slices, so that a stop is seen at once."""
        while not self.stopping():
            d = wall_ns - time.monotonic_ns()
            if d <= 0:
                return
            time.sleep(min(d, 50_000_000) / 1e9)

    def stopping(self) -> bool:
        """True once the orchestrator said STOP: it sets STOPPING in the sync block, then
        says so on the control channel and wakes every agent, so a look at the word after
        each wait sees it at once. The control channel (which also says EXIT, and finds an
        orchestrator gone) is polled at most every STOP_CHECK_NS of real time: a poll and
        the parent check after it cost three system calls, and an agent asks after every
        wait (a blocked agent wakes every WAIT_SLICE_NS anyway)."""
        if self._stopping:
            return True
        if self.sb.glob[STOPPING]:
            self._stopping = True
            return True
        now = time.monotonic_ns()
        if now - self._stop_checked >= STOP_CHECK_NS:
            self._stop_checked = now
            if self.stop_check():
                self._stopping = True
        return self._stopping



def warm() -> None:
    """Compile (or load) this module's kernel with the argument types a run uses."""
    from .syncblock import PUB, SyncBlock, layout_words
    buf = bytearray(layout_words(2, 2) * 8 + SyncBlock.futex_bytes(2) + 64)
    sb = SyncBlock(buf, 0, layout_words(2, 2) * 8, 2, 2, [0, 1])
    sb.init()
    for check_inbox in (True, False):         # ready at once: the inbox moved / horizon passed
        _wait_horizon(sb.flat, sb.qtarget, sb.wake_base, 2, 2, 0, -1, 1000, PUB, 0, 0, -1, 1, 5,
                      -1, 0, -1, 0, -7, check_inbox, WAIT_SLICE_NS)
        cw = CompiledWait(sb, 0)
        cw.kernel(*cw.arrays, cw.params(0, False, -1, 1000, PUB, 0), -1, 0, 0, False, 0, -7,
                  check_inbox, -1)                                  # the inbox moved
        _sync_until(sb.flat, sb.qtarget, sb.wake_base, 2, 2, 0, -1, 0, 0, 0, False, False, -1,
                    1000, PUB, 0, 0, -7, check_inbox, -1, WAIT_SLICE_NS, STOP_CHECK_NS)
    _wake(sb.wake_base, 1)
    _mbox_take(sb.sent, sb.taken, sb.mbox, 0, 2, np.zeros((2 * MBOX_SLOTS, 4), dtype=np.int64))
