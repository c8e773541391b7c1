"""The uplink against a real mosquitto: birth/death, priorities, outage without loss, TLS, commands."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway.broker import LocalBroker, make_test_pki
from gateway.commands import CommandRequest
from gateway.events import Event, Priority
from gateway.ops.consumer import Consumer
from gateway.outbox import Outbox
from gateway.uplink import Uplink, UplinkSettings, UplinkState
from gateway.uplink.client import backoff_delay

pytestmark = pytest.mark.timeout(60)


class Collector:
    """An operations-center subscriber that feeds a Consumer and keeps every record."""

    def __init__(self, port: int, *, client_id: str = "ops-test", persistent: bool = False, **kw: Any) -> None:
        self.consumer = Consumer("cityedge")
        self.records: list[dict[str, Any]] = []
        self.raw: list[tuple[str, bytes]] = []
        self.client = aiomqtt.Client(
            "127.0.0.1", port, identifier=client_id, clean_session=not persistent,
            protocol=aiomqtt.ProtocolVersion.V311, **kw,
        )
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def __aenter__(self) -> Collector:
        await self.client.__aenter__()
        await self.client.subscribe("cityedge/#", qos=1)
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await self._task
        with contextlib.suppress(aiomqtt.MqttError):
            await self.client.__aexit__(None, None, None)

    async def _run(self) -> None:
        async for m in self.client.messages:
            payload = bytes(m.payload) if isinstance(m.payload, bytes | bytearray) else b""
            self.raw.append((str(m.topic), payload))
            self.records.extend(self.consumer.feed(str(m.topic), payload))
            self._changed.set()

    def events(self, **match: Any) -> list[dict[str, Any]]:
        return [r for r in self.records if r["type"] == "event" and all(r.get(k) == v for k, v in match.items())]

    def states(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["type"] == "state"]

    async def wait(self, predicate: Any, timeout: float = 10.0) -> None:
        async def loop() -> None:
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(loop(), timeout)


@pytest.fixture(scope="module")
def broker() -> Any:
    with LocalBroker(persistence=True) as b:
        yield b


async def until(cond: Any, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


def settings(url: str, **kw: Any) -> UplinkSettings:
    base: dict[str, Any] = {"url": url, "gateway_id": "gw1", "site": "s1", "backoff_min_s": 0.1,
                            "backoff_max_s": 0.5, "batch_ms": 5}
    base.update(kw)
    return UplinkSettings(**base)


def telemetry(n: int, node: int = 17, origin: str | None = None) -> Event:
    return Event(f"node:{node}", "telemetry", Priority.TELEMETRY,
                 {"seq": n, "records": [{"lux": 12.5, "power": 35.2}]}, origin=origin or f"{node}:1:{n}")


@contextlib.asynccontextmanager
async def outbox_at(path: Path) -> AsyncIterator[Outbox]:
    async with Outbox(path) as ob:
        yield ob


async def test_birth_priorities_and_ack_after_puback(broker: LocalBroker, tmp_path: Path) -> None:
    nodes = [{"id": 17, "name": "lamp-17", "role": "streetlight", "lat": 52.52, "lon": 13.405}]
    async with Collector(broker.port) as ops, Outbox(tmp_path / "ob.db") as ob:
        # queued before the uplink starts: 3 telemetry batches, then one alarm, one fault
        await ob.put_many(telemetry(i) for i in range(1200))
        await ob.put(Event("node:17", "event", Priority.ALARM, {"name": "spo2_low", "state": "raised"}))
        await ob.put(Event("node:17", "event", Priority.FAULT, {"name": "lamp_failure", "state": "raised"}))
        async with Uplink(settings(broker.url), ob, nodes=lambda: nodes) as up:
            await up.wait_online(5)
            await ops.wait(lambda: len(ops.events()) == 1202)
            await until(lambda: ob.total == 0)  # everything PUBACKed is deleted from the outbox
            assert up.stats.events == 1202 and up.stats.protocol == "5"
            # a batch arriving twice (the gateway resent it because the PUBACK was lost) is dropped
            topic, payload = next((t, p) for t, p in ops.raw if t.endswith("/ev/telemetry"))
            await ops.client.publish(topic, payload, qos=1)
            await ops.wait(lambda: ops.consumer.stats.duplicates > 0)
            assert len(ops.events()) == 1202
        await ops.wait(lambda: ops.states()[-1]["online"] is False)  # the orderly death after aclose()
        lanes = [r["lane"] for r in ops.events()]
        assert lanes[:2] == ["alarm", "fault"], "alarms and faults overtake queued telemetry"
        assert [r["seq"] for r in ops.events(lane="telemetry")] == list(range(1, 1201))
        assert ops.consumer.stats.missing == 0 and ops.consumer.stats.duplicates == 500
        births = [s for s in ops.states() if s["online"]]
        assert births and births[0]["bdSeq"] >= 1 and births[0]["nodes"] == 1
        assert ops.states()[-1]["online"] is False and ops.states()[-1]["reason"] == "shutdown"
        feature = ops.consumer.geojson()["features"][0]
        assert feature["geometry"]["coordinates"] == [13.405, 52.52]
        assert feature["properties"]["alarms"] == ["lamp_failure", "spo2_low"]
    # the state is retained: a late subscriber learns it at once
    async with Collector(broker.port, client_id="late") as late:
        await late.wait(lambda: bool(late.states()))
        assert late.states()[0]["online"] is False


async def test_outage_under_load_loses_nothing(tmp_path: Path) -> None:
    with LocalBroker(persistence=True) as broker:
        async with Outbox(tmp_path / "ob.db") as ob, Uplink(settings(broker.url), ob) as up:
            async with Collector(broker.port, client_id="ops-outage", persistent=True) as ops:
                await up.wait_online(5)
                await ob.put_many(telemetry(i) for i in range(500))
                await ops.wait(lambda: len(ops.events()) == 500)
            broker.stop()  # the operations center's broker goes away under load
            for i in range(500, 3000, 100):
                await ob.put_many(telemetry(j) for j in range(i, i + 100))
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)
            assert up.state is not UplinkState.ONLINE
            assert ob.total == 2500, "buffered on disk while the broker is down"
            broker.start()
            async with Collector(broker.port, client_id="ops-outage", persistent=True) as ops2:
                ops2.consumer = ops.consumer  # the same operations center, reconnected
                await up.wait_online(10)
                await ops2.wait(lambda: ops.consumer.stats.events >= 3000, timeout=20)
                await until(lambda: ob.total == 0)
            assert up.stats.connects == 2
            assert ops.consumer.stats.missing == 0, "a gap: something was lost"
            assert ops.consumer.stats.events == 3000
            assert ops.consumer.stats.restarts == 1, "the new bdSeq shows the reconnect"


async def test_tls_client_certificate_and_password(tmp_path: Path) -> None:
    pki = make_test_pki(tmp_path / "pki")
    acl = "user gw1\ntopic readwrite cityedge/s1/gw1/#\n"
    with LocalBroker(tls=pki, users={"gw1": "correct horse"}, acl=acl) as broker:
        url = f"mqtts://localhost:{broker.port}"
        tls = {"ca_file": pki.ca_cert, "cert_file": pki.client_cert, "key_file": pki.client_key}
        async with Outbox(tmp_path / "ob.db") as ob:
            async with Uplink(settings(url, username="gw1", password="wrong", **tls), ob) as bad:
                await asyncio.sleep(0.8)
                assert bad.state is not UplinkState.ONLINE and "authori" in bad.stats.last_error.lower()
            no_cert = settings(url, username="gw1", password="correct horse", ca_file=pki.ca_cert)
            async with Uplink(no_cert, ob) as anon:
                await asyncio.sleep(0.8)
                assert anon.state is not UplinkState.ONLINE
            await ob.put(telemetry(1))
            async with Uplink(settings(url, username="gw1", password="correct horse", **tls), ob) as up:
                await up.wait_online(5)
                await until(lambda: ob.total == 0)
                assert up.stats.events == 1


async def test_commands_authorised_parsed_and_answered(broker: LocalBroker, tmp_path: Path) -> None:
    received: list[CommandRequest] = []

    async def on_command(req: CommandRequest) -> None:
        received.append(req)

    base = "cityedge/s1/gw1/cmd"
    s = settings(broker.url, allowed_commands=frozenset({"dim", "ping"}))
    async with Collector(broker.port, client_id="ops-cmd") as ops, Outbox(tmp_path / "ob.db") as ob:
        async with Uplink(s, ob, on_command=on_command) as up:
            await up.wait_online(5)
            births = up.stats.births
            pub = ops.client.publish
            await pub(f"{base}/17/dim", json.dumps({"id": "c-1", "args": {"level": 40}, "timeout_s": 5}), qos=1)
            await pub(f"{base}/17/reboot", json.dumps({"id": "c-2"}), qos=1)  # not in the allow list
            await pub(f"{base}/17/dim", b"\x01\x02not a map", qos=1)  # no id: counted, logged
            await pub(f"{base}/abc/ping", json.dumps({"id": "c-3"}), qos=1)
            await pub(f"{base}/17/ping", json.dumps({"id": "c-4", "expires": 1000}), qos=1)
            await pub(f"{base}/gw/rebirth", json.dumps({"id": "c-5"}), qos=1)
            await pub("cityedge/s1/other-gw/cmd/17/dim", json.dumps({"id": "c-6"}), qos=1)  # not ours
            await ops.wait(lambda: len(ops.events(kind="cmd_status")) == 4)
            await asyncio.sleep(0.2)
        assert [(r.command_id, r.node_id, r.name, dict(r.args), r.timeout_s) for r in received] == [
            ("c-1", 17, "dim", {"level": 40}, 5.0)
        ]
        statuses = {r["body"]["command_id"]: r["body"]["status"] for r in ops.events(kind="cmd_status")}
        assert statuses == {"c-2": "rejected", "c-3": "invalid", "c-4": "rejected", "c-5": "ok"}
        assert {r["lane"] for r in ops.events(kind="cmd_status")} == {"ack"}
        assert up.stats.births == births + 1, "gw/rebirth publishes the birth again"
        assert up.stats.commands_rejected == 4


async def test_mqtt_311_and_json_format(broker: LocalBroker, tmp_path: Path) -> None:
    async with Collector(broker.port, client_id="ops-311") as ops, Outbox(tmp_path / "ob.db") as ob:
        async with Uplink(settings(broker.url, protocol="3.1.1", format="json", gateway_id="gw2"), ob) as up:
            await up.wait_online(5)
            await ob.put_many(telemetry(i) for i in range(10))
            await ops.wait(lambda: len(ops.events(gw="gw2")) == 10)
            assert up.stats.protocol == "3.1.1"
        payloads = [p for t, p in ops.raw if "/gw2/ev/" in t]
        assert payloads and all(p.startswith(b"{") for p in payloads)


CRASHER = r"""
import asyncio, sys
from gateway.outbox import Outbox
from gateway.uplink import Uplink, UplinkSettings

