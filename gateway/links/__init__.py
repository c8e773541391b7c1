"""Southbound links: where node frames come from and where ACK/TIME/CMD frames go.

Every link delivers raw bytes to the agent with ``on_data(link, data)`` (the agent's per-link ``cewire``
stream decoder splits them into frames) and takes outgoing frames with :meth:`Link.send`. Links supervise
themselves: an unplugged port or a failing read closes the port, waits (capped exponential backoff with
jitter) and opens it again, forever, reporting its :class:`LinkState` and counters.
"""

from gateway.links.base import Link, LinkState, LinkStats
from gateway.links.serial import SerialLink

__all__ = ["Link", "LinkState", "LinkStats", "SerialLink"]
