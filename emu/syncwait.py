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


from . import futex
from .protocol import Msg, pack, unpack
from .syncblock import MBOX_SLOTS

RECV_SLICE_MS = 50
STOP_CHECK_NS = 2_000_000


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
        self._wait_change = futex.wait_change      # bound once: futex's lazy module
        self._publish = futex.publish              # __getattr__ would run on every call

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
            sent, taken, mbox = sb.sent, sb.taken, sb.mbox
            for s in range(sb.ncpus):
                k0, k1 = int(taken[s, me]), int(sent[s, me])
                for k in range(k0, k1):
                    kind, te, arg = mbox[s, me, k % MBOX_SLOTS].tolist()
                    out.append((kind, te, arg, s))
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
        w = self.sb.wake
        self._publish(self.addr[agent], (int(w[agent]) + 1) & 0xFFFFFFFF, 1)

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
        """True once the orchestrator said STOP. Its control channel is polled at most every
        STOP_CHECK_NS of real time: a poll costs several microseconds, and an agent asks
        after every wait (a blocked agent wakes every WAIT_SLICE_NS anyway)."""
        if self._stopping:
            return True
        now = time.monotonic_ns()
        if now - self._stop_checked >= STOP_CHECK_NS:
            self._stop_checked = now
            if self.stop_check():
                self._stopping = True
        return self._stopping

