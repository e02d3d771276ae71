"""The Port of emu.timesync.Sync for an agent in a process of its own: a futex per agent in
the sync block to block and wake, ZeroMQ to carry messages.

Measured alternatives (scripts/sync_bench.py, passing a token round 5 processes on 2
cores): a futex word published and waited on by one compiled call each costs ~13 us of CPU
per hop, an eventfd ~10 us, futex calls through ctypes ~33 us, a ZeroMQ message 5-7 times
more than the futex; spinning is out of the question with more processes than cores. The
futex word is in the shared segment (no file descriptor to pass around), so it wins.

Messages (IRQs, IPIs) go through the receiver's ZeroMQ PULL inbox as before: they are
counted in the sync block first (SENT), so the receiver knows how many are on their way and
waits for exactly those.
"""

from __future__ import annotations

import time


from . import futex
from .protocol import Msg, pack, unpack

RECV_SLICE_MS = 50


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
        self.addr = [futex.word_address(sb.wake_base, 16 * a) for a in range(sb.nagents)]
        self._wait_change = futex.wait_change      # bound once: futex's lazy module
        self._publish = futex.publish              # __getattr__ would run on every call

    def send(self, dst: int, msg) -> None:
        self.peers[dst].send(pack(self.run_id, Msg.EVENT, list(msg)))

    def recv(self, n: int) -> list:
        out = []
        inbox = self.inbox
        while len(out) < n:
            if inbox.poll(RECV_SLICE_MS):
                kind, body = unpack(inbox.recv(), self.run_id)
                out.append(tuple(body))
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
        if not self._stopping and self.stop_check():
            self._stopping = True
        return self._stopping

