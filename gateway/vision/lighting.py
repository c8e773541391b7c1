"""Adaptive lighting: a person or vehicle in a zone at night boosts the streetlights that light it.

The rule sends the streetlight ``boost`` command (level %, duration_s) through the gateway's
authenticated command path (:class:`gateway.commands.CommandRouter`), as a ``local`` request. What a boost
means is the node's business and is safe by construction (firmware/apps/streetlight/overrides.py): the
lamp gives at least the boost level and never less than its program; a boost never lights a street in
daylight; it ends by itself after ``duration_s`` on the node's own clock, so the street returns to its
program even if the gateway disappears.

While presence continues the rule re-sends the boost every ``hold_s / 2`` so it never lapses; when the
zone empties it simply stops sending and the lights return to their program ``hold_s`` later. When the
camera is not streaming the rule does nothing at all (a lost camera must not keep a street boosted, nor
switch anything based on stale data).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from gateway.commands import CommandRequest, CommandResult, CommandStatus
from gateway.vision.config import LightingRule

log = logging.getLogger(__name__)

Submit = Callable[[CommandRequest], Awaitable[CommandResult]]


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def is_night(rule: LightingRule, local_time: dt.datetime, scene_grey: float | None) -> bool:
    """Whether the rule considers it night now (by clock window, scene brightness, or always)."""
    if rule.night == "always":
        return True
    if rule.night == "scene":
        return scene_grey is not None and scene_grey < rule.scene_dark_below
    start, end = _minutes(rule.night_start), _minutes(rule.night_end)
    now = local_time.hour * 60 + local_time.minute
    return (start <= now or now < end) if start > end else (start <= now < end)


def boost_args(level_pct: int, hold_s: float) -> dict[str, int]:
    """The streetlight firmware's ``boost`` arguments (firmware/apps/streetlight/app.py ``on_cmd``):
    ``level`` in permille (0..1000) and ``duration`` in seconds."""
    return {"level": int(level_pct) * 10, "duration": max(1, round(hold_s))}


@dataclass
class CameraView:
    """What the rule needs to know about a camera at one moment."""

    streaming: bool
    occupancy: dict[str, dict[str, int]]  # zone -> class -> objects now
    scene_grey: float | None = None


class AdaptiveLighting:
    """Evaluates the lighting rules and submits boost commands. Time is passed in, so tests control it."""

    def __init__(self, rules: Iterable[LightingRule], submit: Submit, *, timeout_s: float = 10.0) -> None:
        self.rules = list(rules)
        self._submit = submit
        self.timeout_s = timeout_s
        self._last: dict[tuple[int, int], float] = {}  # (rule index, node) -> monotonic time of last boost
        self._seq = 0
        self.results: dict[str, int] = {}
        self.sent = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def decide(self, views: dict[str, CameraView], now: float,
               local_time: dt.datetime) -> list[tuple[LightingRule, CommandRequest]]:
        """The boost requests due at ``now`` (monotonic seconds) for the cameras' current ``views``."""
        out: list[tuple[LightingRule, CommandRequest]] = []
        for i, rule in enumerate(self.rules):
            view = views.get(rule.camera)
            if view is None or not view.streaming:
                for node in rule.nodes:  # forget: after the camera returns, presence boosts at once
                    self._last.pop((i, node), None)
                continue
            present = any(n > 0 and label in rule.classes
                          for label, n in view.occupancy.get(rule.zone, {}).items())
            if not present or not is_night(rule, local_time, view.scene_grey):
                continue
            for node in rule.nodes:
                last = self._last.get((i, node))
                if last is not None and now - last < rule.hold_s / 2:
                    continue
                self._last[(i, node)] = now
                self._seq += 1
                out.append((rule, CommandRequest(
                    command_id=f"local-boost-{rule.camera}-{rule.zone}-{node}-{int(local_time.timestamp())}-{self._seq}",
                    node_id=node, name="boost",
                    args=boost_args(rule.level, rule.hold_s),
                    timeout_s=self.timeout_s, source="local")))
        return out

    def fire(self, requests: list[CommandRequest]) -> None:
        """Submit requests in the background (the caller's loop keeps evaluating meanwhile)."""
        for req in requests:
            self.sent += 1
            task = asyncio.get_running_loop().create_task(self._send(req))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, req: CommandRequest) -> None:
        result = await self._submit(req)
        self.results[result.status.value] = self.results.get(result.status.value, 0) + 1
        if result.status is not CommandStatus.OK:
            log.warning("boost for node %s: %s %s", req.node_id, result.status.value, result.detail)

    async def drain(self) -> None:
        """Wait for commands in flight (tests, shutdown)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
