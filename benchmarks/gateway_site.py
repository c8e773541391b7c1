"""A measured gateway site for the ingest and alarm-latency benchmarks.

Real parts only: a real mosquitto (LocalBroker) as the operations center, the agent as its own process
(``python -m cityedge gateway run``) pinned to ONE core, its serial links on pseudo-terminals read through
pyserial, its SQLite outbox on disk. Nodes are played by :class:`gateway.simnode.SimNode` in this process
(on the other core): they sign frames with cewire, keep at most ``window`` unacknowledged frames each (the
protocol's flow control) and release them only on the gateway's ACKs. A subscriber on the broker decodes
what leaves the uplink, so "forwarded" means delivered by the broker, not merely sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import tty
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import aiomqtt
import cbor2
from cewire import StreamDecoder

from cityedge.manifest import Manifest, NodeRecord, save_manifest
from gateway.broker import LocalBroker, free_port
from gateway.simnode import SimNode
from gateway.uplink import codec


def _records(n: int, first_id: int, role: str) -> list[NodeRecord]:
    return [
        NodeRecord(node_id=first_id + i, role=role, site="bench", lat=53.5, lon=9.9, link={"kind": "uart"},
                   key_id=1, key=os.urandom(32), name=f"{role[:3]}-{i}")
        for i in range(n)
    ]


def _least_busy_cpu() -> int:
    try:
        import psutil

        busy = psutil.cpu_percent(interval=0.5, percpu=True)
        return min(range(len(busy)), key=busy.__getitem__)
    except ImportError:
        return 0


class Port:
    """One pty: the agent opens ``path``; the site writes node frames into ``master`` and reads answers."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        os.close(slave)
        os.set_blocking(self.master, False)
        self.out = bytearray()
        self.decoder = StreamDecoder()