async def main():
    async with Outbox(sys.argv[2]) as ob:
        up = Uplink(UplinkSettings(url=sys.argv[1], gateway_id="gw3", site="s1", keepalive_s=5), ob)
        up.start()
        await up.wait_online(10)
        print("ONLINE", up.stats.bd_seq, flush=True)
        await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_killed_gateway_leaves_a_death_and_comes_back_with_a_new_bdseq(
    broker: LocalBroker, tmp_path: Path
) -> None:
    async with Collector(broker.port, client_id="ops-crash") as ops:
        seen: list[int] = []
        for _ in range(2):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", CRASHER, broker.url, str(tmp_path / "ob.db"), stdout=subprocess.PIPE
            )
            assert proc.stdout is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode().split()
            assert line[0] == "ONLINE"
            seen.append(int(line[1]))
            proc.send_signal(signal.SIGKILL)  # no orderly goodbye: the broker publishes the will
            await proc.wait()
            await ops.wait(lambda: any(s["gw"] == "gw3" and not s["online"] and s["bdSeq"] == seen[-1]
                                       for s in ops.states()))
        assert seen[1] == seen[0] + 1, "bdSeq is persistent and counts sessions"
        gw3 = [s for s in ops.states() if s["gw"] == "gw3"]
        assert [s["online"] for s in gw3] == [True, False, True, False]
        assert gw3[2].get("reconnected") is True


