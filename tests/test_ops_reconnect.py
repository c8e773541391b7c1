"""`cityedge ops tail` outlives its broker: it reconnects, resumes its session, and fails only when it must."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from cityedge.cli import main
from gateway.broker import LocalBroker
from gateway.events import Event, Priority, StoredEvent
from gateway.ops.cli import refused_subscriptions
from gateway.uplink import codec

TOPIC = "cityedge/s1/gw1/ev/telemetry"


def batch(*seqs: int) -> bytes:
    events = [
        StoredEvent(i, seq, Event("node:17", "telemetry", Priority.TELEMETRY, {"seq": seq}))
        for i, seq in enumerate(seqs)
    ]
    return codec.encode_batch("gw1", "e1", events)


async def publish(broker: LocalBroker, *seqs: int) -> None:
    """What the gateway does: one batch at QoS 1."""
    async with aiomqtt.Client(broker.host, broker.port, identifier="gw-test") as client:
        await client.publish(TOPIC, batch(*seqs), qos=1)


async def line_with(stream: asyncio.StreamReader, text: str, timeout: float) -> str:
    """The next line of ``stream`` that contains ``text`` (lines before it are skipped)."""

    async def find() -> str:
        while line := (await stream.readline()).decode():
            if text in line:
                return line
        raise AssertionError(f"{text!r} never came")

    return await asyncio.wait_for(find(), timeout)


@pytest.mark.timeout(30)
async def test_tail_reconnects_after_a_broker_restart_and_loses_nothing(tmp_path: Path) -> None:
    # a broker that keeps sessions across its restart, as an operations center's broker does
    async with LocalBroker(persistence=True, workdir=tmp_path / "broker") as broker:
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cityedge",
            "ops",
            "tail",
            "--broker",
            broker.url,
            "--site",
            "s1",
            "--lanes",
            "telemetry",
            "--count",
            "9",
            "--duration",
            "25",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert proc.stdout is not None and proc.stderr is not None
        try:
            await line_with(proc.stderr, "listening", 10)
            await publish(broker, 1, 2, 3)
            first = [json.loads(await asyncio.wait_for(proc.stdout.readline(), 5)) for _ in range(3)]
            assert [r["seq"] for r in first] == [1, 2, 3]

            await broker.astop()
            lost = await line_with(proc.stderr, "lost the connection", 5)
            await broker.astart()  # same port
            await publish(broker, 4, 5, 6)  # most likely before the tail is back: the broker queues them
            back = await line_with(proc.stderr, "reconnected", 10)
            await publish(broker, 7, 8, 9)
            rc = await asyncio.wait_for(proc.wait(), 10)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        rest = (await proc.stdout.read()).decode().splitlines()
        summary = (await proc.stderr.read()).decode()
    assert rc == 0, summary
    assert time.monotonic() - started < 15
    assert lost.startswith("lost the connection to " + broker.url) and "Traceback" not in summary
    assert back.startswith(f"reconnected to {broker.url} after ") and "subscriptions resumed" in back
    events = first + [json.loads(line) for line in rest]
    assert [r["seq"] for r in events if r["type"] == "event"] == list(range(1, 10)), "each exactly once, in order"
    assert "events 9, duplicates dropped 0, missing 0" in summary


async def test_auth_refusal_fails_at_once_instead_of_retrying(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    password = tmp_path / "password"
    password.write_text("wrong\n")
    async with LocalBroker(users={"ops": "right"}) as broker:
        started = time.monotonic()
        argv = [
            "ops",
            "tail",
            "--broker",
            broker.url,
            "--username",
            "ops",
            "--password-file",
            str(password),
            "--duration",
            "20",
        ]
        rc = await asyncio.to_thread(main, argv)  # retries forever by default: only a refusal ends it early
    err = capsys.readouterr().err
    assert rc == 1 and time.monotonic() - started < 5
    assert f"error: {broker.url} refused the connection: Not authorized" in err
    assert "hint: check --username" in err and "Traceback" not in err


def test_max_retries_gives_up_with_a_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    with LocalBroker() as broker:
        url = broker.url  # nobody listens there any more
    started = time.monotonic()
    rc = main(["ops", "tail", "--broker", url, "--max-retries", "2", "--duration", "20"])
    err = capsys.readouterr().err
    assert rc == 1 and time.monotonic() - started < 5  # backoff 0.5-1 s, then 1-2 s
    assert err.count("cannot connect to") == 1, "one line per kind of failure, not one per attempt"
    assert f"error: gave up after 2 attempts to reconnect to {url}" in err and "Traceback" not in err
    rc = main(["ops", "tail", "--broker", url, "--max-retries", "0"])
    assert rc == 1 and f"error: cannot connect to {url}" in capsys.readouterr().err


def test_bad_retry_arguments_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["ops", "tail", "--broker", "mqtt://127.0.0.1:1", "--max-retries", "-1"])
    assert exit_info.value.code == 2 and "must be 0 or more" in capsys.readouterr().err


def test_refused_subscriptions_are_named() -> None:
    granted = ReasonCode(PacketTypes.SUBACK, "Granted QoS 1")
    refused = ReasonCode(PacketTypes.SUBACK, "Not authorized")
    assert refused_subscriptions(["a/state", "a/ev/alarm"], [granted, granted]) == []
    assert refused_subscriptions(["a/state", "a/ev/alarm"], [granted, refused]) == ["a/ev/alarm (Not authorized)"]
    assert refused_subscriptions(["a/state"], [0x80]) == ["a/state (128)"]  # MQTT 3.1.1's failure code


@pytest.mark.timeout(30)
async def test_sigterm_ends_the_tail_cleanly_with_its_summary() -> None:
    async with LocalBroker() as broker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cityedge",
            "ops",
            "tail",
            "--broker",
            broker.url,
            "--duration",
            "20",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert proc.stderr is not None
        try:
            await line_with(proc.stderr, "listening", 10)
            proc.terminate()  # what systemd does to stop the service
            rc = await asyncio.wait_for(proc.wait(), 5)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        summary = (await proc.stderr.read()).decode()
    assert rc == 0 and "events 0, duplicates dropped 0" in summary


@pytest.mark.timeout(40)
async def test_two_tails_with_one_client_id_are_told_why_they_keep_dropping() -> None:
    # MQTT gives a client id's session to whoever connected last: two consumers started with the same
    # --client-id take it from each other in turn; the tail says what may be going on instead of only flapping
    async with LocalBroker() as broker:
        argv = [sys.executable, "-m", "cityedge", "ops", "tail", "--broker", broker.url, "--client-id", "ops-desk"]
        argv += ["--lanes", "telemetry", "--duration", "30"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        procs = [
            await asyncio.create_subprocess_exec(*argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            for _ in range(2)
        ]
        try:
            hint = "if another consumer uses --client-id ops-desk"
            waits = [asyncio.ensure_future(line_with(p.stderr, hint, 30)) for p in procs if p.stderr is not None]
            done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for w in pending:
                w.cancel()
            line = done.pop().result()  # AssertionError or TimeoutError if no tail ever said it
            assert "give each consumer its own id" in line
        finally:
            for p in procs:
                if p.returncode is None:
                    p.kill()
                await p.wait()
