"""The whole agent in-process: READY over a real notify socket, frames over a pty, /metrics, shutdown flush."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import tty
from pathlib import Path

from cewire import PRIO_HIGH, codes, payloads

from cityedge.manifest import provision
from gateway.agent import Agent
from gateway.config import load_config
from gateway.simnode import SimNode
from gateway.systemd import Notifier


async def http_get(port: int, path: str) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.0\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    return data.decode().partition("\r\n\r\n")[2]


async def test_agent_starts_ingests_reports_and_stops(tmp_path: Path) -> None:
    rec = provision(tmp_path / "nodes.json", node_id=7, role="medical", site="s", lat=0, lon=0, name="bed-7")
    master, slave = os.openpty()
    tty.setraw(slave)
    port = os.ttyname(slave)
    os.close(slave)
    os.set_blocking(master, False)
    (tmp_path / "gw.toml").write_text(f"""
[gateway]
id = "gw-test"
state_dir = "state"
[[serial]]
name = "ward"
port = "{port}"
reopen_min_s = 0.05
[nodes]
manifest = "nodes.json"
[health]
listen = "127.0.0.1:0"
[watchdog]
stall_after_s = 5
""")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.setblocking(False)
    config = load_config(tmp_path / "gw.toml")
    agent = Agent(config, notifier=Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify")}), install_signals=False)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        await asyncio.wait_for(agent.ready.wait(), 10)
        msg = notify.recv(1000).decode()
        assert msg.startswith("READY=1\nSTATUS=0/1 nodes online, 0/1 serial links open") or "READY=1" in msg
        node = SimNode(7, rec.key, rec.key_id, "medical")
        for _ in range(100):
            if agent.links[0].state.value == "open":
                break
            await asyncio.sleep(0.02)
        os.write(master, node.hello() + node.data({payloads.L_SPO2: 975, payloads.L_HR: 725})
                 + node.event(codes.SPO2_LOW, prio=PRIO_HIGH, value=880, label=payloads.L_SPO2))
        for _ in range(200):
            await asyncio.sleep(0.02)
            try:
                node.receive(os.read(master, 65536))
            except BlockingIOError:
                pass
            if node.pending == 0:
                break
        assert node.pending == 0 and node.times
        assert agent.health_port is not None
        metrics = await http_get(agent.health_port, "/metrics")
        assert 'cityedge_outbox_depth{priority="alarm"} 1' in metrics
        assert "cityedge_frames_accepted_total 3" in metrics
        assert 'cityedge_node_online{node="7"} 1' in metrics
        assert 'cityedge_link_up{link="ward"} 1' in metrics
        assert 'cityedge_loop_lag_seconds{loop="serial:ward"}' in metrics
        status = json.loads(await http_get(agent.health_port, "/status"))
        assert status["healthy"] is True and status["nodes"][0]["name"] == "bed-7"
        assert rec.key.hex() not in json.dumps(status) + metrics  # no secrets in the endpoint
        # a frame that arrives just before shutdown is flushed into the outbox before it closes
        os.write(master, node.data({payloads.L_SPO2: 970}))
        await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        notify.close()
        os.close(master)
    assert agent.ingest is not None and agent.ingest.stats.accepted == 4
    assert agent.outbox is not None and agent.outbox.total >= 4  # + node_state events


async def test_watchdog_stops_when_the_ingest_loop_stalls(tmp_path: Path) -> None:
    """A hung outbox write stalls the ingest loop: WATCHDOG=1 stops and STATUS names the loop."""
    rec = provision(tmp_path / "nodes.json", node_id=8, role="streetlight", site="s", lat=0, lon=0)
    master, slave = os.openpty()
    tty.setraw(slave)
    port = os.ttyname(slave)
    os.close(slave)
    (tmp_path / "gw.toml").write_text(
        f'[gateway]\nid = "gw-wd"\nstate_dir = "state"\n[[serial]]\nname = "bus"\nport = "{port}"\n'
        f'[nodes]\nmanifest = "nodes.json"\n[health]\nlisten = false\n[watchdog]\nstall_after_s = 3\n'
    )
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.setblocking(False)
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "100000"}
    agent = Agent(load_config(tmp_path / "gw.toml"), notifier=Notifier(env), install_signals=False)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))

    def drain() -> list[str]:
        out = []
        while True:
            try:
                out.append(notify.recv(1000).decode())
            except BlockingIOError:
                return out

    try:
        await asyncio.wait_for(agent.ready.wait(), 10)
        await asyncio.sleep(0.5)
        assert "WATCHDOG=1" in drain()
        assert agent.watchdog.interval_s == 0.05
        assert agent.outbox is not None
        hang = asyncio.Event()

        async def hung_put_many(_events: object) -> None:
            await hang.wait()  # a disk that never answers

        agent.outbox.put_many = hung_put_many  # type: ignore[method-assign,assignment]
        node = SimNode(8, rec.key, rec.key_id)
        os.write(master, node.data({payloads.L_LEVEL: 1}))
        msgs: list[str] = []
        for _ in range(100):  # the stall shows 3 s after the last progress
            await asyncio.sleep(0.1)
            msgs += drain()
            if any(m.startswith("STATUS=STALLED:") and "ingest" in m for m in msgs):
                break
        assert any(m.startswith("STATUS=STALLED:") and "ingest" in m for m in msgs), msgs[-5:]
        await asyncio.sleep(0.3)
        assert "WATCHDOG=1" not in drain()
        assert agent.status()["healthy"] is False and "ingest" in agent.status()["stalled"]
        hang.set()
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        notify.close()
        os.close(master)


async def test_agent_runs_vision_when_configured(tmp_path: Path) -> None:
    """[vision] is validated with the rest and its cameras join the watchdog (an absent camera still beats)."""
    (tmp_path / "gw.toml").write_text(
        '[gateway]\nid = "gw-cam"\nstate_dir = "state"\n[health]\nlisten = false\n'
        '[vision]\nenabled = true\n[[vision.camera]]\nname = "north"\nsource = "/dev/video97"\n'
        'reconnect_min_s = 0.1\n'
    )
    agent = Agent(load_config(tmp_path / "gw.toml"), install_signals=False)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        await asyncio.wait_for(agent.ready.wait(), 20)
        await asyncio.sleep(1.5)
        status = agent.status()
        assert "vision:north" in status["loops"] and status["healthy"]
        assert "vision" in status
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
    assert agent.vision is not None
