"""struct napi_struct and its state machine (include/linux/netdevice.h, net/core/dev.c).

napi_schedule_prep, ____napi_schedule and napi_complete_done live on the Cpu that owns the
poll list (cpus/kernel.py) because they touch softnet_data; this module holds the state
bits and the instance itself. Context: hardirq (schedule), softirq (poll, complete).

The backlog NAPI of a CPU keeps its state word in shared memory (other CPUs test-and-set
SCHED under the backlog lock, §2.8), so ``state`` is a property backed by any 1-element
array-like; device NAPIs keep it in a private array.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

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
