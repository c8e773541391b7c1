"""The per-camera pipeline: capture → motion gate → detector → tracker → zones/lines → events.

Two threads per camera, so a slow detector never builds a backlog:

* the **capture thread** reads every frame, runs the (cheap) motion gate on it and leaves only the newest
  gated frame in a one-slot mailbox; when the source fails it reports ``reconnecting`` and reopens it with
  exponential backoff and jitter (a camera that does not come back is reported ``lost``);
* the **analysis thread** takes the newest frame whenever it is free, runs the detector if the gate saw
  motion (or, while objects are being tracked, at least every ``keepalive_s`` so stopped objects keep
  their tracks), then the tracker and the zone/line analytics, and hands the events to a callback.

:class:`FrameAnalyzer` is the same analysis, synchronous and deterministic (tests and benchmarks feed it
frames with timestamps). OpenCV and the TFLite runtimes release the GIL, so the two threads overlap.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from gateway.vision.capture import CaptureError, FrameSource, open_source
from gateway.vision.config import CameraConfig
from gateway.vision.detector import Detection, Detector
from gateway.vision.motion import GateResult, MotionGate
from gateway.vision.tracker import Track, Tracker
from gateway.vision.zones import Analytics, VisionEvent

log = logging.getLogger(__name__)

SourceFactory = Callable[[], FrameSource]
EventSink = Callable[[str, list[VisionEvent]], None]  # (camera name, events)


@dataclass
class FrameResult:
    """What one analysed frame produced."""

    ts: float
    detected: bool
    detections: list[Detection] = field(default_factory=list)
    tracks: list[Track] = field(default_factory=list)
    events: list[VisionEvent] = field(default_factory=list)


class FrameAnalyzer:
    """Motion gate + detector + tracker + analytics for one camera, driven frame by frame."""

    def __init__(self, detector: Detector, analytics: Analytics, *, gate: MotionGate | None = None,
                 tracker: Tracker | None = None, keepalive_s: float = 1.0, always_detect: bool = False) -> None:
        self.detector = detector
        self.analytics = analytics
        self.gate = gate or MotionGate()
        self.tracker = tracker or Tracker(min_hits=analytics.min_hits)
        self.keepalive_s = keepalive_s
        self.always_detect = always_detect
        self.frames = 0
        self.detections_run = 0
        self._last_detect = -1e9
        self.last_detections: list[Detection] = []
        self.last_mean_grey = 0.0

    def analyze(self, frame: np.ndarray, ts: float, gate: GateResult | None = None) -> FrameResult:
        """Analyse ``frame`` taken at ``ts`` seconds; ``gate`` if the motion gate already ran on it."""
        self.frames += 1
        if gate is None:
            gate = self.gate(frame)
        need = (self.always_detect or gate.motion
                or (self.tracker.tracks and ts - self._last_detect >= self.keepalive_s))
        if not need:
            if self.tracker.tracks:  # nothing moves: age tracks out without running the detector
                _, ended = self.tracker.update_missing(ts)
                return FrameResult(ts, False, events=self.analytics.update([], ended, ts))
            return FrameResult(ts, False, events=self.analytics.update([], [], ts))
        dets = self.detector.detect(frame, gate.regions)
        self.detections_run += 1
        self._last_detect = ts
        self.last_detections = dets
        self.last_mean_grey = float(frame[::8, ::8].mean())
        updated, ended = self.tracker.update(dets, ts)
        events = self.analytics.update(updated, ended, ts)
        return FrameResult(ts, True, dets, updated, events)


class CameraWorker:
    """Runs one camera's capture and analysis threads; reports state and progress.

    ``state``: ``starting`` → ``streaming`` ⇄ ``reconnecting`` → ``lost`` (no frame for ``stall_s``) or
    ``stopped``. ``alive_at`` (monotonic) advances on every turn of both threads, including while waiting
    to reconnect: the agent's watchdog uses it to tell a hung worker from a camera that is merely absent.
    """

    def __init__(self, config: CameraConfig, analyzer: FrameAnalyzer, sink: EventSink, *,
                 source_factory: SourceFactory | None = None,
                 on_state: Callable[[str, str, str], None] | None = None) -> None:
        self.config = config
        self.name = config.name
        self.analyzer = analyzer
        self._sink = sink
        self._factory = source_factory or (lambda: open_source(config.source, fps=config.fps, loop=config.loop))
        self._on_state = on_state
        self.state = "starting"
        self.state_detail = ""
        self.alive_at = time.monotonic()
        self.frames_captured = 0
        self.frames_analyzed = 0
        self.frames_skipped = 0  # newer frames replaced this one before analysis: no backlog, by design
        self.reconnects = 0
        self.last_frame_at: float | None = None
        self._slot: tuple[np.ndarray, float, GateResult] | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.latest_frame: np.ndarray | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._capture_loop, name=f"cam-{self.name}-capture", daemon=True),
            threading.Thread(target=self._analysis_loop, name=f"cam-{self.name}-analysis", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout)
        self._set_state("stopped")

    @property
    def streaming(self) -> bool:
        return self.state == "streaming"

    def _set_state(self, state: str, detail: str = "") -> None:
        if state == self.state:
            return
        self.state, self.state_detail = state, detail
        log.info("camera %s: %s%s", self.name, state, f" ({detail})" if detail else "")
        if self._on_state is not None:
            self._on_state(self.name, state, detail)

    # ------------------------------------------------------------------ capture thread

    def _capture_loop(self) -> None:
        cfg = self.config
        delay = cfg.reconnect_min_s
        source: FrameSource | None = None
        down_since: float | None = None
        while not self._stop.is_set():
            self.alive_at = time.monotonic()
            if source is None:
                try:
                    source = self._factory()
                    self.analyzer.gate.reset()
                except (CaptureError, OSError) as exc:
                    now = time.monotonic()
                    down_since = down_since or now
                    lost = now - down_since >= cfg.stall_s
                    self._set_state("lost" if lost else "reconnecting", str(exc))
                    self._sleep(delay * random.uniform(0.8, 1.2))
                    delay = min(delay * 2, cfg.reconnect_max_s)
                    continue
            frame = source.read()
            if frame is None:
                source.close()
                source = None
                self.reconnects += 1
                down_since = time.monotonic()
                self._set_state("reconnecting", "no frame from source")
                continue
            now = time.monotonic()
            delay = cfg.reconnect_min_s
            down_since = None
            self.frames_captured += 1
            self.last_frame_at = now
            self.latest_frame = frame
            gate = self.analyzer.gate(frame)
            with self._cond:
                if self._slot is not None:
                    self.frames_skipped += 1
                self._slot = (frame, now, gate)
                self._cond.notify()
            self._set_state("streaming")
        if source is not None:
            source.close()

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stop.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return
            self._stop.wait(min(left, 0.5))
            self.alive_at = time.monotonic()

    # ------------------------------------------------------------------ analysis thread

    def _analysis_loop(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                if self._slot is None:
                    self._cond.wait(0.5)
                item, self._slot = self._slot, None
            self.alive_at = time.monotonic()
            if item is None:
                continue
            frame, ts, gate = item
            try:
                result = self.analyzer.analyze(frame, ts, gate)
            except Exception:  # one bad frame must not end the camera: count it and go on
                log.exception("camera %s: analysis failed on a frame", self.name)
                continue
            self.frames_analyzed += 1
            if result.events:
                self._sink(self.name, result.events)
