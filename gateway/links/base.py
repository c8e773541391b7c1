"""What every southbound link has: a name, a state, counters, a way to send."""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class LinkState(enum.StrEnum):
    STARTING = "starting"
    OPEN = "open"  # port open, reading
    BACKOFF = "backoff"  # closed after an error or unplug, waiting to reopen
    STOPPED = "stopped"


@dataclass
class LinkStats:
    bytes_in: int = 0
    bytes_out: int = 0
    opens: int = 0  # successful opens (1 + reconnects)
    open_failures: int = 0  # attempts that could not open the port (absent, busy, no permission)
    disconnects: int = 0  # open port lost (unplug, I/O error)
    restarts: int = 0  # reader crashed on an unexpected exception and was restarted
    dropped_out: int = 0  # outgoing bytes dropped because the port was closed or its buffer full
    last_error: str = ""


class Link(Protocol):
    """A southbound link as the agent sees it."""

    name: str
    stats: LinkStats

    @property
    def state(self) -> LinkState: ...

    def send(self, data: bytes) -> bool:
        """Queue ``data`` (one or more encoded frames) for the node side; False if it was dropped."""
        ...


DataCallback = Callable[["Link", bytes], None]


class Backoff:
    """Capped exponential backoff with full jitter; :meth:`reset` after a success."""

    def __init__(self, low: float, high: float) -> None:
        self.low = low
        self.high = high
        self._next = low

    def next(self) -> float:
        delay = random.uniform(self.low, self._next)
        self._next = min(self.high, self._next * 2)
        return delay

    def reset(self) -> None:
        self._next = self.low
