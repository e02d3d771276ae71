"""struct napi_struct, its state machine and its scheduling (include/linux/netdevice.h,
net/core/dev.c): napi_schedule_prep, ____napi_schedule, napi_complete_done.

Context: hardirq (schedule), softirq (poll, complete). The backlog NAPI of a CPU keeps its
state word in shared memory (other CPUs test-and-set SCHED under the backlog lock), so
``state`` is a property backed by any 1-element array-like; a driver NAPI keeps it in its RX
ring's header.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from emu.counters import NET_RX_SOFTIRQ

NAPI_STATE_SCHED = 1 << 0
NAPI_STATE_MISSED = 1 << 1
NAPI_STATE_DISABLE = 1 << 2
NAPI_STATE_NPSVC = 1 << 3
NAPI_STATE_LISTED = 1 << 4
NAPI_STATE_NO_BUSY_POLL = 1 << 5
NAPI_STATE_IN_BUSY_POLL = 1 << 6
NAPI_STATE_PREFER_BUSY_POLL = 1 << 7
NAPI_STATE_THREADED = 1 << 8
NAPI_STATE_SCHED_THREADED = 1 << 9


class Napi:
    """One NAPI instance: a driver RX queue's, or a CPU's backlog (process_backlog)."""

    __slots__ = ("name", "weight", "poll", "queue", "list_owner", "_state", "_idx", "polls")

    def __init__(self, name: str, weight: int, poll: Callable[["Napi", int], int],
                 queue: int = -1, state_store: np.ndarray | None = None, state_index: int = 0):
        self.name = name
        self.weight = weight
        self.poll = poll
        self.queue = queue
        self.list_owner = -1
        self._state = state_store if state_store is not None else np.zeros(1, dtype="<u8")
        self._idx = state_index if state_store is not None else 0
        self.polls = 0

    @property
    def state(self) -> int:
        return int(self._state[self._idx])

    @state.setter
    def state(self, value: int) -> None:
        self._state[self._idx] = value

    def __repr__(self) -> str:
        return f"Napi({self.name}, state={self.state:#x})"


def napi_schedule_prep(n: Napi) -> bool:
    """Claim n for this CPU: True only if SCHED was clear; a lost race sets MISSED."""
    val = n.state
    if val & NAPI_STATE_DISABLE:
        return False
    new = val | NAPI_STATE_SCHED
    if val & NAPI_STATE_SCHED:
        new |= NAPI_STATE_MISSED
    n.state = new
    return not (val & NAPI_STATE_SCHED)


def napi_schedule(sd, n: Napi) -> None:
    """____napi_schedule: append n to sd's poll list; raise NET_RX unless inside it."""
    n.list_owner = sd.cpu
    sd.poll_list.append(n)
    if not sd.in_net_rx_action:
        sd.softirq.raise_softirq(NET_RX_SOFTIRQ)


def napi_complete_done(sd, n: Napi, work_done: int) -> bool:
    """False if the NAPI missed a schedule while polling (it is scheduled again)."""
    if n in sd.poll_list:
        sd.poll_list.remove(n)
    n.list_owner = -1
    val = n.state
    new = val & ~(NAPI_STATE_MISSED | NAPI_STATE_SCHED | NAPI_STATE_SCHED_THREADED
                  | NAPI_STATE_PREFER_BUSY_POLL)
    if val & NAPI_STATE_MISSED:
        new |= NAPI_STATE_SCHED
    n.state = new
    if val & NAPI_STATE_MISSED:
        napi_schedule(sd, n)
        return False
    return True


def napi_complete(sd, n: Napi) -> bool:
    return napi_complete_done(sd, n, 0)
