"""The example operations-center broker (deploy/mosquitto/) on a real mosquitto, with a real gateway uplink.

Only the paths, the port (a free loopback one instead of 8883) and the log destination are changed.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway.broker import LocalBroker, TlsFiles, free_port, make_test_pki
from gateway.commands import CommandRequest
from gateway.events import Event, Priority
from gateway.outbox import Outbox
from gateway.uplink import Uplink, UplinkSettings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "mosquitto"
pytestmark = pytest.mark.timeout(60)


def example_config(tmp: Path, pki: TlsFiles, port: int) -> str:
    conf = (DEPLOY / "ops-center.conf").read_text()
    (tmp / "acl").write_text((DEPLOY / "acl").read_text())
    conf = conf.replace("/etc/mosquitto/cityedge/ca.crt", str(pki.ca_cert))
    conf = conf.replace("/etc/mosquitto/cityedge/server.crt", str(pki.server_cert))
    conf = conf.replace("/etc/mosquitto/cityedge/server.key", str(pki.server_key))
    conf = conf.replace("/etc/mosquitto/cityedge/", f"{tmp}/").replace("/var/lib/mosquitto/", f"{tmp}/")
    conf = conf.replace("log_dest syslog", "").replace("listener 8883", f"listener {port} 127.0.0.1")
    settings = [line for line in conf.splitlines() if not line.startswith("#")]
    assert not any("/etc/" in line or "/var/" in line for line in settings)
    return conf


def client(port: int, user: str, pki: TlsFiles, ident: str) -> aiomqtt.Client:
    return aiomqtt.Client("localhost", port, username=user, password=f"pw-{user}", identifier=ident,
                          tls_context=pki.client_context(), protocol=aiomqtt.ProtocolVersion.V5)


async def test_example_broker_tls_passwords_and_acl(tmp_path: Path) -> None:
    pki = make_test_pki(tmp_path / "pki", client_cn="gw1")
    port = free_port()
    users = {"gw1": "pw-gw1", "gw2": "pw-gw2", "ops": "pw-ops"}
    # LocalBroker writes the password file; the example config names it passwd in the same directory
    broker = LocalBroker(port=port, users=users, workdir=tmp_path, config=example_config(tmp_path, pki, port))
    with broker:
        seen: list[tuple[str, Any]] = []
        got_commands: list[CommandRequest] = []

        async def on_command(req: CommandRequest) -> None:
            got_commands.append(req)

        async with client(port, "ops", pki, "ops") as ops, Outbox(tmp_path / "ob.db") as ob:
            await ops.subscribe("cityedge/#", qos=1)

            async def collect() -> None:
                async for m in ops.messages:
                    seen.append((str(m.topic), m.payload))

            collector = asyncio.create_task(collect())
            settings = UplinkSettings(url=f"mqtts://localhost:{port}", gateway_id="gw1", site="s1",
                                      username="gw1", password="pw-gw1", ca_file=pki.ca_cert,
                                      cert_file=pki.client_cert, key_file=pki.client_key, batch_ms=0)
            async with Uplink(settings, ob, on_command=on_command) as up:
                await up.wait_online(10)
                await ob.put(Event("node:17", "telemetry", Priority.TELEMETRY, {"records": [{"lux": 1.5}]}))
                # a (compromised) gateway tries to speak for another gateway and to send commands
                async with client(port, "gw2", pki, "gw2") as rogue:
                    await rogue.publish("cityedge/s1/gw1/ev/alarm", b"forged", qos=1)
                    await rogue.publish("cityedge/s1/gw1/cmd/17/reboot", json.dumps({"id": "x"}), qos=1)
                    await rogue.publish("cityedge/s1/gw2/ev/alarm", b"own topic", qos=1)
                await ops.publish("cityedge/s1/gw1/cmd/17/boost", json.dumps({"id": "c-1", "args": {"level": 800}}),
                                  qos=1)
                for _ in range(200):
                    if got_commands and any("/gw1/ev/telemetry" in t for t, _ in seen):
                        break
                    await asyncio.sleep(0.02)
            collector.cancel()
        topics = [t for t, _ in seen]
        assert "cityedge/s1/gw1/ev/telemetry" in topics and "cityedge/s1/gw1/state" in topics
        assert "cityedge/s1/gw2/ev/alarm" in topics, "a gateway may publish its own events"
        assert not any(p == b"forged" for _, p in seen), "the ACL let a gateway publish as another one"
        assert [c.command_id for c in got_commands] == ["c-1"], "only the operations center may command"
