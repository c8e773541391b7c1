"""``cityedge ops ...``: tools for the operations center side of the uplink.

``cityedge ops tail --broker mqtt://host:port [--site S] [--json-out FILE] [--geojson FILE]`` subscribes to
the uplink topics, decodes batches (CBOR or JSON), drops duplicates, reports gaps and prints one JSON line
per event (or writes them to a file), and keeps a GeoJSON file of the site's nodes up to date.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import ssl
import sys
import time
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import aiomqtt

from cityedge.errors import CityedgeError
from gateway.ops.consumer import Consumer


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
    tail.add_argument("--client-id", help="MQTT client id (default: random)")
    tail.add_argument("--from-start", action="store_true",
                      help="lanes start at seq 1: report events dropped before the first one seen as gaps too "
                           "(for a consumer with a persistent session since the gateway started)")
    tail.add_argument("--count", type=int, help="stop after this many events")
    tail.add_argument("--duration", type=float, help="stop after this many seconds")
    tail.add_argument("--lanes", default="alarm,fault,ack,telemetry,vision",
                      help="comma-separated lanes to subscribe to (default: all)")
    tail.set_defaults(func=_tail)
    ops.set_defaults(func=lambda args: (ops.print_help(), 2)[1])


def _tail(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(tail(args))
    except KeyboardInterrupt:
        return 0


def _client(args: argparse.Namespace) -> aiomqtt.Client:
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
    return aiomqtt.Client(
        parts.hostname,
        parts.port or (8883 if tls else 1883),
        identifier=args.client_id,
        username=args.username,
        password=password,
        tls_context=tls,
        protocol=aiomqtt.ProtocolVersion.V5,
        max_queued_incoming_messages=0,
    )


def _write_geojson(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)  # readers never see half a file


async def tail(args: argparse.Namespace) -> int:
    """Run the tail until --count/--duration or Ctrl-C; returns the exit code."""
    consumer = Consumer(args.prefix, site=args.site, from_start=args.from_start)
    site = args.site or "+"
    gw = args.gateway or "+"
    base = f"{args.prefix}/{site}/{gw}"
    lanes = [lane.strip() for lane in args.lanes.split(",") if lane.strip()]
    out: TextIO = sys.stdout
    opened: TextIO | None = None
    if args.json_out is not None:
        opened = out = args.json_out.open("a")
    deadline = time.monotonic() + args.duration if args.duration else None
    last_geo = 0.0
    connected = False
    try:
        async with _client(args) as client:
            connected = True
            await client.subscribe(f"{base}/state", qos=1)
            for lane in lanes:
                await client.subscribe(f"{base}/ev/{lane}", qos=1)
            print(f"listening on {args.broker} for {base}/...", file=sys.stderr, flush=True)
            messages = client.messages.__aiter__()
            while True:
                timeout = None if deadline is None else deadline - time.monotonic()
                if timeout is not None and timeout <= 0:
                    break
                try:
                    message = await asyncio.wait_for(messages.__anext__(), timeout=min(timeout or 1.0, 1.0))
                except TimeoutError:
                    message = None
                if message is not None:
                    payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
                    for record in consumer.feed(str(message.topic), bytes(payload)):
                        out.write(json.dumps(record, separators=(",", ":")) + "\n")
                    out.flush()
                if args.geojson is not None and consumer.changed and time.monotonic() - last_geo > 1.0:
                    _write_geojson(args.geojson, consumer.geojson())
                    consumer.changed = False
                    last_geo = time.monotonic()
                if args.count is not None and consumer.stats.events >= args.count:
                    break
    except aiomqtt.MqttError as exc:
        raise CityedgeError(
            f"lost or could not open the connection to {args.broker}: {exc}",
            hint="check the broker address, credentials and TLS files",
        ) from None
    finally:
        if args.geojson is not None:
            with contextlib.suppress(OSError):
                _write_geojson(args.geojson, consumer.geojson())
        if opened is not None:
            opened.close()
        s = consumer.stats
        if connected:
            print(
                f"events {s.events}, duplicates dropped {s.duplicates}, missing {s.missing}, late {s.late}, "
                f"malformed {s.malformed}, gateway reconnects {s.restarts}",
                file=sys.stderr,
            )
    return 0
