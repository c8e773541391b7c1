"""Which nodes are online: HELLO and any verified frame mark a node seen; silence marks it offline.

The tracker remembers, per node, the link it was last heard on (where ACK, TIME and CMD frames go), when it
was last seen, what its last HELLO said, and counters. State changes (online/offline) are reported to a
callback so the agent can send them upstream as ``node_state`` events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.links.base import Link


@dataclass
class NodeState:
    node_id: int
    name: str = ""
    online: bool = False
    link: Link | None = None
    last_seen: float | None = None  # time.monotonic() of the last verified frame
    last_seen_wall: float | None = None  # time.time() of the same, for status and upstream
    hello: Mapping[str, Any] = field(default_factory=dict)
    frames: int = 0
    hellos: int = 0
    last_time_sync: float | None = None  # monotonic time of the last TIME frame sent
    last_sent: float | None = None  # monotonic time of the last frame of any type sent to the node

    def age(self, now: float | None = None) -> float | None:
        if self.last_seen is None:
            return None
        return (time.monotonic() if now is None else now) - self.last_seen

    def public(self) -> dict[str, Any]:
        age = self.age()
        return {
            "node_id": self.node_id,
            "name": self.name,
            "online": self.online,
            "link": self.link.name if self.link is not None else None,
            "last_seen": self.last_seen_wall,
            "age_s": round(age, 3) if age is not None else None,
            "frames": self.frames,
            "hellos": self.hellos,
            "hello": dict(self.hello),
        }


StateCallback = Callable[[NodeState, str], None]  # (node, reason) on every online/offline change


class NodeTracker:
    """Online/offline bookkeeping. ``offline_after_s``: silence that makes a node offline."""

    def __init__(self, offline_after_s: float, on_change: StateCallback | None = None) -> None:
        self.offline_after_s = offline_after_s
        self.on_change = on_change
        self._nodes: dict[int, NodeState] = {}

    def get(self, node_id: int) -> NodeState | None:
        return self._nodes.get(node_id)

    def __iter__(self) -> Iterator[NodeState]:
        return iter(self._nodes.values())

    def __len__(self) -> int:
        return len(self._nodes)

    def ensure(self, node_id: int, name: str = "") -> NodeState:
        st = self._nodes.get(node_id)
        if st is None:
            st = self._nodes[node_id] = NodeState(node_id, name)
        return st

    def seen(self, node_id: int, name: str, link: Link, now: float, count: int = 1,
             wall: float | None = None) -> NodeState:
        """A verified frame (or ``count`` of them) from ``node_id`` arrived on ``link`` at monotonic ``now``."""
        st = self._nodes.get(node_id) or self.ensure(node_id, name)
        st.link = link
        st.last_seen = now
        st.last_seen_wall = time.time() if wall is None else wall
        st.frames += count
        if not st.online:
            st.online = True
            self._changed(st, "frame")
        return st

    def hello(self, node_id: int, name: str, link: Link, now: float, body: Mapping[str, Any]) -> NodeState:
        """A HELLO (the node booted or re-joined)."""
        st = self.seen(node_id, name, link, now)
        st.hello = dict(body)
        st.hellos += 1
        return st

    def sweep(self, now: float | None = None) -> list[NodeState]:
        """Mark nodes silent for ``offline_after_s`` offline; return those that changed."""
        now = time.monotonic() if now is None else now
        gone = []
        for st in self._nodes.values():
            if st.online and st.last_seen is not None and now - st.last_seen > self.offline_after_s:
                st.online = False
                gone.append(st)
                self._changed(st, "silent")
        return gone

    def forget(self, keep: set[int]) -> None:
        """Drop nodes no longer in the registry."""
        for node_id in list(self._nodes):
            if node_id not in keep:
                del self._nodes[node_id]

    def _changed(self, st: NodeState, reason: str) -> None:
        if self.on_change is not None:
            self.on_change(st, reason)

    async def run(self, interval_s: float = 1.0, heartbeat: Callable[[], None] | None = None) -> None:
        """Sweep every ``interval_s`` until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            if heartbeat is not None:
                heartbeat()
            self.sweep()
