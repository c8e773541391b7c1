"""The gateway agent: wires links, verification, the outbox, the uplink, commands, health and systemd.

:class:`Agent` owns every long-running task. Each one is *supervised*: if it raises, the failure is logged
and counted and the task is started again after a second, so one bad frame or one bug never leaves a
street without its gateway. Critical loops report progress through heartbeats; :class:`~gateway.systemd.
Watchdog` pings systemd only while all of them progress, so a hung agent is restarted by systemd.

Start-up order: registry (the manifest must load) → outbox (durable storage) → ingest + downlink + command
router → links → uplink → health endpoint → ``READY=1``. Shutdown (SIGTERM/SIGINT) runs the other way and
flushes what was received into the outbox before closing it; SIGHUP reloads the node registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from gateway.commands import CommandResult, CommandRouter
from gateway.config import GatewayConfig
from gateway.downlink import Downlink, SeqReservation
from gateway.events import Event, Priority
from gateway.health import HealthServer, Metric
from gateway.ingest import Ingest
from gateway.links.base import LinkState
from gateway.links.mqtt import MqttIngest
from gateway.links.serial import SerialLink
from gateway.nodes import NodeState, NodeTracker
from gateway.outbox import Outbox
from gateway.registry import Registry
from gateway.systemd import Heartbeat, Notifier, Watchdog
from gateway.uplink.client import command_result_event, start_uplink

log = logging.getLogger(__name__)

STATUS_EVERY_S = 10.0
RESTART_DELAY_S = 1.0


class Agent:
    """One gateway. ``await agent.run(stop)`` runs until ``stop`` is set (or a signal arrives)."""

    def __init__(self, config: GatewayConfig, *, notifier: Notifier | None = None,
                 install_signals: bool = True) -> None:
        self.config = config
        self.notifier = notifier if notifier is not None else Notifier()
        self.install_signals = install_signals
        self.watchdog = Watchdog(self.notifier, stall_after_s=config.watchdog.stall_after_s)
        self.registry = Registry(config.nodes.manifest)
        self.tracker = NodeTracker(config.nodes.offline_after_s, self._node_changed)
        self.outbox: Outbox | None = None
        self.ingest: Ingest | None = None
        self.downlink: Downlink | None = None
        self.router: CommandRouter | None = None
        self.links: list[SerialLink] = []
        self.mqtt: MqttIngest | None = None
        self.uplink: Any = None
        self.vision: Any = None
        self.started = time.time()
        self.ready = asyncio.Event()
        self.task_restarts: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._side: set[asyncio.Task[Any]] = set()
        self.health_port: int | None = None

    # ------------------------------------------------------------------ life cycle
    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Start everything, send READY=1, run until ``stop`` is set, then shut down cleanly."""
        stop = stop if stop is not None else asyncio.Event()
        loop = asyncio.get_running_loop()
        cfg = self.config
        if self.install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            loop.add_signal_handler(signal.SIGHUP, self._reload_registry)
        try:
            self.registry.load()  # a gateway without its registry must not start: ConfigError to the operator
            cfg.state_dir.mkdir(parents=True, exist_ok=True)
            async with Outbox(cfg.outbox.path, quota_bytes=int(cfg.outbox.quota_mb * 1024 * 1024),
                              synchronous=cfg.outbox.synchronous) as outbox:
                self.outbox = outbox
                await self._start(outbox)
                async with self._health():
                    # Per frame the pipeline allocates a few short-lived dicts; with CPython's default GC
                    # thresholds the young generation is scanned every 700 allocations, which costs ~30 %
                    # of ingest time at high rates. Start-up objects are frozen out of the scans.
                    gc.freeze()
                    gc.set_threshold(50_000, 20, 100)
                    # The outbox's SQLite thread releases and re-takes the GIL around every statement
                    # step; with the default 5 ms switch interval each re-take can wait 5 ms behind the
                    # busy event loop, which stretched single commits to hundreds of ms under load.
                    sys.setswitchinterval(0.0005)
                    self.ready.set()
                    self.notifier.ready(self.status_line())
                    log.info("gateway %s ready: %s", cfg.gateway_id, self.status_line())
                    await self._until(stop)
                    self.notifier.stopping("stopping: flushing received frames")
                    await self._stop()
        finally:
            if self.install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(sig)

    async def _until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STATUS_EVERY_S)
            if not stop.is_set():
                self.notifier.status(self.status_line())

    async def _start(self, outbox: Outbox) -> None:
        cfg = self.config
        self.downlink = Downlink(self.registry, self.tracker, SeqReservation(cfg.state_dir / "downlink.seq"))
        self.router = CommandRouter(self.downlink, self.registry.role_of)
        self.router.add_listener(self._store_command_result)
        ingest_hb = self.watchdog.register("ingest")
        self.ingest = Ingest(
            self.registry, outbox, self.tracker, self.downlink, self.router,
            batch_max=cfg.outbox.batch_max, flush_s=cfg.outbox.flush_ms / 1000.0, heartbeat=ingest_hb.beat,
        )
        restored = self.ingest.load_windows(self._windows_path)
        if restored:
            log.info("restored %d replay windows", restored)
        self._supervise("ingest", self.ingest.run)
        for link_cfg in cfg.serial:
            link = SerialLink(link_cfg, self.ingest.feed, self.watchdog.register(f"serial:{link_cfg.name}"))
            self.links.append(link)
            self._supervise(f"serial:{link_cfg.name}", link.run)
        if cfg.local_mqtt.enabled:
            self.mqtt = MqttIngest(cfg.local_mqtt, self.ingest.feed, self.watchdog.register("local_mqtt"),
                                   client_id=f"{cfg.gateway_id}-local")
            self._supervise("local_mqtt", self.mqtt.run)
        housekeeping = self.watchdog.register("housekeeping")
        self._supervise("housekeeping", lambda: self._housekeeping(housekeeping))
        if cfg.nodes.manifest is not None and cfg.nodes.watch_manifest:
            self._supervise("registry", lambda: self.registry.watch(2.0))
        await self._start_uplink(outbox)
        await self._start_vision(outbox)
        self._supervise("watchdog", self.watchdog.run)

    async def _start_uplink(self, outbox: Outbox) -> None:
        """Start the uplink to the operations center, if configured and installed."""
        if self.config.uplink.url is None:
            log.warning("no [uplink] url: events are kept in the outbox until one is configured")
            return
        heartbeat = self.watchdog.register("uplink")
        assert self.router is not None
        self.uplink = await start_uplink(self.config, outbox, self.router, heartbeat=heartbeat.beat,
                                         registry=self.registry, agent_state=self._agent_state)

    async def _start_vision(self, outbox: Outbox) -> None:
        """Cameras (docs/vision.md): events into the outbox, adaptive lighting through the command router."""
        vcfg = self.config.vision
        if vcfg is None or not getattr(vcfg, "enabled", False):
            return
        from gateway.vision.service import VisionService

        assert self.router is not None
        self.vision = VisionService(vcfg, outbox.put, submit=self.router.submit, watchdog=self.watchdog)
        await self.vision.__aenter__()
        self._supervise("vision", self.vision.run)  # one watchdog heartbeat per camera

    def _agent_state(self) -> dict[str, Any]:
        """What the uplink's birth message says about this agent."""
        return {
            "links": {link.name: link.state.value for link in self.links},
            "nodes_online": sum(1 for st in self.tracker if st.online),
            "started": int(self.started),
        }

    def _supervise(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        async def runner() -> None:
            while True:
                try:
                    await factory()
                    log.error("task %s ended unexpectedly; restarting", name)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("task %s crashed; restarting", name)
                self.task_restarts[name] = self.task_restarts.get(name, 0) + 1
                await asyncio.sleep(RESTART_DELAY_S)

        self._tasks.append(asyncio.create_task(runner(), name=name))

    async def _stop(self) -> None:
        # links first (no new frames), then commit what is queued, then everything else
        first = [t for t in self._tasks if t.get_name().startswith(("serial:", "local_mqtt"))]
        for task in first:
            task.cancel()
        await asyncio.gather(*first, return_exceptions=True)
        if self.ingest is not None:  # bounded: a hung disk must not keep the agent from stopping
            try:
                await asyncio.wait_for(self.ingest.flush(), 10.0)
            except (TimeoutError, Exception) as exc:
                log.error("could not flush received frames at shutdown (nodes will resend them): %r", exc)
        self._save_windows()
        rest = [t for t in self._tasks if t not in first]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)
        if self.vision is not None:  # stops the cameras; what they said before stopping still goes out
            try:
                await asyncio.wait_for(self.vision.__aexit__(None, None, None), 15.0)
            except Exception as exc:
                log.error("vision did not stop cleanly: %r", exc)
        if self.uplink is not None:
            closer = getattr(self.uplink, "aclose", None) or getattr(self.uplink, "stop", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()
        if self._side:
            await asyncio.gather(*self._side, return_exceptions=True)
        self.notifier.close()

    @contextlib.asynccontextmanager
    async def _health(self) -> AsyncIterator[None]:
        hp = self.config.health.host_port
        if hp is None:
            yield
            return
        server = HealthServer(self.metrics, self.status)
        async with server.serving(*hp) as srv:
            self.health_port = srv.sockets[0].getsockname()[1]
            log.info("health endpoint on http://%s:%d/metrics and /status", hp[0], self.health_port)
            yield

    # ------------------------------------------------------------------ housekeeping
    @property
    def _windows_path(self) -> Path:
        return self.config.state_dir / "replay-windows.json"

    def _save_windows(self) -> None:
        if self.ingest is not None:
            try:
                self.ingest.save_windows(self._windows_path)
            except OSError as exc:
                log.error("could not save replay windows: %s", exc)

    async def _housekeeping(self, hb: Heartbeat) -> None:
        """Offline detection, periodic TIME and keepalives, replay windows saved every 5 s — every second."""
        nodes_cfg = self.config.nodes
        saved_at = -1
        tick = 0
        while True:
            hb.beat()
            tick += 1
            if self.ingest is not None and tick % 5 == 0 and self.ingest.stats.accepted != saved_at:
                saved_at = self.ingest.stats.accepted
                self._save_windows()
            self.tracker.sweep()
            if self.downlink is not None:
                self.downlink.keepalive(time.monotonic(), nodes_cfg.keepalive_s, nodes_cfg.time_sync_s)
            await asyncio.sleep(1.0)

    def _reload_registry(self) -> None:
        log.info("SIGHUP: reloading the node registry")
        self.registry.reload()

    def _background(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._side.add(task)
        task.add_done_callback(self._side.discard)

    def _node_changed(self, st: NodeState, reason: str) -> None:
        log.info("node %d (%s) %s (%s)", st.node_id, st.name or "-", "online" if st.online else "offline", reason)
        if self.outbox is None:
            return
        body = {"online": st.online, "reason": reason, "link": st.link.name if st.link else None,
                "last_seen": st.last_seen_wall}
        event = Event(f"node:{st.node_id}", "node_state", Priority.FAULT, body)
        self._background(self._put_quietly(event))

    async def _store_command_result(self, result: CommandResult) -> None:
        if self.outbox is not None:
            await self._put_quietly(command_result_event(result))

    async def _put_quietly(self, event: Event) -> None:
        assert self.outbox is not None
        try:
            await self.outbox.put(event)
        except Exception as exc:
            log.error("could not store %s event: %s", event.kind, exc)

    # ------------------------------------------------------------------ health
    def status_line(self) -> str:
        online = sum(1 for st in self.tracker if st.online)
        links_up = sum(1 for link in self.links if link.state is LinkState.OPEN)
        depth = self.outbox.total if self.outbox is not None else 0
        up = self._uplink_state()
        stalled = self.watchdog.stalled()
        text = (f"{online}/{len(self.registry)} nodes online, {links_up}/{len(self.links)} serial links open, "
                f"outbox {depth}, uplink {up}")
        return text + (f", STALLED: {', '.join(stalled)}" if stalled else "")

    def _uplink_state(self) -> str:
        if self.uplink is None:
            return "none"
        state = getattr(self.uplink, "state", None)
        return str(getattr(state, "value", state)) if state is not None else "running"

    def status(self) -> dict[str, Any]:
        """The JSON status (``/status``)."""
        stalled = self.watchdog.stalled()
        ing = self.ingest.stats if self.ingest is not None else None
        out: dict[str, Any] = {
            "gateway": self.config.gateway_id,
            "healthy": not stalled and self.ready.is_set(),
            "uptime_s": round(time.time() - self.started, 1),
            "stalled": stalled,
            "loops": {k: round(v, 3) for k, v in self.watchdog.loop_ages().items()},
            "task_restarts": dict(self.task_restarts),
            "links": [
                {"name": link.name, "port": link.config.port, "state": link.state.value,
                 **{k: v for k, v in vars(link.stats).items()}}
                for link in self.links
            ],
            "nodes": [st.public() for st in self.tracker],
            "registry": {"nodes": len(self.registry), "loads": self.registry.loads,
                         "load_errors": self.registry.load_errors, "last_error": self.registry.last_error},
            "uplink": self._uplink_state(),
        }
        if self.mqtt is not None:
            out["local_mqtt"] = {"state": self.mqtt.state.value, **vars(self.mqtt.stats)}
        if ing is not None:
            out["ingest"] = {k: v for k, v in vars(ing).items()}
        if self.outbox is not None:
            s = self.outbox.stats()
            out["outbox"] = {"depth": {p.lane: n for p, n in s.depth.items()}, "bytes": s.bytes,
                             "quota_bytes": s.quota_bytes, "dropped": {p.lane: n for p, n in s.dropped.items()},
                             "duplicates": s.duplicates, "disk_bytes": s.disk_bytes}
        if self.router is not None:
            out["commands"] = {"in_flight": self.router.in_flight, **self.router.counts}
        if self.vision is not None:
            out["vision"] = self.vision.status()
        return out

    def metrics(self) -> Iterable[Metric]:
        """The Prometheus metric families (``/metrics``)."""
        ms: list[Metric] = []
        if self.outbox is not None:
            s = self.outbox.stats()
            ms.append(Metric("cityedge_outbox_depth", "gauge", "Events waiting in the outbox, by priority",
                             [({"priority": p.lane}, n) for p, n in s.depth.items()]))
            ms.append(Metric.single("cityedge_outbox_bytes", "gauge", "Bytes of events in the outbox", s.bytes))
            ms.append(Metric.single("cityedge_outbox_quota_bytes", "gauge", "Outbox quota", s.quota_bytes))
            ms.append(Metric("cityedge_outbox_dropped_total", "counter", "Events dropped by the quota policy",
                             [({"priority": p.lane}, n) for p, n in s.dropped.items()]))
        if self.ingest is not None:
            st = self.ingest.stats
            ms.append(Metric.single("cityedge_frames_in_total", "counter", "Frames received from nodes",
                                    st.frames_in))
            ms.append(Metric.single("cityedge_frames_accepted_total", "counter",
                                    "Frames verified and made durable", st.accepted))
            ms.append(Metric("cityedge_frames_rejected_total", "counter", "Frames refused, by reason",
                             [({"reason": r}, n) for r, n in sorted(st.rejected.items())] or [({"reason": "mac"}, 0)]))
            ms.append(Metric.single("cityedge_frames_duplicate_total", "counter",
                                    "Retransmitted frames dropped and re-acknowledged", st.duplicates))
            ms.append(Metric.single("cityedge_frames_overload_total", "counter",
                                    "Frames dropped unacknowledged because the outbox fell behind", st.overload))
        if self.downlink is not None:
            ms.append(Metric("cityedge_frames_out_total", "counter", "Frames sent to nodes, by type",
                             [({"type": k}, n) for k, n in self.downlink.sent.items()]))
        ms.append(Metric("cityedge_link_up", "gauge", "1 when the serial port is open",
                         [({"link": link.name}, 1 if link.state is LinkState.OPEN else 0) for link in self.links]))
        ms.append(Metric("cityedge_link_disconnects_total", "counter", "Open ports lost (unplug, I/O error)",
                         [({"link": link.name}, link.stats.disconnects) for link in self.links]))
        ms.append(Metric("cityedge_link_restarts_total", "counter", "Reader crashes followed by a restart",
                         [({"link": link.name}, link.stats.restarts) for link in self.links]))
        up = self._uplink_state()
        ms.append(Metric("cityedge_uplink_state", "gauge", "Uplink state (1 for the current one)",
                         [({"state": up}, 1)]))
        now = time.monotonic()
        ms.append(Metric("cityedge_node_online", "gauge", "1 when the node is online",
                         [({"node": str(st.node_id)}, 1 if st.online else 0) for st in self.tracker]))
        ms.append(Metric("cityedge_node_last_seen_seconds", "gauge", "Seconds since the node's last valid frame",
                         [({"node": str(st.node_id)}, st.age(now) or 0.0) for st in self.tracker
                          if st.last_seen is not None]))
        ms.append(Metric("cityedge_loop_lag_seconds", "gauge",
                         "Seconds since each critical loop last made progress (event_loop: scheduling lag)",
                         [({"loop": k}, v) for k, v in sorted(self.watchdog.loop_ages().items())]
                         + [({"loop": "event_loop"}, self.watchdog.loop_lag_s)]))
        ms.append(Metric.single("cityedge_watchdog_withheld_total", "counter",
                                "Watchdog pings withheld because a loop stalled", self.watchdog.withheld))
        if self.router is not None:
            ms.append(Metric("cityedge_commands_total", "counter", "Commands ended, by final status",
                             [({"status": k}, n) for k, n in self.router.counts.items()]))
        ms.append(Metric.single("cityedge_registry_nodes", "gauge", "Nodes in the registry", len(self.registry)))
        ms.append(Metric.single("cityedge_registry_load_errors_total", "counter", "Manifest reloads refused",
                                self.registry.load_errors))
        ms.append(Metric("cityedge_task_restarts_total", "counter", "Supervised tasks restarted after a crash",
                         [({"task": k}, n) for k, n in sorted(self.task_restarts.items())]))
        return ms
