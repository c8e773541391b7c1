"""``cityedge demo``: a whole site on this machine, watched live in the terminal.

What runs (all real parts): an MQTT broker standing in for the operations center (a mosquitto started for
the demo, or ``--broker mqtt://host:port``), emulated boards running the real node firmware on the
MicroPython VM (a few streetlights and one medical node, provisioned through the flashing tool's manifest
API), the gateway agent reading their link UARTs through pyserial, and an operations-center subscriber
decoding what the gateway sends upstream. A short script plays an evening: it gets dark, a lamp fails, the
patient's temperature rises, the operations center sends a command. Ctrl-C stops everything cleanly;
``--duration`` bounds the run (for tests and CI).

If the emulated boards cannot start here (no Node.js, ...), the demo says so on screen and runs scripted
nodes (:mod:`gateway.simnode`) on pseudo-terminals instead, so the gateway side can still be seen.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import tty
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cityedge.errors import CityedgeError
from cityedge.manifest import NodeRecord, provision

SITE = "demo"
GATEWAY = "gw-demo"
LIGHT_BASE = 101
MEDICAL_ID = 201


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``cityedge demo``."""
    p = subparsers.add_parser("demo", help="run a whole emulated site on this machine, with a live view")
    p.add_argument(
        "--broker",
        default=None,
        metavar="URL",
        help="operations-center broker, e.g. mqtt://127.0.0.1:1883 (default: start a mosquitto)",
    )
    p.add_argument("--lights", type=int, default=3, help="emulated streetlight boards (default 3)")
    p.add_argument("--no-medical", action="store_true", help="leave out the medical board")
    p.add_argument("--no-camera", action="store_true", help="leave out the street camera (vision)")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS", help="stop after this long")
    p.add_argument("--state-dir", type=Path, default=None, help="keep the site's files here (default: temporary)")
    p.add_argument("--plain", action="store_true", help="print status lines instead of redrawing the screen")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    if not 0 <= args.lights <= 20:
        raise CityedgeError(f"--lights {args.lights} is out of range", hint="use 0 to 20 streetlight boards")
    if args.broker is not None and not args.broker.startswith(("mqtt://", "mqtts://")):
        raise CityedgeError(f"--broker {args.broker!r} is not an MQTT URL", hint="e.g. mqtt://127.0.0.1:1883")
    plain = args.plain or not sys.stdout.isatty()
    demo = Demo(
        lights=args.lights,
        medical=not args.no_medical,
        broker_url=args.broker,
        duration=args.duration,
        state_dir=args.state_dir,
        plain=plain,
        camera=not args.no_camera,
    )
    return asyncio.run(demo.run())


