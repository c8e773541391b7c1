"""The health endpoint over real HTTP on loopback: Prometheus text, JSON status, healthz."""

from __future__ import annotations

import asyncio
import json

from gateway.health import HealthServer, Metric, render_prometheus


def test_prometheus_rendering_escapes_labels_and_formats_values() -> None:
    text = render_prometheus(
        [
            Metric("cityedge_outbox_depth", "gauge", "events waiting", [({"priority": "alarm"}, 3)]),
            Metric.single("cityedge_loop_lag_seconds", "gauge", "event loop lag", 0.0025),
            Metric("cityedge_node_last_seen_seconds", "gauge", "age", [({"node": 'a"b\\c'}, float("inf"))]),
        ]
    )
    assert "# TYPE cityedge_outbox_depth gauge\ncityedge_outbox_depth{priority=\"alarm\"} 3\n" in text
    assert "cityedge_loop_lag_seconds 0.0025\n" in text
    assert 'cityedge_node_last_seen_seconds{node="a\\"b\\\\c"} +Inf\n' in text


async def get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


async def test_endpoint_serves_metrics_status_and_healthz() -> None:
    healthy = [True]
    server = HealthServer(
        collect=lambda: [Metric.single("cityedge_frames_in_total", "counter", "frames", 42)],
        status=lambda: {"healthy": healthy[0], "gateway": "gw1"},
    )
    async with server.serving("127.0.0.1", 0) as srv:
        port = srv.sockets[0].getsockname()[1]
        code, body = await get(port, "/metrics")
        assert code == 200 and "cityedge_frames_in_total 42" in body
        code, body = await get(port, "/status")
        assert code == 200 and json.loads(body) == {"healthy": True, "gateway": "gw1"}
        assert (await get(port, "/healthz"))[0] == 200
        healthy[0] = False
        assert (await get(port, "/healthz"))[0] == 503
        assert (await get(port, "/secret"))[0] == 404
