"""The uplink topic layout (docs/uplink.md, "Topics"). One place builds and parses every topic.

    {prefix}/{site}/{gateway}/state                 retained JSON: birth (online) and death (offline, the will)
    {prefix}/{site}/{gateway}/ev/{lane}             event batches; lane = alarm|fault|ack|telemetry|vision
    {prefix}/{site}/{gateway}/cmd/{target}/{name}   commands from the operations center; target = node id | gw
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.events import Priority

_SEGMENT = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def check_segment(what: str, value: str) -> str:
    """A site or gateway id must be one safe topic level (no '/', '+', '#', spaces)."""
    if not _SEGMENT.match(value):
        raise ValueError(f"{what} {value!r} must be 1-64 characters of A-Z a-z 0-9 _ . : -")
    return value


@dataclass(frozen=True)
class Topics:
    """Topics of one gateway."""

    prefix: str
    site: str
    gateway: str

    def __post_init__(self) -> None:
        check_segment("site", self.site)
        check_segment("gateway id", self.gateway)
        if not self.prefix or any(c in self.prefix for c in "+#") or self.prefix.startswith("/"):
            raise ValueError(f"topic prefix {self.prefix!r} must not be empty, contain + or #, or start with /")

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.site}/{self.gateway}"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    def events(self, priority: Priority) -> str:
        return f"{self.base}/ev/{priority.lane}"

    @property
    def commands(self) -> str:
        """The subscription filter for this gateway's commands."""
        return f"{self.base}/cmd/+/+"

    def command(self, target: str, name: str) -> str:
        return f"{self.base}/cmd/{target}/{name}"

    def parse_command(self, topic: str) -> tuple[str, str] | None:
        """``(target, name)`` for one of *our* command topics, else None (not authorised by topic)."""
        head = f"{self.base}/cmd/"
        if not topic.startswith(head):
            return None
        rest = topic[len(head) :].split("/")
        if len(rest) != 2 or not all(_SEGMENT.match(p) for p in rest):
            return None
        return rest[0], rest[1]


@dataclass(frozen=True)
class ParsedTopic:
    """What a consumer learns from a topic."""

    site: str
    gateway: str
    what: str  # "state" | "ev" | "cmd"
    lane: Priority | None = None


def parse_topic(prefix: str, topic: str) -> ParsedTopic | None:
    """Parse a state or event topic under ``prefix`` (for consumers); None if it is not one of ours."""
    head = prefix.rstrip("/") + "/"
    if not topic.startswith(head):
        return None
    parts = topic[len(head) :].split("/")
    if len(parts) == 3 and parts[2] == "state":
        return ParsedTopic(parts[0], parts[1], "state")
    if len(parts) == 4 and parts[2] == "ev":
        try:
            return ParsedTopic(parts[0], parts[1], "ev", Priority.from_lane(parts[3]))
        except ValueError:
            return None
    if len(parts) == 5 and parts[2] == "cmd":
        return ParsedTopic(parts[0], parts[1], "cmd")
    return None