class Demo:
    """One demo site: broker, boards (or scripted nodes), gateway, subscriber, script and view."""

    def __init__(
        self,
        *,
        lights: int,
        medical: bool,
        broker_url: str | None,
        duration: float | None,
        state_dir: Path | None,
        plain: bool,
        camera: bool = True,
    ) -> None:
        self.n_lights = lights
        self.with_camera = camera
        self.with_medical = medical
        self.broker_url = broker_url
        self.duration = duration
        self.state_dir = state_dir
        self.plain = plain
        self.notes: list[str] = []  # shown on screen: what is emulated, what is missing
        self.upstream: deque[str] = deque(maxlen=12)
        self.alarms: deque[str] = deque(maxlen=8)
        self.upstream_count = 0
        self.upstream_sources: Counter[str] = Counter()
        self.records: list[NodeRecord] = []
        self.boards: list[Any] = []
        self.sim_tasks: list[asyncio.Task[None]] = []
        self.started = time.monotonic()
        self.agent: Any = None

    # ------------------------------------------------------------------ life cycle
    async def run(self) -> int:
        from gateway.agent import Agent
        from gateway.broker import LocalBroker
        from gateway.config import load_config

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        tmp = None
        if self.state_dir is None:
            tmp = tempfile.TemporaryDirectory(prefix="cityedge-demo-")
            root = Path(tmp.name)
        else:
            root = self.state_dir
            root.mkdir(parents=True, exist_ok=True)
        broker = None
        tasks: list[asyncio.Task[Any]] = []
        try:
            if self.broker_url is None:
                broker = LocalBroker()
                broker.start()
                self.broker_url = broker.url
                self.notes.append(f"operations center: a mosquitto started for the demo at {broker.url}")
            else:
                self.notes.append(f"operations center: {self.broker_url}")
            self._provision(root)
            ports = self._start_boards(root)
            if not ports:
                ports = self._start_scripted_nodes(root)
            (root / "gateway.toml").write_text(self._config(ports) + self._camera(root))
            self.agent = Agent(load_config(root / "gateway.toml"), install_signals=False)
            agent_stop = asyncio.Event()
            tasks.append(asyncio.create_task(self.agent.run(agent_stop)))
            ready = asyncio.create_task(self.agent.ready.wait())
            await asyncio.wait({ready, tasks[0]}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
            if tasks[0].done():
                tasks[0].result()  # the agent failed to start: its error, as a sentence, to the user
            if not ready.done():
                ready.cancel()
                raise CityedgeError("the demo gateway did not start within 30 s")
            tasks.append(asyncio.create_task(self._subscribe()))
            tasks.append(asyncio.create_task(self._script()))
            for t in self.sim_tasks:
                tasks.append(t)
            await self._view(stop)
            agent_stop.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(tasks[0]), 20)
        finally:
            for t in tasks[1:]:
                t.cancel()
            await asyncio.gather(*tasks[1:], return_exceptions=True)
            if tasks and not tasks[0].done():
                tasks[0].cancel()
                await asyncio.gather(tasks[0], return_exceptions=True)
            for board in self.boards:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(board.__exit__, None, None, None)
            if broker is not None:
                broker.stop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            if tmp is not None:
                tmp.cleanup()
        self._print_summary()
        return 0

    def _provision(self, root: Path) -> None:
        manifest = root / "nodes.json"
        for i in range(self.n_lights):
            self.records.append(
                provision(
                    manifest,
                    node_id=LIGHT_BASE + i,
                    role="streetlight",
                    site=SITE,
                    lat=53.5410 + 0.0004 * i,
                    lon=9.9840 + 0.0006 * i,
                    name=f"sl-{i + 1}",
                )
            )
        if self.with_medical:
            self.records.append(
                provision(
                    manifest, node_id=MEDICAL_ID, role="medical", site=SITE, lat=53.5432, lon=9.9861, name="bed-1"
                )
            )

    def _start_boards(self, root: Path) -> list[str]:
        """Emulated boards with the real firmware; [] (and a note) if they cannot run here."""
        try:
            from cityedge.firmware_files import install_into
            from hil_tests.emulator.board import EmulatedBoard, default_devices, pin_map
        except ImportError as exc:
            self.notes.append(f"emulated boards are not installed ({exc}); running scripted nodes instead")
            return []
        ports = []
        try:
            for rec in self.records:
                flash = root / f"flash-{rec.node_id}"
                if flash.exists():
                    shutil.rmtree(flash)
                flash.mkdir()
                install_into(flash, rec.role)
                (flash / "node.json").write_text(json.dumps(rec.node_config()))  # provisioning, as flashing does
                devices = None
                if rec.role == "medical":  # the reference board plus the MAX30102 pulse oximeter
                    pins = pin_map()
                    devices = [
                        *default_devices(pins),
                        {
                            "kind": "max30102",
                            "name": "max30102",
                            "address": pins["ADDR_MAX30102"],
                            "bus": pins["I2C_ID"],
                        },
                    ]
                board = EmulatedBoard(flash, role=None, devices=devices)
                board.__enter__()
                self.boards.append(board)
                ports.append(board.link_port)
        except Exception as exc:  # no Node.js, no VM package, ...: show the gateway side with scripted nodes
            for board in self.boards:
                with contextlib.suppress(Exception):
                    board.__exit__(None, None, None)
            self.boards = []
            self.notes.append(f"emulated boards could not start ({exc}); running scripted nodes instead")
            return []
        self.notes.append(f"{len(self.boards)} emulated boards run the real firmware on the MicroPython VM")
        return ports

    def _start_scripted_nodes(self, root: Path) -> list[str]:
        from gateway.simnode import SimNode

        ports = []
        for rec in self.records:
            master, slave = os.openpty()
            tty.setraw(slave)
            ports.append(os.ttyname(slave))
            os.close(slave)
            os.set_blocking(master, False)
            node = SimNode(rec.node_id, rec.key, rec.key_id, rec.role)
            self.sim_tasks.append(asyncio.ensure_future(_play_node(node, master)))
        return ports

    def _config(self, ports: list[str]) -> str:
        serial = "".join(
            f'[[serial]]\nname = "{rec.name}"\nport = "{port}"\nreopen_min_s = 0.2\n'
            for rec, port in zip(self.records, ports)
        )
        return (
            f'[gateway]\nid = "{GATEWAY}"\nstate_dir = "state"\nlog_level = "error"\n{serial}'
            f'[nodes]\nmanifest = "nodes.json"\noffline_after_s = 120\n'
            f'[health]\nlisten = "127.0.0.1:0"\n'
            f'[uplink]\nurl = "{self.broker_url}"\nformat = "cbor"\nbatch_ms = 50\n'
        )

    def _camera(self, root: Path) -> str:
        """A street camera playing a synthetic night scene (drawn by gateway.vision.scenes), with a counting
        line and a crossing zone whose walkers boost the first streetlights (adaptive lighting)."""
        if not self.with_camera:
            return ""
        try:
            from gateway.vision.scenes import VideoSpec, write_video

            video = root / "street-night.avi"
            if not video.exists():
                write_video(video, VideoSpec(seed=5, frames=200, fps=10.0, night=True, rate=1.0))
        except Exception as exc:  # no OpenCV video writer here: run without the camera, and say so
            self.notes.append(f"street camera left out: {exc}")
            return ""
        nodes = [r.node_id for r in self.records if r.role == "streetlight"][:2]
        self.notes.append(
            "street camera 'main-street' plays a synthetic night scene through the TFLite "
            f"detector; people in the crossing boost nodes {nodes}"
        )
        rule = (
            (
                f'[[vision.lighting]]\ncamera = "main-street"\nzone = "crossing"\nnodes = {nodes}\n'
                f'level = 100\nhold_s = 30\nnight = "always"\n'
            )
            if nodes
            else ""
        )
        return (
            f"[vision]\nenabled = true\ninterval_s = 10\n"
            f'[[vision.camera]]\nname = "main-street"\nsource = "{video}"\nfps = 5\nloop = true\n'
            f'[[vision.camera.zone]]\nname = "crossing"\npolygon = [[0, 340], [640, 340], [640, 480], [0, 480]]\n'
            f'[[vision.camera.line]]\nname = "main-street"\npoints = [[320, 480], [320, 0]]\n'
            f'directions = ["eastbound", "westbound"]\n{rule}'
        )

    # ------------------------------------------------------------------ the operations center
    async def _subscribe(self) -> None:
        import aiomqtt

        from gateway.ops.consumer import Consumer
        from gateway.uplink.client import UplinkSettings

        assert self.broker_url is not None
        settings = UplinkSettings(url=self.broker_url, gateway_id="ops-demo")
        consumer = Consumer("cityedge", site=SITE)
        while True:
            try:
                async with aiomqtt.Client(settings.host, settings.port, identifier="cityedge-demo-ops") as client:
                    await client.subscribe(f"cityedge/{SITE}/+/#", qos=1)
                    async for msg in client.messages:
                        payload = msg.payload if isinstance(msg.payload, bytes) else b""
                        for rec in consumer.feed(str(msg.topic), payload):
                            self._upstream(rec)
            except aiomqtt.MqttError:
                await asyncio.sleep(1.0)

    def _upstream(self, rec: dict[str, Any]) -> None:
        stamp = time.strftime("%H:%M:%S")
        if rec.get("type") == "state":
            self.upstream.append(
                f"{stamp} gateway {rec.get('gw', '')} state: {'online' if rec.get('online') else 'offline'}"
            )
            return
        if rec.get("type") != "event":
            self.upstream.append(f"{stamp} {rec.get('type')}: {json.dumps(rec)[:80]}")
            return
        self.upstream_count += 1
        self.upstream_sources[str(rec.get("src", ""))] += 1
        body = rec.get("body", {})
        src, kind, lane = rec.get("src", ""), rec.get("kind", ""), rec.get("lane", "")
        text = _describe(kind, body)
        self.upstream.append(f"{stamp} {lane:<9} {src:<9} {kind:<10} {text}"[:110])
        label = event_label(rec)
        if label is not None:
            self.alarms.append(f"{stamp} {label:<5} {src:<9} {text}"[:110])

    async def _publish_command(self, node_id: int, name: str, args: dict[str, Any], cid: str) -> None:
        import aiomqtt

        from gateway.uplink.client import UplinkSettings

        assert self.broker_url is not None
        settings = UplinkSettings(url=self.broker_url, gateway_id="ops-demo")
        async with aiomqtt.Client(settings.host, settings.port, identifier="cityedge-demo-cmd") as client:
            await client.publish(
                f"cityedge/{SITE}/{GATEWAY}/cmd/{node_id}/{name}",
                json.dumps({"id": cid, "args": args, "timeout_s": 20}),
                qos=1,
            )
        self.upstream.append(f"{time.strftime('%H:%M:%S')} ops center -> node {node_id}: {name} {args}")

    # ------------------------------------------------------------------ the evening's script
    async def _script(self) -> None:
        steps: list[tuple[float, str, Callable[[], Any] | None]] = []  # None: the ops-center command
        lights = [b for b, r in zip(self.boards, self.records) if r.role == "streetlight"]
        medic = [b for b, r in zip(self.boards, self.records) if r.role == "medical"]

        def hw_set(board: Any, device: str, **props: Any) -> Callable[[], Any]:
            return lambda: board.hw.set(device, **props)

        for board in lights:
            steps.append((4, "dusk: ambient light falls to 2 lx", hw_set(board, "bh1750", lux=2)))
        if lights:
            steps.append((10, "lamp of sl-1 fails (open circuit)", hw_set(lights[0], "lamp", health="open")))
        if medic:
            steps.append(
                (
                    1,
                    "patient bed-1: pulse oximeter on, SpO2 97 %, pulse 75/min",
                    hw_set(medic[0], "max30102", hr_bpm=75, spo2=97, probe_on=True),
                )
            )
            steps.append((12, "bed-1 desaturates: SpO2 falls to 78 %", hw_set(medic[0], "max30102", spo2=78)))
            steps.append((14, "patient's temperature rises to 39.8 °C", hw_set(medic[0], "max30205", celsius=39.8)))
            steps.append((24, "bed-1 recovers: SpO2 97 %", hw_set(medic[0], "max30102", spo2=97)))
        if self.n_lights >= 2:
            steps.append((18, "ops center boosts sl-2 to 100 % for 60 s", None))
        steps.sort(key=lambda step: step[0])
        t0 = time.monotonic()
        for at, what, action in steps:
            await asyncio.sleep(max(0.0, at - (time.monotonic() - t0)))
            self.upstream.append(f"{time.strftime('%H:%M:%S')} script: {what}")
            try:
                if action is None:
                    boost = {"level": 1000, "duration": 60}
                    await self._publish_command(LIGHT_BASE + 1, "boost", boost, "demo-boost-1")
                else:
                    await asyncio.to_thread(action)
            except Exception as exc:  # a missing model or an older emulator: say so, carry on
                self.upstream.append(f"{time.strftime('%H:%M:%S')} script step skipped: {exc}"[:110])

    # ------------------------------------------------------------------ the view
    async def _view(self, stop: asyncio.Event) -> None:
        end = None if self.duration is None else time.monotonic() + self.duration
        while not stop.is_set():
            if end is not None and time.monotonic() >= end:
                break
            self._draw()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0 if not self.plain else 2.0)

    def _screen(self) -> list[str]:
        agent = self.agent
        t = int(time.monotonic() - self.started)
        lines = [
            f"cityedge demo — site {SITE!r}, gateway {GATEWAY}, uplink {self.broker_url}   t={t}s   (Ctrl-C stops)"
        ]
        lines += [f"  · {n}" for n in self.notes]
        lines.append("")
        lines.append("NODES        role         state     last seen   frames  link")
        for rec in self.records:
            st = agent.tracker.get(rec.node_id) if agent is not None else None
            if st is None:
                lines.append(f"  {rec.name:<10} {rec.role:<12} waiting")
                continue
            age = st.age()
            seen = f"{age:5.1f} s ago" if age is not None else "never"
            lines.append(
                f"  {rec.name:<10} {rec.role:<12} {'online' if st.online else 'OFFLINE':<9} "
                f"{seen:<11} {st.frames:>6}  {st.link.name if st.link else '-'}"
            )
        lines.append("")
        lines.append("ALARMS, FAULTS AND STATE CHANGES (as the operations center received them)")
        lines += [f"  {a}" for a in self.alarms] or ["  none"]
        lines.append("")
        lines.append(f"UPSTREAM ({self.upstream_count} events delivered by the broker)")
        if self.upstream_sources:
            lines.append("  by source: " + ", ".join(f"{k} {n}" for k, n in sorted(self.upstream_sources.items())))
        lines += [f"  {u}" for u in self.upstream] or ["  nothing yet"]
        if agent is not None and agent.ingest is not None:
            st = agent.ingest.stats
            out = agent.outbox.total if agent.outbox is not None else 0
            cmds = agent.router.counts if agent.router is not None else {}
            lines.append("")
            lines.append(
                f"gateway: frames in {st.frames_in}, durable+acked {st.accepted}, rejected "
                f"{sum(st.rejected.values())}, duplicates {st.duplicates} | outbox {out} | uplink "
                f"{agent.status_line().rsplit('uplink ', 1)[-1]} | commands ok {cmds.get('ok', 0)}"
            )
        return lines

    def _draw(self) -> None:
        lines = self._screen()
        if self.plain:
            print(lines[-1] if lines[-1].startswith("gateway:") else lines[0], flush=True)
        else:
            sys.stdout.write("\x1b[H\x1b[2J" + "\n".join(lines) + "\n")
            sys.stdout.flush()

    def _print_summary(self) -> None:
        print("\n".join(["", "demo stopped.", *self._screen()[1:]]) if self.plain else "demo stopped.", flush=True)