def test_backoff_is_capped_exponential_with_jitter() -> None:
    import random

    rng = random.Random(7)
    delays = [backoff_delay(n, 0.5, 30.0, rng) for n in range(12)]
    assert 0.25 <= delays[0] <= 0.5
    assert all(15.0 <= d <= 30.0 for d in delays[7:]), "capped at 30 s, jittered over its upper half"
    assert len({round(d, 6) for d in delays[7:]}) == 5, "jitter spreads reconnecting gateways"


class V311OnlyProxy:
    """A stand-in for a broker that speaks only MQTT 3.1.1, in front of the real mosquitto.

    mosquitto cannot be configured to refuse MQTT 5, so this proxy reads each CONNECT: protocol level 5
    gets the 3.1.1 refusal "unacceptable protocol version" (CONNACK return code 1), anything else is
    relayed byte for byte to the real broker.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.refused = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> V311OnlyProxy:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readexactly(1)
        length, mult, raw = 0, 1, b""
        while True:
            b = await reader.readexactly(1)
            raw += b
            length += (b[0] & 0x7F) * mult
            mult *= 128
            if not b[0] & 0x80:
                break
        body = await reader.readexactly(length)
        level = body[2 + int.from_bytes(body[:2], "big")]
        if level == 5:
            self.refused += 1
            writer.write(b"\x20\x02\x00\x01")
            await writer.drain()
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        up_writer.write(head + raw + body)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_falls_back_to_mqtt_311_when_the_broker_refuses_5(broker: LocalBroker, tmp_path: Path) -> None:
    async with V311OnlyProxy(broker.port) as proxy, Collector(broker.port, client_id="ops-fb") as ops:
        async with Outbox(tmp_path / "ob.db") as ob, Uplink(
            settings(f"mqtt://127.0.0.1:{proxy.port}", gateway_id="gw-old"), ob
        ) as up:
            await up.wait_online(10)
            await ob.put(telemetry(1))
            await ops.wait(lambda: len(ops.events(gw="gw-old")) == 1)
        assert proxy.refused == 1 and up.stats.protocol == "3.1.1"


async def test_quota_drops_show_up_as_gaps_and_never_touch_alarms(broker: LocalBroker, tmp_path: Path) -> None:
    async with Collector(broker.port, client_id="ops-quota") as ops, Outbox(tmp_path / "ob.db",
                                                                            quota_bytes=20_000) as ob:
        ops.consumer.from_start = True  # this operations center has seen the gateway since its outbox began
        # a long outage: far more than the quota arrives before the uplink can send anything
        for i in range(0, 2000, 100):
            await ob.put_many(telemetry(j) for j in range(i, i + 100))
            await ob.put(Event("node:17", "event", Priority.ALARM, {"name": "spo2_low", "seq": i}, origin=f"a{i}"))
        dropped = ob.stats().dropped[Priority.TELEMETRY]
        assert dropped > 1000
        async with Uplink(settings(broker.url, gateway_id="gw-q"), ob) as up:
            await up.wait_online(5)
            await until(lambda: ob.total == 0)
            await ops.wait(lambda: len(ops.events(gw="gw-q")) == 2020 - dropped)
        gaps = [r for r in ops.records if r["type"] == "gap" and r["gw"] == "gw-q"]
        assert sum(g["missing"] for g in gaps) == dropped, "every dropped event is a reported gap"
        assert all(g["lane"] == "telemetry" for g in gaps)
        assert len(ops.events(gw="gw-q", lane="alarm")) == 20, "alarms are never dropped"