class BenchSite:
    """``async with BenchSite(nodes=..., ports=...) as site:`` — broker, agent, nodes, subscriber."""

    def __init__(self, *, nodes: int, medical: int = 0, ports: int = 2, window: int = 8,
                 agent_cpu: int | None = -1, on_event: Callable[[codec.UplinkEvent, float], None] | None = None,
                 batch_ms: float = 5.0) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="cityedge-bench-"))
        self.window = window
        if agent_cpu == -1:  # the machine may be shared: give the agent the core that is least busy now
            agent_cpu = _least_busy_cpu()
        self.agent_cpu = agent_cpu if (agent_cpu is not None and (os.cpu_count() or 1) > 1) else None
        self.records = _records(nodes, 1000, "streetlight") + _records(medical, 9000, "medical")
        self.nodes = {r.node_id: SimNode(r.node_id, r.key, r.key_id, r.role) for r in self.records}
        # streetlights share ``ports`` buses; medical nodes have their own port (a ward's USB link)
        self.ports = [Port() for _ in range(ports + (1 if medical else 0))]
        self.port_of = {r.node_id: self.ports[i % ports] for i, r in enumerate(self.records[:nodes])}
        self.port_of.update({r.node_id: self.ports[-1] for r in self.records[nodes:]})
        self.on_event = on_event
        self.batch_ms = batch_ms
        self.delivered = 0
        self.delivered_keys: set[tuple[str, str, int]] = set()
        self.answered: set[int] = set()  # nodes that received gateway frames since the hook last ran
        self.broker = LocalBroker()
        self.health_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    async def __aenter__(self) -> BenchSite:
        self.broker.start()
        manifest = Manifest(self.tmp / "nodes.json", {r.node_id: r for r in self.records})
        save_manifest(manifest)
        serial = "".join(f'[[serial]]\nname = "bus{i}"\nport = "{p.path}"\n' for i, p in enumerate(self.ports))
        (self.tmp / "gw.toml").write_text(
            f'[gateway]\nid = "gw-bench"\nstate_dir = "state"\nlog_level = "warning"\n{serial}'
            f'[nodes]\nmanifest = "nodes.json"\n[health]\nlisten = "127.0.0.1:{self.health_port}"\n'
            f'[uplink]\nurl = "{self.broker.url}"\nbatch_max = 2000\nbatch_ms = {self.batch_ms}\n'
            f'[outbox]\nbatch_max = 5000\nflush_ms = {self.batch_ms}\n'
        )
        self._tasks.append(asyncio.create_task(self._subscribe()))
        await asyncio.sleep(0.3)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(self.tmp / "notify"))
        notify.setblocking(False)
        env = {**os.environ, "NOTIFY_SOCKET": str(self.tmp / "notify")}
        profile = os.environ.get("CITYEDGE_BENCH_PROFILE")  # a path: run the agent under cProfile
        prof = ["-m", "cProfile", "-o", profile] if profile else []
        self.proc = subprocess.Popen(
            [sys.executable, *prof, "-m", "cityedge", "gateway", "run", "--config", str(self.tmp / "gw.toml")],
            env=env, stderr=(self.tmp / "agent.log").open("wb"),
        )
        if self.agent_cpu is not None:  # the agent (all its threads) gets one core; the load generator,
            os.sched_setaffinity(self.proc.pid, {self.agent_cpu})  # broker and subscriber run where they can
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while True:
            with contextlib.suppress(BlockingIOError):
                if b"READY=1" in notify.recv(4096):
                    break
            if self.proc.poll() is not None or loop.time() > deadline:
                raise RuntimeError("agent did not start: " + (self.tmp / "agent.log").read_text()[-2000:])
            await asyncio.sleep(0.05)
        notify.close()
        for port in self.ports:
            loop.add_reader(port.master, self._readable, port)
        await asyncio.sleep(0.3)  # links open
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        loop = asyncio.get_running_loop()
        for port in self.ports:
            loop.remove_reader(port.master)
            loop.remove_writer(port.master)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.broker.stop()
        for port in self.ports:
            os.close(port.master)
        import shutil

        shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------------ upstream
    async def _subscribe(self) -> None:
        async with aiomqtt.Client(self.broker.host, self.broker.port, identifier="bench-ops") as client:
            await client.subscribe("cityedge/+/+/ev/#", qos=1)
            async for msg in client.messages:
                now = time.perf_counter()
                payload = msg.payload
                if not isinstance(payload, bytes | bytearray):
                    continue
                if self.on_event is None or str(msg.topic).endswith("/ev/telemetry"):
                    # counting only: the batch's envelope, bodies left undecoded (the measured events are
                    # alarms; decoding 5,000 telemetry bodies a second here would delay reading them)
                    self._count(bytes(payload))
                    continue
                for ev in codec.decode_batch(bytes(payload)):
                    if ev.kind != "telemetry" and ev.kind != "event":
                        continue  # node_state, hello, ...: not part of the measured load
                    key = (ev.source, ev.kind, int(ev.body.get("seq", -1)))
                    if key not in self.delivered_keys:
                        self.delivered_keys.add(key)
                        self.delivered += 1
                        if self.on_event is not None:
                            self.on_event(ev, now)

    def _count(self, payload: bytes) -> None:
        doc = cbor2.loads(payload)
        sources = doc[codec.B_SOURCES]
        for idx, _seq, _dt, kind, body in doc[codec.B_EVENTS]:
            name = codec.KINDS[kind] if isinstance(kind, int) else kind
            if name != "telemetry" and name != "event":
                continue
            key = (sources[idx], name, int(body.get(codec.KEY_LABEL["seq"], -1)))
            if key not in self.delivered_keys:
                self.delivered_keys.add(key)
                self.delivered += 1

    # ------------------------------------------------------------------ southbound
    def send(self, node_id: int, wire: bytes) -> None:
        """Queue ``wire`` (frames from node ``node_id``) for its port."""
        port = self.port_of[node_id]
        if not port.out:
            asyncio.get_running_loop().add_writer(port.master, self._writable, port)
        port.out += wire

    def _writable(self, port: Port) -> None:
        try:
            n = os.write(port.master, port.out)
        except BlockingIOError:
            return
        del port.out[:n]
        if not port.out:
            asyncio.get_running_loop().remove_writer(port.master)

    def _readable(self, port: Port) -> None:
        try:
            data = os.read(port.master, 1 << 16)
        except (BlockingIOError, OSError):
            return
        for raw in port.decoder.feed(data):
            nid = int.from_bytes(raw[4:8], "big")
            node = self.nodes.get(nid)
            if node is not None:
                node.receive_frame(raw)
                self.answered.add(nid)
        self.after_answers()
        self.answered.clear()

    def after_answers(self) -> None:
        """Hook: called after every chunk of gateway answers (the load generator refills windows here)."""

    async def status(self) -> dict[str, Any]:
        """The agent's /status (JSON)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.health_port)
        writer.write(b"GET /status HTTP/1.0\r\n\r\n")
        data = await reader.read()
        writer.close()
        return dict(json.loads(data.partition(b"\r\n\r\n")[2]))

    def agent_cpu_seconds(self) -> float:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