def event_label(rec: dict[str, Any]) -> str | None:
    """The label of an uplink event record in the live view's event list, or None to leave it out of the list.

    What the event is, as the operations-center consumer categorised it (``category``: alarm, fault, state,
    info; gateway/ops/labels.py), not the lane it travelled in: a streetlight's override starts and ends at
    the fault priority and is still no fault. Only node events (kind ``event``) are listed.
    """
    category = rec.get("category")
    if rec.get("kind") != "event" or not isinstance(category, str):
        return None
    return category.upper()


def _describe(kind: str, body: dict[str, Any]) -> str:
    if kind == "telemetry":
        recs = body.get("records") or [{}]
        last = recs[-1] if isinstance(recs, list) and recs else {}
        return ", ".join(f"{k}={v}" for k, v in last.items() if k != "t")[:60]
    if kind == "event":
        value = f" {body.get('value')}{body.get('unit', '')}" if "value" in body else ""
        return f"{body.get('name')} {body.get('state')}{value}"
    if kind == "hello":
        return f"boot {body.get('boot')} fw {body.get('fw')} ({body.get('role')})"
    if kind == "node_state":
        return "online" if body.get("online") else f"offline ({body.get('reason')})"
    if kind == "vision":
        what = body.get("line") or body.get("zone") or body.get("state") or ""
        extra = " ".join(str(body[k]) for k in ("label", "direction") if k in body)
        return f"{body.get('type')} {what} {extra}".strip()
    if kind == "cmd_status":
        return f"command {body.get('command_id')} {body.get('name')}: {body.get('status')} {body.get('detail', '')}"
    return json.dumps(body)[:60]


async def _play_node(node: Any, master: int) -> None:
    """A scripted node on a pty (used only when emulated boards cannot run): HELLO, telemetry, an alarm."""
    from cewire import PRIO_HIGH, codes, payloads

    out = node.hello()
    tick = 0
    while True:
        tick += 1
        if node.role == "streetlight":
            out += node.data({payloads.L_LEVEL: 800, payloads.L_POWER: 412, payloads.L_LUX: 20})
        else:
            out += node.data({payloads.L_SPO2: 970 - (tick % 5), payloads.L_HR: 720})
            if tick % 10 == 5:
                out += node.event(codes.DESATURATION, prio=PRIO_HIGH, value=840, label=payloads.L_SPO2)
        if tick % 3 == 0:
            out += node.resend_unacked()
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(master, out)
        out = b""
        await asyncio.sleep(2.0)
        with contextlib.suppress(BlockingIOError, OSError):
            node.receive(os.read(master, 65536))
