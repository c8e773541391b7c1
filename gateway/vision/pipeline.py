"""The per-camera pipeline: capture → motion gate → detector → tracker → zones/lines → events.

Three threads per camera, so a slow detector never builds a backlog:

* the **capture thread** reads every frame, resizes it once to the model input (which the motion gate
  also judges) and, if something moved, prepares the input tensor; for a live camera only the newest such
  frame waits for inference (one-slot mailbox). A lossless worker (benchmarks, in-memory sources) instead
  queues up to ``LOSSLESS_AHEAD`` frames, in order, so that the resize of the next frames overlaps the
  invoke of this one without a late capture idling the detector. When the source fails
  it reports ``reconnecting`` and reopens it with exponential backoff and jitter (a camera that does not
  come back is reported ``lost``);
* the **inference thread** takes the newest frame whenever it is free and invokes the detector if the gate
  saw motion (or, while objects are tracked, at least every ``keepalive_s`` so stopped objects keep their
  tracks);
* the **tracking thread** decodes the model outputs, runs the tracker and the zone/line analytics, in
  order, and hands the events to a callback.

Frame size: zones and counting lines are drawn on a frame of one size (the camera's ``zone_frame`` or
``capture_size``); the analyzer reports detections, tracks and events in that frame's pixels whatever
size the stream delivers (the model's outputs are relative to the image, so they are decoded straight
into it), so a camera switched to its 320×240 sub-stream keeps the zones drawn on its 640×480 picture.

:class:`FrameAnalyzer` holds the three stages; ``analyze()`` runs them in order, synchronously and
deterministically (tests and benchmarks feed it frames with timestamps). OpenCV and the TFLite runtimes
release the GIL, so the stages overlap on a multi-core gateway. The inference thread holds the GIL only to
hand tensors in and out (the frame's mean grey level is measured in the capture thread for that reason):
after each invoke it has to win the GIL back from the other two threads, so every microsecond of Python
they run per frame can delay the next invoke.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from gateway.vision.capture import CaptureError, FrameSource, open_source
from gateway.vision.config import CameraConfig
from gateway.vision.detector import Detection, Detector
from gateway.vision.motion import GateResult, MotionGate
from gateway.vision.tracker import Track, Tracker
from gateway.vision.zones import Analytics, VisionEvent

log = logging.getLogger(__name__)

# A lossless worker's capture thread may prepare this many frames ahead of the inference thread: the
# two stages take turns on the GIL and on shared cores, and a little slack keeps a late capture from
# idling the detector (one slot left it waiting on about one frame in ten).
LOSSLESS_AHEAD = 3

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


@dataclass
class Gated:
    """Stage 1 output: a frame, its motion-gate verdict and (if it moved) the model input already made."""

    frame: np.ndarray
    ts: float
    gate: GateResult
    tensor: np.ndarray | None = None
    small: np.ndarray | None = None  # the frame at the detector's input size
    mean_grey: float | None = None  # mean grey level of ``small`` (the lighting rule's scene darkness)


@dataclass
class Inferred:
    """Stage 2 output: the raw model outputs (or a classifier's detections), if the detector ran."""

    frame_size: tuple[int, int]
    ts: float
    ran: bool
    outputs: list[np.ndarray] | None = None
    detections: list[Detection] | None = None


class FrameAnalyzer:
    """Motion gate + detector + tracker + analytics for one camera, in three stages.

    :meth:`gate_frame` (motion gate, and the model input if something moved), :meth:`infer` (the TFLite
    invoke, when needed) and :meth:`track` (decode, tracker, zones/lines). The camera worker runs each
    stage in its own thread; :meth:`analyze` runs all three in order (tests, benchmarks).

    ``geometry``: (width, height) of the frame the analytics' zones and lines are drawn on; detections
    (and so tracks and events) are given in its pixels whatever the frames' size. None: the frames' own.
    """

    def __init__(
        self,
        detector: Detector,
        analytics: Analytics,
        *,
        gate: MotionGate | None = None,
        tracker: Tracker | None = None,
        keepalive_s: float = 1.0,
        always_detect: bool = False,
        geometry: tuple[int, int] | None = None,
    ) -> None:
        self.detector = detector
        self.geometry = geometry
        self._frame_size: tuple[int, int] | None = None  # of the last frame (a change is checked once)
        self.analytics = analytics
        self.gate = gate or MotionGate()
        self.gate.regions = detector.kind == "classifier"  # only classifiers look at motion regions
        self.tracker = tracker or Tracker(min_hits=analytics.min_hits, max_missed_s=max(1.5, 2 * keepalive_s))
        self.keepalive_s = keepalive_s
        self.always_detect = always_detect
        self.frames = 0
        self.detections_run = 0
        self._last_detect = -1e9
        self.last_detections: list[Detection] = []
        self.last_mean_grey = 0.0

    def gate_frame(self, frame: np.ndarray, ts: float) -> Gated:
        """Stage 1: motion gate; if something moved, also prepare the detector's input."""
        if self.geometry is not None and (frame.shape[1], frame.shape[0]) != self._frame_size:
            self._check_size(frame)
        if self.detector.kind == "classifier":
            return Gated(frame, ts, self.gate(frame))
        # one resize serves both: the gate judges the detector's input image
        small = self.detector.resize(frame)
        gate = self.gate(frame, small)
        tensor = self.detector.tensor(small) if (gate.motion or self.always_detect) else None
        # measured here, not in infer(): the inference thread should hold the GIL as briefly as possible
        b, gr, r, _ = cv2.mean(small)
        return Gated(frame, ts, gate, tensor, small, (b + gr + r) / 3)

    def _check_size(self, frame: np.ndarray) -> None:
        """Say once per size change if the frames' shape differs from the zones' frame (stretched zones)."""
        assert self.geometry is not None
        self._frame_size = fw, fh = frame.shape[1], frame.shape[0]
        gw, gh = self.geometry
        if abs((fw / fh) / (gw / gh) - 1.0) > 0.02:
            log.warning(
                "frames are %dx%d but zones and lines were drawn on %dx%d (another aspect ratio): they are "
                "stretched to fit; redraw them on this stream or set zone_frame", fw, fh, gw, gh
            )

    def infer(self, g: Gated) -> Inferred:
        """Stage 2: run the model if the gate saw motion, or tracks need a keep-alive look."""
        # the outputs are decoded straight into the zones' frame (boxes are relative to the image)
        size = self.geometry or (g.frame.shape[1], g.frame.shape[0])
        need = (
            self.always_detect
            or g.gate.motion
            or (bool(self.tracker.tracks) and g.ts - self._last_detect >= self.keepalive_s)
        )
        if not need:
            return Inferred(size, g.ts, False)
        self.detections_run += 1
        self._last_detect = g.ts
        if g.mean_grey is None:
            b, gr, r, _ = cv2.mean(g.frame)
            self.last_mean_grey = (b + gr + r) / 3
        else:
            self.last_mean_grey = g.mean_grey
        if self.detector.kind == "classifier":
            dets = self.detector.detect(g.frame, g.gate.regions)  # in frame pixels
            if self.geometry is not None:
                dets = scale_detections(dets, (g.frame.shape[1], g.frame.shape[0]), self.geometry)
            return Inferred(size, g.ts, True, detections=dets)
        tensor = g.tensor if g.tensor is not None else self.detector.prepare(g.frame)
        return Inferred(size, g.ts, True, outputs=self.detector.infer(tensor))

    def track(self, r: Inferred) -> FrameResult:
        """Stage 3: decode, track, and turn tracks into zone/line events."""
        self.frames += 1
        if not r.ran:
            _, ended = self.tracker.update_missing(r.ts)
            return FrameResult(r.ts, False, events=self.analytics.update([], ended, r.ts))
        if r.detections is not None:
            dets = r.detections
        else:
            assert r.outputs is not None
            dets = self.detector.decode(r.outputs, r.frame_size)
        self.last_detections = dets
        updated, ended = self.tracker.update(dets, r.ts)
        return FrameResult(r.ts, True, dets, updated, self.analytics.update(updated, ended, r.ts))

    def analyze(self, frame: np.ndarray, ts: float) -> FrameResult:
        """All three stages on ``frame`` taken at ``ts`` seconds."""
        return self.track(self.infer(self.gate_frame(frame, ts)))


def scale_detections(dets: list[Detection], frm: tuple[int, int], to: tuple[int, int]) -> list[Detection]:
    """``dets`` with boxes moved from pixels of a ``frm`` (width, height) frame to pixels of a ``to`` one."""
    if frm == to:
        return dets
    sx, sy = to[0] / frm[0], to[1] / frm[1]
    return [
        replace(d, box=(d.box[0] * sx, d.box[1] * sy, d.box[2] * sx, d.box[3] * sy)) for d in dets
    ]


class CameraWorker:
    """Runs one camera's three threads (capture+gate, inference, tracking); reports state and progress.

    ``state``: ``starting`` → ``streaming`` ⇄ ``reconnecting`` → ``lost`` (no frame for ``stall_s``) or
    ``stopped``. ``alive_at`` (monotonic) advances on every turn of every thread, including while waiting
    to reconnect: the agent's watchdog uses it to tell a hung worker from a camera that is merely absent.

    Live cameras drop frames the detector has no time for (``frames_skipped``); with ``lossless=True``
    the capture thread instead waits while ``LOSSLESS_AHEAD`` frames are still waiting for inference
    (benchmarks, in-memory sources): every frame is analysed, in order.
    """

    def __init__(
        self,
        config: CameraConfig,
        analyzer: FrameAnalyzer,
        sink: EventSink,
        *,
        source_factory: SourceFactory | None = None,
        on_state: Callable[[str, str, str], None] | None = None,
        lossless: bool = False,
    ) -> None:
        self.config = config
        self.name = config.name
        self.analyzer = analyzer
        self._sink = sink
        # a stalled network stream gives up after half of stall_s: time to reconnect before "lost"
        self._factory = source_factory or (
            lambda: open_source(
                config.source, fps=config.fps, loop=config.loop, size=config.capture_size,
                timeout_s=config.stall_s / 2,
            )
        )
        self._on_state = on_state
        self.lossless = lossless
        self.state = "starting"
        self.state_detail = ""
        self.alive_at = time.monotonic()
        self.frames_captured = 0
        self.frames_analyzed = 0
        self.frames_skipped = 0  # newer frames replaced this one before inference: no backlog, by design
        self.frame_errors = 0
        self.reconnects = 0
        self.last_frame_at: float | None = None
        self.latest_frame: np.ndarray | None = None
        # frames gated and waiting for inference, oldest first: live cameras keep only the newest one;
        # lossless workers may run up to ``LOSSLESS_AHEAD`` frames ahead of inference
        self._pending: deque[Gated] = deque()
        self._cond = threading.Condition()
        self._results: queue.Queue[Inferred | None] = queue.Queue(maxsize=4)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        # OpenCV's own worker threads only fight the camera threads (and the detector) for the gateway's
        # few cores: a 640×480 area resize took 2.5× longer with them on a loaded 2-core machine.
        cv2.setNumThreads(1)
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._capture_loop, name=f"cam-{self.name}-capture", daemon=True),
            threading.Thread(target=self._infer_loop, name=f"cam-{self.name}-infer", daemon=True),
            threading.Thread(target=self._track_loop, name=f"cam-{self.name}-track", daemon=True),
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
    def threads(self) -> list[threading.Thread]:
        """The worker's threads (``cam-<name>-capture``, ``-infer``, ``-track``), e.g. to read their CPU time."""
        return list(self._threads)

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

    # ------------------------------------------------------------------ stage 1: capture + motion gate

    def _capture_loop(self) -> None:
        cfg = self.config
        delay = cfg.reconnect_min_s
        source: FrameSource | None = None
        down_since: float | None = None
        fresh = False  # the source was just opened and has not delivered a frame yet
        while not self._stop.is_set():
            self.alive_at = time.monotonic()
            if source is None:
                try:
                    source = self._factory()
                    fresh = True
                    self.analyzer.gate.reset()
                except (CaptureError, OSError) as exc:
                    down_since = down_since or time.monotonic()
                    delay = self._back_off(str(exc), down_since, delay)
                    continue
            frame = source.read()
            if frame is None:
                source.close()
                source = None
                self.reconnects += 1
                # "no frame for stall_s" counts from the last frame, not from when a read gave up on it
                down_since = down_since or self.last_frame_at or time.monotonic()
                if fresh:  # opens but delivers nothing: wait before the next try, as for a failed open
                    delay = self._back_off("no frame from source", down_since, delay)
                else:  # a stream that ended or dropped usually comes back at once
                    self._set_state("reconnecting", "no frame from source")
                continue
            now = time.monotonic()
            delay = cfg.reconnect_min_s
            down_since = None
            fresh = False
            self.frames_captured += 1
            self.last_frame_at = now
            self.latest_frame = frame
            try:
                gated = self.analyzer.gate_frame(frame, now)
            except Exception:  # a malformed frame (wrong shape, empty): count it, drop it, go on
                self.frame_errors += 1
                log.exception("camera %s: frame dropped", self.name)
                continue
            with self._cond:
                if self.lossless:
                    while len(self._pending) >= LOSSLESS_AHEAD and not self._stop.is_set():
                        self._cond.wait(0.5)
                elif self._pending:
                    self.frames_skipped += len(self._pending)
                    self._pending.clear()
                self._pending.append(gated)
                self._cond.notify_all()
            self._set_state("streaming")
        if source is not None:
            source.close()

    def _back_off(self, detail: str, down_since: float, delay: float) -> float:
        """Say the camera is reconnecting (``lost`` after ``stall_s`` without a frame), wait ``delay`` with
        jitter, and return the next delay (doubled up to ``reconnect_max_s``)."""
        cfg = self.config
        lost = time.monotonic() - down_since >= cfg.stall_s
        self._set_state("lost" if lost else "reconnecting", detail)
        self._sleep(delay * random.uniform(0.8, 1.2))
        return min(delay * 2, cfg.reconnect_max_s)

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stop.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return
            self._stop.wait(min(left, 0.5))
            self.alive_at = time.monotonic()

    # ------------------------------------------------------------------ stage 2: inference

    def _infer_loop(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                if not self._pending:
                    self._cond.wait(0.5)
                item = self._pending.popleft() if self._pending else None
                self._cond.notify_all()
            self.alive_at = time.monotonic()
            if item is None:
                continue
            try:
                result = self.analyzer.infer(item)
            except Exception:
                self.frame_errors += 1
                log.exception("camera %s: inference failed on a frame", self.name)
                continue
            while not self._stop.is_set():
                try:
                    self._results.put(result, timeout=0.5)
                    break
                except queue.Full:
                    self.alive_at = time.monotonic()
        self._results.put(None)

    # ------------------------------------------------------------------ stage 3: tracking and events

    def _track_loop(self) -> None:
        while True:
            try:
                item = self._results.get(timeout=0.5)
            except queue.Empty:
                self.alive_at = time.monotonic()
                if self._stop.is_set() and not any(t.is_alive() for t in self._threads if t.name.endswith("-infer")):
                    return
                events = self.analyzer.analytics.tick(time.monotonic())  # counts go out without frames too
                if events:
                    self._sink(self.name, events)
                continue
            if item is None:
                return
            self.alive_at = time.monotonic()
            try:
                result = self.analyzer.track(item)
            except Exception:
                self.frame_errors += 1
                log.exception("camera %s: tracking failed on a frame", self.name)
                continue
            self.frames_analyzed += 1
            if result.events:
                self._sink(self.name, result.events)
