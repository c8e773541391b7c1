"""Events: what the gateway stores in its outbox and sends upstream.

An :class:`Event` is produced by whoever learns something (the frame verifier for a node's telemetry,
the command router for a final command status, the vision pipeline for counts, the agent itself) and is
handed to :class:`gateway.outbox.Outbox`. From there the uplink sends it to the operations center.

Ordering and identity:

* :class:`Priority` decides what leaves first: ``ALARM (4) > FAULT (3) > COMMAND_ACK (2) > TELEMETRY (1) >
  VISION (0)``. A higher number overtakes a lower one at every hop; the outbox's overflow policy drops the
  lowest number first and never drops ``ALARM``.
* ``origin`` is the producer's idempotency key (e.g. ``"17:0:1234"`` = node 17, channel 0, frame seq 1234).
  The outbox drops an event whose origin it has already stored or delivered recently, so a node that resends
  a frame because our ACK got lost does not create a second event upstream.
* The outbox gives every stored event a sequence number per *lane* (``source`` × ``priority``); the uplink
  sends it so the operations center can drop duplicates and detect gaps (see docs/uplink.md).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any


class Priority(IntEnum):
    """Event priority; a larger value leaves first and is dropped last (ALARM never)."""

    VISION = 0  # vision counts and occupancy: nice to have, first to go when the disk quota is reached
    TELEMETRY = 1  # periodic measurements
    COMMAND_ACK = 2  # final status of a command from the operations center
    FAULT = 3  # device faults: lamp failure, probe off, low battery, link lost
    ALARM = 4  # medical alarms and safety events: never dropped, always first

    @property
    def lane(self) -> str:
        """The short name used in uplink topics (``alarm``, ``fault``, ``ack``, ``telemetry``, ``vision``)."""
        return _LANES[self]

    @classmethod
    def from_lane(cls, lane: str) -> Priority:
        """Inverse of :attr:`lane`; raises ValueError for an unknown lane name."""
        for prio, name in _LANES.items():
            if name == lane:
                return prio
        raise ValueError(f"unknown priority lane {lane!r} (known: {', '.join(_LANES.values())})")


_LANES: dict[Priority, str] = {
    Priority.ALARM: "alarm",
    Priority.FAULT: "fault",
    Priority.COMMAND_ACK: "ack",
    Priority.TELEMETRY: "telemetry",
    Priority.VISION: "vision",
}

# Well-known event kinds (free-form strings are allowed; these get one-byte codes upstream).
KINDS: tuple[str, ...] = ("telemetry", "event", "hello", "node_state", "cmd_status", "vision", "gw_state")


def now_ms() -> int:
    """Wall-clock time in milliseconds since the Unix epoch (the unit of :attr:`Event.ts_ms`)."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened, ready for the outbox.

    ``source``: who it is about — ``"node:17"``, ``"gw"``, ``"cam:north"``.
    ``kind``: ``telemetry``, ``event``, ``hello``, ``node_state``, ``cmd_status``, ``vision`` (or another word).
    ``body``: JSON/CBOR-able mapping (str keys; values str, int, float, bool, None, lists, nested mappings).
    ``origin``: idempotency key from the producer, or ``None`` when the event cannot repeat.
    """

    source: str
    kind: str
    priority: Priority
    body: Mapping[str, Any] = field(default_factory=dict)
    ts_ms: int = field(default_factory=now_ms)
    origin: str | None = None

    def __post_init__(self) -> None:
        if not self.source or len(self.source) > 128:
            raise ValueError(f"event source must be 1..128 characters, got {self.source!r}")
        if not self.kind:
            raise ValueError("event kind must not be empty")
        if not isinstance(self.priority, Priority):
            object.__setattr__(self, "priority", Priority(self.priority))


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as read back from the outbox: with its row id (for :meth:`Outbox.ack`) and lane sequence."""

    id: int
    seq: int
    event: Event

    @property
    def source(self) -> str:
        return self.event.source

    @property
    def priority(self) -> Priority:
        return self.event.priority
