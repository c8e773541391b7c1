"""``cityedge ops ...``: tools for the operations center side of the uplink.

``cityedge ops tail --broker mqtt://host:port [--site S] [--json-out FILE] [--geojson FILE]`` subscribes to
the uplink topics, decodes batches (CBOR or JSON), drops duplicates, reports gaps and prints one JSON line
per event (or writes them to a file), and keeps a GeoJSON file of the site's nodes up to date.

It runs for weeks: when the broker goes away it reconnects by itself (capped exponential backoff with
jitter) and resumes its MQTT session, so the QoS 1 batches the broker queued meanwhile still arrive; a
refusal that retrying cannot fix (bad credentials, not authorised) ends it with an error instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import ssl
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from cityedge.errors import CityedgeError
from gateway.ops.consumer import Consumer
from gateway.uplink.client import backoff_delay

RETRY_MIN_S = 1.0  # reconnection n waits a random time in [c/2, c], c = min(RETRY_MAX_S, RETRY_MIN_S * 2**n)
RETRY_MAX_S = 30.0
STABLE_S = 10.0  # a connection that lasted this long starts the backoff from the beginning again
KEEPALIVE_S = 30  # a silently dead connection is noticed within 1.5 x this
SESSION_EXPIRY_S = 3600  # default --session-expiry
FLAPS_BEFORE_HINT = 3  # connections in a row lost within STABLE_S before the hint on a shared --client-id

# CONNACK reason codes worth retrying: the broker is there but cannot take us now (MQTT 5 §3.2.2.2.; 3 is
# MQTT 3.1.1's "server unavailable"). Every other refusal (bad user name or password, not authorised, banned,
# client id not valid, protocol) would be refused again: the tail fails at once.
RETRYABLE_CONNACK = frozenset({3, 136, 137, 151, 159})


def register(subparsers: Any) -> None:
    """Add ``ops`` and its subcommands to the ``cityedge`` command."""
    ops = subparsers.add_parser("ops", help="operations-center tools (reference uplink consumer)")
    sub = ops.add_subparsers(dest="ops_command", metavar="OPS_COMMAND")
    tail = sub.add_parser("tail", help="subscribe to gateways' uplink, print events as JSON lines, export GeoJSON")
    tail.add_argument("--broker", required=True, help="mqtt://host:port or mqtts://host:port")
    tail.add_argument("--site", help="only this site")
    tail.add_argument("--gateway", help="only this gateway id")
    tail.add_argument("--prefix", default="cityedge", help="topic prefix (default: cityedge)")
    tail.add_argument("--json-out", type=Path, help="append JSON lines to this file instead of stdout")
    tail.add_argument("--geojson", type=Path, help="keep this GeoJSON file of the nodes up to date")
    tail.add_argument("--username")
    tail.add_argument("--password-file", type=Path, help="file holding the password (never on the command line)")
    tail.add_argument("--ca-file", type=Path)
    tail.add_argument("--cert-file", type=Path)
    tail.add_argument("--key-file", type=Path)
    tail.add_argument(
        "--client-id",
        help="MQTT client id; the broker keeps this consumer's session (subscriptions and the "
        "batches queued while it is away) across restarts of the tail (default: a random "
        "id, whose session lasts as long as this run)",
    )
    tail.add_argument(
        "--session-expiry",
        type=_non_negative_int,
        default=SESSION_EXPIRY_S,
        metavar="SECONDS",
        help=f"how long the broker keeps the session while the tail is disconnected (default: {SESSION_EXPIRY_S})",
    )
    tail.add_argument(
        "--max-retries",
        type=_non_negative_int,
        default=None,
        metavar="N",
        help="give up after N failed connection attempts in a row (default: retry forever; "
        "0: fail at the first lost or refused connection)",
    )
    tail.add_argument(
        "--from-start",
        action="store_true",
        help="lanes start at seq 1: report events dropped before the first one seen as gaps too "
        "(for a consumer with a persistent session since the gateway started)",
    )
    tail.add_argument("--count", type=int, help="stop after this many events")
    tail.add_argument("--duration", type=float, help="stop after this many seconds")
    tail.add_argument(
        "--lanes",
        default="alarm,fault,ack,telemetry,vision",
        help="comma-separated lanes to subscribe to (default: all)",
    )
    tail.set_defaults(func=_tail)
    ops.set_defaults(func=lambda args: (ops.print_help(), 2)[1])


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _tail(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(tail(args))
    except KeyboardInterrupt:
        return 0


def _client(args: argparse.Namespace) -> aiomqtt.Client:
    """One client for the whole run: reconnecting it keeps its queue of received messages and its client id."""
    parts = urlsplit(args.broker)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise CityedgeError(f"--broker must be mqtt://host:port or mqtts://host:port, got {args.broker!r}")
    password = None
    if args.password_file is not None:
        try:
            password = args.password_file.read_text().strip()
        except OSError as exc:
            raise CityedgeError(f"cannot read the password file {args.password_file}: {exc.strerror}") from None
    tls = None
    if parts.scheme == "mqtts":
        try:
            tls = ssl.create_default_context(cafile=str(args.ca_file) if args.ca_file else None)
            if args.cert_file and args.key_file:
                tls.load_cert_chain(str(args.cert_file), str(args.key_file))
        except (OSError, ssl.SSLError) as exc:
            raise CityedgeError(
                f"cannot load the TLS files: {exc}", hint="check --ca-file/--cert-file/--key-file"
            ) from None
    connect = Properties(PacketTypes.CONNECT)
    connect.SessionExpiryInterval = args.session_expiry  # the broker keeps our session while we reconnect
    return aiomqtt.Client(
        parts.hostname,
        parts.port or (8883 if tls else 1883),
        identifier=args.client_id or f"cityedge-ops-{secrets.token_hex(6)}",
        username=args.username,
        password=password,
        tls_context=tls,
        protocol=aiomqtt.ProtocolVersion.V5,
        # never a clean start: resume the session (a new random id has none, so it starts a fresh one)
        clean_start=False,
        properties=connect,
        keepalive=KEEPALIVE_S,
        max_queued_incoming_messages=0,
    )


def _write_geojson(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)  # readers never see half a file


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _code(rc: int | ReasonCode | None) -> int:
    """The number of a paho result or reason code."""
    return rc.value if isinstance(rc, ReasonCode) else int(rc or 0)


def _reason(exc: aiomqtt.MqttError) -> str:
    """A short reason for a failed or lost connection, for one line on stderr."""
    cause = exc.__cause__ if isinstance(exc.__cause__, aiomqtt.MqttCodeError) else exc
    rc = getattr(cause, "rc", None)
    if isinstance(rc, ReasonCode):  # an MQTT 5 reason code: its name says it
        return str(rc.getName())
    return str(cause) or type(cause).__name__


def refused_subscriptions(topics: Sequence[str], granted: Sequence[int | ReasonCode]) -> list[str]:
    """``topic (reason)`` for each topic the broker's SUBACK refused (reason code 0x80 or more).

    mosquitto grants a subscription its ACL forbids and then delivers nothing on it; other brokers (and
    MQTT 5 in general) answer "Not authorized" (0x87) instead, which is what this catches.
    """
    refused = []
    for topic, code in zip(topics, granted, strict=True):
        if _code(code) >= 0x80:
            refused.append(f"{topic} ({code.getName() if isinstance(code, ReasonCode) else code})")
    return refused


class Tail:
    """One ``cityedge ops tail`` run: sessions with the broker, and what happens between them."""

    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        self.args = args
        self.out = out
        self.consumer = Consumer(args.prefix, site=args.site, from_start=args.from_start)
        self.base = f"{args.prefix}/{args.site or '+'}/{args.gateway or '+'}"
        self.state_topic = f"{self.base}/state"
        lanes = [lane.strip() for lane in args.lanes.split(",") if lane.strip()]
        self.event_topics = [f"{self.base}/ev/{lane}" for lane in lanes]
        self.deadline = time.monotonic() + args.duration if args.duration else None
        self.stop = asyncio.Event()  # Ctrl-C or SIGTERM: finish cleanly
        self.last_geo = 0.0
        self.connected_once = False
        self.rng = random.Random()

    # ------------------------------------------------------------------ the run
    async def run(self) -> None:
        """Connect, consume, reconnect, until --count, --duration or stop; CityedgeError when giving up."""
        client = _client(self.args)
        broker = self.args.broker
        retries = 0  # reconnection attempts since the last good connection (for --max-retries)
        step = 0  # backoff step: only a connection that lasted STABLE_S starts it again, not a flapping one
        lost_at: float | None = None
        reported = ""  # the failure last reported on stderr
        short = 0  # connections in a row that dropped within STABLE_S
        while not self.stop.is_set():
            started = time.monotonic()
            connected = False
            try:
                async with client:
                    connected = True
                    await self._subscribe(client)
                    if self.connected_once:
                        down = time.monotonic() - (lost_at or started)
                        _say(f"reconnected to {broker} after {down:.1f} s; subscriptions resumed")
                    else:
                        _say(f"listening on {broker} for {self.base}/...")
                    self.connected_once, retries, lost_at, reported = True, 0, None, ""
                    if await self._consume(client):
                        await self._leave(client)
                        return
            except MqttConnectError as exc:  # the broker answered CONNECT with a refusal
                if _code(exc.rc) not in RETRYABLE_CONNACK:
                    raise CityedgeError(
                        f"{broker} refused the connection: {_reason(exc)}",
                        hint="check --username, --password-file, the client certificate and the broker's ACL",
                    ) from None
                error = _reason(exc)
            except aiomqtt.MqttError as exc:  # could not connect, or the connection was lost
                error = _reason(exc)
            if connected:
                lost_at = time.monotonic()
                if lost_at - started > STABLE_S:
                    step = short = 0  # it was working: the first retries come quickly again
                else:
                    short += 1
                _say(f"lost the connection to {broker} ({error}); reconnecting")
                if short == FLAPS_BEFORE_HINT and self.args.client_id:
                    # MQTT gives a client id's session to whoever connected last: two consumers with the same
                    # id take it from each other in turn (the broker gives no reason code that says so)
                    _say(
                        f"the connection keeps dropping soon after it is made: if another consumer uses "
                        f"--client-id {self.args.client_id}, the broker hands the session to whichever "
                        f"connected last; give each consumer its own id"
                    )
            elif error != reported:  # one line per kind of failure, not one per attempt
                _say(f"cannot connect to {broker} ({error}); retrying, at most every {RETRY_MAX_S:g} s")
            reported = error
            limit = self.args.max_retries
            if limit is not None and retries >= limit:
                if retries:
                    raise CityedgeError(
                        f"gave up after {retries} attempts to reconnect to {broker}: {error}",
                        hint="check that the broker is running and reachable",
                    )
                what = "lost the connection to" if connected else "cannot connect to"
                raise CityedgeError(
                    f"{what} {broker}: {error}", hint="check the broker address, credentials and TLS files"
                )
            if not await self._pause(backoff_delay(step, RETRY_MIN_S, RETRY_MAX_S, self.rng)):
                break
            retries += 1
            step += 1
        if not self.connected_once and not self.stop.is_set():
            raise CityedgeError(
                f"could not connect to {broker} within --duration {self.args.duration:g} s",
                hint="check the broker address and that it is running",
            )

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        """Subscribe at QoS 1 (as the gateway publishes); in a resumed session this changes nothing."""
        # the retained state only for a subscription the session did not have yet: a resumed one gets no copy
        granted: list[int | ReasonCode] = [
            *await client.subscribe(self.state_topic, options=SubscribeOptions(qos=1, retainHandling=1))
        ]
        for topic in self.event_topics:
            granted += await client.subscribe(topic, qos=1)
        refused = refused_subscriptions([self.state_topic, *self.event_topics], granted)
        if refused:
            raise CityedgeError(
                f"{self.args.broker} refused the subscription to {', '.join(refused)}",
                hint="the broker's ACL must let this user read the uplink topics (docs/uplink.md §1)",
            )

    async def _consume(self, client: aiomqtt.Client) -> bool:
        """Print what arrives until --count, --duration or stop (True), or until the connection drops (MqttError)."""
        messages = client.messages.__aiter__()
        stopped = asyncio.ensure_future(self.stop.wait())
        receiving: asyncio.Future[aiomqtt.Message] | None = None
        try:
            while not self.stop.is_set():
                timeout = 1.0 if self.deadline is None else min(1.0, self.deadline - time.monotonic())
                if timeout <= 0:
                    return True
                if receiving is None:  # kept across timeouts: cancelling it could drop a message just taken
                    receiving = asyncio.ensure_future(messages.__anext__())
                await asyncio.wait((receiving, stopped), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if receiving.done():
                    message, receiving = receiving.result(), None  # MqttError when the connection dropped
                    self._feed(message)
                if self.args.geojson is not None and self.consumer.changed and time.monotonic() - self.last_geo > 1:
                    _write_geojson(self.args.geojson, self.consumer.geojson())
                    self.consumer.changed = False
                    self.last_geo = time.monotonic()
                if self.args.count is not None and self.consumer.stats.events >= self.args.count:
                    return True
            return True
        finally:
            for task in (receiving, stopped):
                if task is not None and not task.done():
                    task.cancel()

    def _feed(self, message: aiomqtt.Message) -> None:
        payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
        for record in self.consumer.feed(str(message.topic), bytes(payload)):
            self.out.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.out.flush()

    async def _leave(self, client: aiomqtt.Client) -> None:
        """At the end of a run with a random client id, drop the subscriptions: nobody resumes that session,
        so the broker should not queue batches for it until it expires. A --client-id keeps its session."""
        if self.args.client_id:
            return
        with contextlib.suppress(aiomqtt.MqttError):
            for topic in (self.state_topic, *self.event_topics):
                await client.unsubscribe(topic, timeout=2.0)

    async def _pause(self, delay: float) -> bool:
        """Wait ``delay`` seconds before the next attempt; False if --duration ends or stop comes first."""
        if self.deadline is not None:
            delay = min(delay, self.deadline - time.monotonic())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), max(0.0, delay))
        return not self.stop.is_set() and (self.deadline is None or time.monotonic() < self.deadline)


async def tail(args: argparse.Namespace) -> int:
    """Run the tail until --count/--duration, Ctrl-C or SIGTERM; returns the exit code."""
    try:
        opened = args.json_out.open("a") if args.json_out is not None else None
    except OSError as exc:
        raise CityedgeError(f"cannot open {args.json_out}: {exc.strerror}") from None
    run = Tail(args, opened or sys.stdout)
    loop = asyncio.get_running_loop()
    signals = []
    if threading.current_thread() is threading.main_thread():  # signal handlers can only live there
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, run.stop.set)
            signals.append(sig)
    try:
        await run.run()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        if args.geojson is not None:
            with contextlib.suppress(OSError):
                _write_geojson(args.geojson, run.consumer.geojson())
        if opened is not None:
            opened.close()
        s = run.consumer.stats
        if run.connected_once:
            _say(
                f"events {s.events}, duplicates dropped {s.duplicates}, missing {s.missing}, late {s.late}, "
                f"malformed {s.malformed}, gateway reconnects {s.restarts}"
            )
    return 0
