"""The one protocol between the orchestrator, the NIC and the CPUs (msgpack over ZeroMQ).

Every message is a msgpack array [VERSION, run_id, type, body]; a message with another
version or run id is refused with both values named. Sockets, one per function:

  control  ROUTER (orchestrator) <-> DEALER (each child, identity "nic" or "cpu<N>"):
           STEP (a startup step begun), READY, START, STOP, STOPPED, EXIT,
           ERROR. Separate from the data plane, so a flood of IRQs never delays a stop.
  inbox    PULL bound by each CPU: EVENT [kind, te, arg, src], an interrupt from the NIC
           (emu.timesync), taking effect at emulated time te. Asynchronous, like an MSI
           write. (A CPU's IPIs to another CPU go through a mailbox in the sync block.)

Endpoints are abstract-namespace ipc sockets (ipc://@...): they leave no file behind.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

import msgpack

from .errors import ProtocolError

VERSION = 3


class Msg(IntEnum):
    READY = 1
    START = 2
    STOP = 4
    STOPPED = 5
    EXIT = 6
    ERROR = 7
    STEP = 8
    EVENT = 16


def endpoint(run_id: str, what: str) -> str:
    return f"ipc://@emu-{run_id}-{what}"


def pack(run_id: str, kind: Msg, body: Any = None) -> bytes:
    return msgpack.packb([VERSION, run_id, int(kind), body])


def unpack(data: bytes, run_id: str) -> tuple[Msg, Any]:
    try:
        version, rid, kind, body = msgpack.unpackb(data)
    except Exception as e:  # msgpack raises several types for garbage
        raise ProtocolError(f"malformed message ({len(data)} bytes): {e}") from None
    if version != VERSION:
        raise ProtocolError(f"protocol version {version} refused: this side speaks {VERSION}")
    if rid != run_id:
        raise ProtocolError(f"message for run {rid!r} refused: this is run {run_id!r}")
    try:
        return Msg(kind), body
    except ValueError:
        raise ProtocolError(f"unknown message type {kind}") from None
