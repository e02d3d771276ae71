"""The sync block: the words in shared memory through which the agents of one host
synchronize their emulated time (emu.timesync says how they use them).

Plain views and constants only (no compiler): the orchestrator reads the block to show
progress, find who holds the others back, and see when nothing can happen any more.
"""

from __future__ import annotations

import numpy as np

INF = (1 << 62) - 1              # no event: beyond any emulated time

# global words
VERSION = 0          # +1 around every move of a bound from one word to another
STOP_AT = 1          # no agent acts after this emulated time
PACE_T0 = 2          # CLOCK_MONOTONIC ns of emulated time 0 when paced (0: not paced)
PACE_TDF_MILLI = 3   # paced: emulated time advances at most 1000 ns per this many real ns
TRAFFIC_END = 4      # the NIC generates no frame at or after this emulated time
STOPPING = 5         # 1: the orchestrator said STOP (also on the control channel), end at once
GLOBAL_WORDS = 8

# words of an agent's line (agents 0..ncpus-1 are the CPUs, ncpus the NIC)
PUB = 0              # (time << 1) | idle
WAIT_ON = 1          # 1 + the agent this one waits for (0: not waiting)
THRESH = 2           # wake this one when that agent's published time reaches this
NEED = 3             # the emulated time it waits to act at
FRAMES_Q = 4         # 1 + the RX queue whose frames it waits for (0: its horizon)
WAIT_NS = 5          # real ns spent blocked
WAITS = 6            # times it blocked
STATE = 7            # RUNNING, FINISHED
VIA = 8              # waiting for the NIC: 1 + the CPU whose queues' bound it waits on
SEND = 9             # as PUB, for messages: (time << 1) | quiet (see emu.timesync)
WKIND = 10           # what the waiter's THRESH is on: 0 the PUB time, 1 the SEND time
INBOX = 11           # messages ever counted as sent to this agent, by anyone
WAIT_ON2 = 12        # 1 + a second CPU whose bound holds it back too (0: none), and ...
THRESH2 = 13         # ... the time that CPU's published word must reach as well
AGENT_WORDS = 16     # two cache lines
RUNNING, FINISHED = 0, 1

# message kinds (the body of every message is (kind, te, arg, src))
IRQ, IPI_RPS, IPI_RES = 1, 2, 3

# A CPU's messages to another CPU (IPIs) go through a mailbox per pair in the block: message
# number i of the pair in slot i % MBOX_SLOTS, as (kind, te, arg). A pair never has more
# than a few in flight (a sender's own horizon stops it lat_ipi after each one until the
# receiver has moved on); a full mailbox makes the sender wait.
MBOX_SLOTS = 64


def busy(t: int) -> int:
    return int(t) << 1


def idle(nxt: int) -> int:
    return (int(min(nxt, INF)) << 1) | 1


def layout_words(ncpus: int, nqueues: int) -> int:
    """u64 words the sync block needs: globals, one line per agent, QBOUND per queue, four
    agent x agent matrices (SENT, TAKEN, FIRST, HELD: real ns i waited for j), and the
    CPU x CPU mailboxes."""
    nagents = ncpus + 1
    return (GLOBAL_WORDS + nagents * AGENT_WORDS + nqueues + 4 * nagents * nagents
            + ncpus * ncpus * MBOX_SLOTS * 3)


class SyncBlock:
    """Views of the sync block over a buffer, and a u32 futex word per agent (its wake
    sequence, each in its own 64-byte line)."""

    def __init__(self, buf, offset: int, futex_offset: int, ncpus: int, nqueues: int,
                 qtarget):
        nagents = ncpus + 1
        self.ncpus = ncpus
        self.nqueues = nqueues
        self.nagents = nagents
        self.nic = ncpus
        words = layout_words(ncpus, nqueues)
        flat = np.ndarray((words,), dtype="<u8", buffer=buf, offset=offset)
        self.flat = flat
        self.glob = flat[:GLOBAL_WORDS]
        a = GLOBAL_WORDS + nagents * AGENT_WORDS
        self.agents = flat[GLOBAL_WORDS:a].reshape(nagents, AGENT_WORDS)
        self.qbound = flat[a:a + nqueues]
        a += nqueues
        m = nagents * nagents
        self.sent = flat[a:a + m].reshape(nagents, nagents)
        self.taken = flat[a + m:a + 2 * m].reshape(nagents, nagents)
        self.first = flat[a + 2 * m:a + 3 * m].reshape(nagents, nagents)
        self.held = flat[a + 3 * m:a + 4 * m].reshape(nagents, nagents)
        a += 4 * m
        self.mbox = flat[a:a + ncpus * ncpus * MBOX_SLOTS * 3].reshape(ncpus, ncpus,
                                                                      MBOX_SLOTS, 3)
        self.wake_base = np.ndarray((nagents * 16,), dtype="<u4", buffer=buf,
                                    offset=futex_offset)
        self.wake = self.wake_base[::16]
        self.qtarget = np.ascontiguousarray(qtarget, dtype=np.int64)

    @staticmethod
    def futex_bytes(ncpus: int) -> int:
        return (ncpus + 1) * 64

    def init(self, stop_at: int = INF) -> None:
        """Owner only, before any agent starts: every agent busy at 0; the first interrupt
        of a queue not before the NIC has seen it."""
        self.flat[:] = 0
        self.wake[:] = 0
        self.glob[STOP_AT] = stop_at
        self.glob[TRAFFIC_END] = INF
        self.qbound[:] = 0

    # -- what an observer (the orchestrator) reads -----------------------------------------
    def times(self) -> list[tuple[int, bool]]:
        """(time, idle) of every agent as published."""
        return [(int(v) >> 1, bool(int(v) & 1)) for v in self.agents[:, PUB]]

    def quiescent(self) -> bool:
        """Nothing can happen any more: every agent idle with no event, no message in
        flight, no interrupt pending (read between two equal VERSIONs)."""
        for _ in range(100):
            v1 = int(self.glob[VERSION])
            q = (all(int(v) == idle(INF) for v in self.agents[:, PUB])
                 and bool(np.all(self.sent == self.taken))
                 and bool(np.all(self.qbound >= INF)))
            if int(self.glob[VERSION]) == v1:
                return q
        return False
