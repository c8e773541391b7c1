"""The vision part of the gateway agent: cameras, events to the outbox, adaptive lighting, snapshots.

:class:`VisionService` is what the agent runs (``async with VisionService(...) as vs: await vs.run()``).
It starts one :class:`~gateway.vision.pipeline.CameraWorker` per camera, turns their analytics events
into :class:`gateway.events.Event` (priority ``VISION``; a camera lost is a ``FAULT``) and hands them to
``publish`` (the outbox's ``put``), evaluates the adaptive-lighting rules twice a second and beats one
watchdog heartbeat per camera while its threads are turning.

Privacy: no frame leaves the gateway. :meth:`VisionService.snapshot` exists only when the config says
``snapshots = true``, and blurs every person, cyclist and the lower part (plates) of every vehicle.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import cv2
import numpy as np

from cityedge.errors import CityedgeError
from gateway.events import Event, Priority
from gateway.vision.config import CameraConfig, VisionConfig
from gateway.vision.detector import Detection, Detector
from gateway.vision.lighting import AdaptiveLighting, CameraView, Submit
from gateway.vision.motion import MotionGate
from gateway.vision.pipeline import CameraWorker, FrameAnalyzer, SourceFactory
from gateway.vision.privacy import blur_private
from gateway.vision.tracker import Tracker
from gateway.vision.zones import Analytics, VisionEvent

log = logging.getLogger(__name__)

Publish = Callable[[Event], Awaitable[Any]]


class HeartbeatLike(Protocol):
    def beat(self) -> None: ...


class WatchdogLike(Protocol):
    def register(self, name: str) -> Any: ...


def build_analyzer(config: VisionConfig, cam: CameraConfig) -> FrameAnalyzer:
    """Detector + motion gate + tracker + analytics for one camera, as the config says."""
    detector = Detector(config.model, config.labels, backend=config.backend, threads=config.threads,
                        xnnpack=config.xnnpack, min_score=config.min_score)
    analytics = Analytics(list(cam.zones), list(cam.lines), interval_s=config.interval_s)
    gate = MotionGate(threshold=cam.motion_threshold, min_area=cam.motion_min_area)
    tracker = Tracker(min_hits=analytics.min_hits, max_missed_s=max(1.5, 2 * cam.keepalive_s))
    return FrameAnalyzer(detector, analytics, gate=gate, tracker=tracker, keepalive_s=cam.keepalive_s,
                         geometry=cam.geometry_size)


class VisionService:
    """Runs the cameras of a :class:`VisionConfig` inside the agent's event loop."""

    def __init__(self, config: VisionConfig, publish: Publish, *, submit: Submit | None = None,
                 watchdog: WatchdogLike | None = None,
                 sources: dict[str, SourceFactory] | None = None,
                 clock: Callable[[], dt.datetime] = dt.datetime.now) -> None:
        self.config = config
        self._publish = publish
        self._watchdog = watchdog
        self._clock = clock
        self._sources = sources or {}
        self.lighting = AdaptiveLighting(config.lighting, submit) if (submit and config.lighting) else None
        self.workers: dict[str, CameraWorker] = {}
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=10_000)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._snapshot_detector: Detector | None = None
        self.dropped = 0  # events lost because the queue to the outbox was full (outbox stalled)
        self.published = 0

    async def __aenter__(self) -> VisionService:
        self._loop = asyncio.get_running_loop()
        for cam in self.config.cameras:
            analyzer = build_analyzer(self.config, cam)
            worker = CameraWorker(cam, analyzer, self._on_events, source_factory=self._sources.get(cam.name),
                                  on_state=self._on_state)
            self.workers[cam.name] = worker
        for w in self.workers.values():
            w.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        def stop_all() -> None:
            for w in self.workers.values():
                w.stop()

        await asyncio.to_thread(stop_all)
        while not self._queue.empty():  # what the cameras said before stopping still goes out
            await self._publish_one(self._queue.get_nowait())
        if self.lighting is not None:
            await self.lighting.drain()

    # ------------------------------------------------------------------ events from the camera threads

    def _emit(self, event: Event) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1

    def _threadsafe(self, event: Event) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._emit, event)

    def _on_events(self, camera: str, events: list[VisionEvent]) -> None:
        mono, wall = time.monotonic(), time.time()
        for ev in events:
            ts_ms = int((wall - (mono - ev.ts)) * 1000)
            self._threadsafe(Event(f"cam:{camera}", "vision", Priority.VISION, {"type": ev.kind, **ev.body},
                                   ts_ms=ts_ms))

    def _on_state(self, camera: str, state: str, detail: str) -> None:
        prio = Priority.FAULT if state == "lost" else Priority.VISION
        body: dict[str, Any] = {"type": "camera_state", "state": state}
        if detail:
            body["detail"] = detail
        self._threadsafe(Event(f"cam:{camera}", "vision", prio, body))

    async def _publish_one(self, event: Event) -> None:
        try:
            await self._publish(event)
            self.published += 1
        except Exception:  # the outbox reports its own trouble; vision goes on
            log.exception("vision: publishing an event failed")

    # ------------------------------------------------------------------ main loop

    async def run(self) -> None:
        """Forward events, evaluate lighting rules and beat heartbeats until cancelled."""
        beats: dict[str, HeartbeatLike] = {}
        if self._watchdog is not None:
            beats = {name: self._watchdog.register(f"vision:{name}") for name in self.workers}
        next_rule = 0.0
        # asyncio.wait, not wait_for: on Python 3.11 wait_for can swallow a cancellation that races with
        # a completed get(), and this loop would never end.
        getter: asyncio.Task[Event] | None = None
        try:
            while True:
                if getter is None:
                    getter = asyncio.ensure_future(self._queue.get())
                done, _ = await asyncio.wait({getter}, timeout=0.25)
                if getter in done:
                    event, getter = getter.result(), None
                    await self._publish_one(event)
                now = time.monotonic()
                for name, worker in self.workers.items():
                    if name in beats and now - worker.alive_at < 5.0:
                        beats[name].beat()
                if self.lighting is not None and now >= next_rule:
                    next_rule = now + 0.5
                    self.evaluate_lighting(now)
        finally:
            if getter is not None:
                if getter.done() and not getter.cancelled():
                    self._queue.put_nowait(getter.result())  # published on exit, not lost
                else:
                    getter.cancel()

    def views(self) -> dict[str, CameraView]:
        """What each camera shows now, for the lighting rules."""
        out = {}
        for name, w in self.workers.items():
            fresh = w.last_frame_at is not None and time.monotonic() - w.last_frame_at < w.config.stall_s
            out[name] = CameraView(w.streaming and fresh, w.analyzer.analytics.occupancy(),
                                   w.analyzer.last_mean_grey)
        return out

    def evaluate_lighting(self, now: float) -> None:
        if self.lighting is None:
            return
        due = self.lighting.decide(self.views(), now, self._clock())
        by_rule: dict[int, list[int]] = {}
        for rule, req in due:
            by_rule.setdefault(id(rule), []).append(int(req.node_id))
        for rule in self.lighting.rules:
            if id(rule) in by_rule:
                body = {"type": "boost", "zone": rule.zone, "nodes": by_rule[id(rule)], "level": rule.level,
                        "hold_s": round(rule.hold_s)}
                self._emit(Event(f"cam:{rule.camera}", "vision", Priority.VISION, body))
        self.lighting.fire([req for _, req in due])

    # ------------------------------------------------------------------ status and snapshots

    def status(self) -> dict[str, Any]:
        """Per camera: state, frames captured/analysed/skipped, detector runs, reconnects, malformed frames."""
        return {name: {"state": w.state, "detail": w.state_detail, "frames": w.frames_captured,
                       "analyzed": w.frames_analyzed, "skipped": w.frames_skipped,
                       "detector_runs": w.analyzer.detections_run, "reconnects": w.reconnects,
                       "frame_errors": w.frame_errors}
                for name, w in self.workers.items()}

    def snapshot(self, camera: str) -> bytes:
        """A JPEG of the camera's newest frame with people and plates blurred (only if configured)."""
        if not self.config.snapshots:
            raise CityedgeError("snapshots are disabled: frames never leave this gateway",
                                hint="set snapshots = true in [vision] to allow blurred snapshots on request")
        worker = self.workers.get(camera)
        if worker is None:
            raise CityedgeError(f"no camera named {camera!r}", hint=f"cameras: {', '.join(self.workers)}")
        frame = worker.latest_frame
        if frame is None:
            raise CityedgeError(f"camera {camera!r} has no frame yet (state: {worker.state})")
        if self._snapshot_detector is None:  # its own interpreter: the camera threads own theirs
            c = self.config
            self._snapshot_detector = Detector(c.model, c.labels, backend=c.backend, min_score=0.25)
        return encode_private_jpeg(frame, self._snapshot_detector.detect(frame))


def encode_private_jpeg(frame: np.ndarray, detections: list[Detection]) -> bytes:
    """JPEG bytes of ``frame`` after :func:`blur_private`."""
    ok, buf = cv2.imencode(".jpg", blur_private(frame, detections), [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        raise CityedgeError("could not encode the snapshot as JPEG")
    return bytes(buf)
