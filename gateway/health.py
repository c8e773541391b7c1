"""A local health endpoint: ``/metrics`` in the Prometheus text format and ``/status`` as JSON.

It binds to loopback by default (``[health] listen = "127.0.0.1:9108"``) and serves only GET of those two
paths; it never exposes keys or payloads. The agent supplies the figures through two callables so this
module knows nothing about links or outboxes::

    server = HealthServer(collect=agent.metrics, status=agent.status)
    async with server.serving("127.0.0.1", 9108):
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Metric:
    """One metric family: name, type (``gauge``/``counter``), help text and its samples."""

    name: str
    kind: str
    help: str
    samples: Sequence[tuple[Mapping[str, str], float]] = field(default_factory=list)

    @classmethod
    def single(cls, name: str, kind: str, help: str, value: float) -> Metric:
        return cls(name, kind, help, [({}, value)])


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def render_prometheus(metrics: Iterable[Metric]) -> str:
    """Render metric families in the Prometheus text exposition format (version 0.0.4)."""
    lines: list[str] = []
    for m in metrics:
        lines.append(f"# HELP {m.name} {m.help}")
        lines.append(f"# TYPE {m.name} {m.kind}")
        for labels, value in m.samples:
            if labels:
                text = ",".join(f'{k}="{_escape_label(str(v))}"' for k, v in sorted(labels.items()))
                lines.append(f"{m.name}{{{text}}} {_format_value(value)}")
            else:
                lines.append(f"{m.name} {_format_value(value)}")
    return "\n".join(lines) + "\n"


class HealthServer:
    """Serves ``/metrics`` and ``/status`` (and ``/healthz``: 200 or 503 from ``status()["healthy"]``)."""

    def __init__(self, collect: Callable[[], Iterable[Metric]], status: Callable[[], Mapping[str, Any]]) -> None:
        self._collect = collect
        self._status = status
        self.requests = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            line = request.split(b"\r\n", 1)[0].decode("latin-1")
            parts = line.split()
            method, target = (parts[0], parts[1]) if len(parts) >= 2 else ("", "")
            path = target.split("?", 1)[0]
            self.requests += 1
            if method not in ("GET", "HEAD"):
                code, ctype, body = 405, "text/plain", b"only GET\n"
            elif path == "/metrics":
                code, ctype = 200, "text/plain; version=0.0.4; charset=utf-8"
                body = render_prometheus(self._collect()).encode()
            elif path == "/status":
                code, ctype = 200, "application/json"
                body = json.dumps(self._status(), indent=1, sort_keys=True, default=str).encode() + b"\n"
            elif path == "/healthz":
                healthy = bool(self._status().get("healthy", False))
                code, ctype, body = (200 if healthy else 503), "text/plain", (b"ok\n" if healthy else b"unhealthy\n")
            else:
                code, ctype, body = 404, "text/plain", b"try /metrics or /status\n"
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}[code]
            head = (
                f"HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except Exception:  # a broken figure must not take the endpoint (or the agent) down
            log.exception("health endpoint failed to answer")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @contextlib.asynccontextmanager
    async def serving(self, host: str, port: int) -> AsyncIterator[asyncio.Server]:
        """Listen on ``host:port`` (port 0: any free port, see ``server.sockets``) until the block ends."""
        server = await asyncio.start_server(self._handle, host, port)
        try:
            yield server
        finally:
            server.close()
            await server.wait_closed()
