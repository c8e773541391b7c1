"""The systemd notify protocol, spoken directly over ``$NOTIFY_SOCKET``, and a watchdog that means it.

systemd (``Type=notify``) passes the path of a datagram socket in ``NOTIFY_SOCKET``; the service sends
``READY=1`` when it is up, ``STATUS=...`` lines for ``systemctl status``, and — with ``WatchdogSec=`` —
``WATCHDOG=1`` at least every ``WATCHDOG_USEC`` microseconds or systemd kills and restarts it.

A watchdog ping that a timer sends regardless of the agent's health only proves the event loop turns. So
:class:`Watchdog` pings only while every registered critical loop (each serial reader, the ingest/outbox
flusher, the uplink, vision when enabled) has reported progress recently through its :class:`Heartbeat`.
A loop that stalls (a hung write, a deadlocked lock, a task that died) stops the pings and systemd
restarts the agent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify datagrams; does nothing when not started by systemd (no ``NOTIFY_SOCKET``)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None = None
        if path.startswith("@"):  # abstract namespace socket
            self._address = b"\0" + path[1:].encode()
        elif path.startswith("/"):
            self._address = path
        self._sock: socket.socket | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        self.watchdog_usec: int | None = int(usec) if usec.isdigit() and int(usec) > 0 else None
        if pid and pid.isdigit() and int(pid) != os.getpid():
            self.watchdog_usec = None  # the watchdog is meant for another process (e.g. a wrapper)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *lines: str) -> bool:
        """Send ``lines`` (e.g. ``"READY=1"``, ``"STATUS=..."``) in one datagram. True if sent."""
        if self._address is None:
            return False
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)
        payload = "\n".join(line.replace("\n", " ") for line in lines).encode("utf-8", "replace")
        try:
            self._sock.sendto(payload, self._address)
            return True
        except OSError as exc:  # systemd gone or socket full: never let this kill the agent
            log.debug("sd_notify failed: %s", exc)
            return False

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={status}")

    def stopping(self, status: str = "stopping") -> bool:
        return self.notify("STOPPING=1", f"STATUS={status}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


@dataclass
class Heartbeat:
    """Progress of one critical loop. The loop calls :meth:`beat` every time it completes a turn."""

    name: str
    last: float = field(default_factory=time.monotonic)
    beats: int = 0

    def beat(self) -> None:
        self.last = time.monotonic()
        self.beats += 1

    def age(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.last


class Watchdog:
    """Sends ``WATCHDOG=1`` only while every registered loop is making progress.

    ``stall_after_s`` is how long a loop may go without a beat. The ping interval is half of
    ``WATCHDOG_USEC`` (or ``interval_s`` when given). The task also measures the event loop's own lag.
    """

    def __init__(self, notifier: Notifier, *, stall_after_s: float = 30.0, interval_s: float | None = None) -> None:
        self.notifier = notifier
        self.stall_after_s = stall_after_s
        if interval_s is None:
            interval_s = notifier.watchdog_usec / 2e6 if notifier.watchdog_usec else 1.0
        self.interval_s = interval_s
        self.heartbeats: dict[str, Heartbeat] = {}
        self.pings = 0
        self.withheld = 0
        self.loop_lag_s = 0.0
        self.max_loop_lag_s = 0.0
        self._stalled: tuple[str, ...] = ()

    def register(self, name: str) -> Heartbeat:
        """A new critical loop; returns its heartbeat (replacing any earlier one of that name)."""
        hb = self.heartbeats[name] = Heartbeat(name)
        return hb

    def unregister(self, name: str) -> None:
        self.heartbeats.pop(name, None)

    def stalled(self, now: float | None = None) -> list[str]:
        """Names of loops without a beat for longer than ``stall_after_s``."""
        now = time.monotonic() if now is None else now
        return sorted(name for name, hb in self.heartbeats.items() if hb.age(now) > self.stall_after_s)

    def loop_ages(self) -> dict[str, float]:
        now = time.monotonic()
        return {name: hb.age(now) for name, hb in self.heartbeats.items()}

    def check_and_ping(self) -> bool:
        """One watchdog decision: ping if nothing is stalled. Returns whether it pinged."""
        stalled = tuple(self.stalled())
        if stalled != self._stalled:
            if stalled:
                log.error("critical loop(s) stalled, withholding watchdog: %s", ", ".join(stalled))
                self.notifier.status(f"STALLED: {', '.join(stalled)}")
            else:
                log.warning("all critical loops progress again")
            self._stalled = stalled
        if stalled:
            self.withheld += 1
            return False
        if self.notifier.watchdog_usec is not None:
            self.notifier.notify("WATCHDOG=1")
        self.pings += 1
        return True

    async def run(self) -> None:
        """Decide every ``interval_s`` until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self.loop_lag_s = max(0.0, loop.time() - expected)
            self.max_loop_lag_s = max(self.max_loop_lag_s, self.loop_lag_s)
            self.check_and_ping()

