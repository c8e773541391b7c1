"""The camera pipeline with the shipped detector on synthetic street videos: counting against ground truth,
capture through OpenCV from a real video file, drop-outs and reconnects, events into the service's
publish callback, snapshots and the privacy default.

Parametrised over the installed TFLite runtimes where the detector matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from cityedge.errors import CityedgeError
from gateway.events import Event, Priority
from gateway.vision.capture import ArraySource, CaptureError, FrameSource, OpenCVSource
from gateway.vision.config import DEFAULT_LABELS, DEFAULT_MODEL, CameraConfig, VisionConfig
from gateway.vision.detector import Detector, installed_backends
from gateway.vision.pipeline import CameraWorker, FrameAnalyzer
from gateway.vision.scenes import SceneVideo, VideoSpec, quiet_frames, write_video
from gateway.vision.service import VisionService
from gateway.vision.zones import Analytics, CountLine, VisionEvent, Zone
from tests.network_cameras import LoopbackCamera, MjpegCamera, RtspCamera

BACKENDS = installed_backends()
LINE = CountLine("mid", (320, 480), (320, 0), directions=("ltr", "rtl"))  # a_to_b = left to right
FPS = 15.0


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def street_video() -> tuple[list[np.ndarray], dict[str, dict[str, int]]]:
    """A held-out video (seed not used in training): 450 frames, day, objects of all three classes."""
    video = SceneVideo(VideoSpec(seed=2024, frames=450, fps=FPS, rate=0.9))
    frames = [f for f, _ in video]
    return frames, video.truth.crossings


def _count(det: Detector, frames: list[np.ndarray]) -> tuple[dict[str, dict[str, int]], FrameAnalyzer]:
    an = FrameAnalyzer(det, Analytics([], [LINE], interval_s=1e9))
    for i, frame in enumerate(frames):
        an.analyze(frame, i / FPS)
    for k in range(1, 40):  # let the last tracks end
        an.analyze(frames[-1], (len(frames) + k) / FPS)
    return {label: dict(v) for label, v in an.analytics.totals["mid"].items()}, an


def test_line_counts_match_ground_truth(backend: str, street_video: tuple) -> None:
    frames, truth = street_video
    det = Detector(DEFAULT_MODEL, DEFAULT_LABELS, backend=backend)
    counted, an = _count(det, frames)
    expected = {label: {d: n for d, n in dirs.items() if n} for label, dirs in truth.items()}
    expected = {label: dirs for label, dirs in expected.items() if dirs}
    total = sum(n for dirs in expected.values() for n in dirs.values())
    assert total >= 8, "the test video should have enough crossings to mean something"
    errors = sum(
        abs(counted.get(lb, {}).get(d, 0) - expected.get(lb, {}).get(d, 0))
        for lb in set(counted) | set(expected)
        for d in ("ltr", "rtl")
    )
    assert errors <= 1, f"counted {counted}, truth {expected}"
    assert an.detections_run < an.frames  # the motion gate skipped frames with nothing moving


def test_quiet_scene_never_runs_the_detector() -> None:
    det = Detector(DEFAULT_MODEL, DEFAULT_LABELS, backend=BACKENDS[0])
    an = FrameAnalyzer(det, Analytics([], [LINE]))
    for i, frame in enumerate(quiet_frames(n=45, noise=3.0)):
        result = an.analyze(frame, i / FPS)
        assert not result.detected and not result.events
    assert an.detections_run == 0


# ---------------------------------------------------------------------------------------------- camera worker


class FlakySource:
    """Fails to open ``fail_opens`` times, then gives ``frames_per_open`` frames and ends (a drop-out)."""

    def __init__(self, frames: list[np.ndarray], fail_opens: int, frames_per_open: int, pace_fps: float = 200) -> None:
        self.frames = frames
        self.fail_opens = fail_opens
        self.per_open = frames_per_open
        self.pace_fps = pace_fps
        self.opens = 0
        self.attempts = 0

    def __call__(self) -> FrameSource:
        self.attempts += 1
        if self.attempts <= self.fail_opens:
            raise CaptureError("camera unplugged (simulated)")
        self.opens += 1
        return ArraySource(self.frames[: self.per_open], pace_fps=self.pace_fps)


def _camera(**kw: Any) -> CameraConfig:
    base: dict[str, Any] = {
        "name": "north",
        "source": "memory",
        "reconnect_min_s": 0.02,
        "reconnect_max_s": 0.1,
        "stall_s": 0.3,
    }
    base.update(kw)
    return CameraConfig(**base)


def _wait(pred, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return False


def test_camera_worker_survives_dropouts_and_reports_state(street_video: tuple) -> None:
    frames, _ = street_video
    det = Detector(DEFAULT_MODEL, DEFAULT_LABELS, backend=BACKENDS[0])
    states: list[str] = []
    events: list[VisionEvent] = []
    lock = threading.Lock()

    def sink(cam: str, evs: list[VisionEvent]) -> None:
        with lock:
            events.extend(evs)

    src = FlakySource(frames[:120], fail_opens=2, frames_per_open=40)
    worker = CameraWorker(
        _camera(),
        FrameAnalyzer(det, Analytics([], [LINE])),
        sink,
        source_factory=src,
        on_state=lambda cam, st, detail: states.append(st),
    )
    worker.start()
    try:
        assert _wait(lambda: src.opens >= 3 and worker.frames_captured >= 100)
        alive = worker.alive_at
        assert _wait(lambda: worker.alive_at > alive)  # progress for the watchdog, even between frames
    finally:
        worker.stop()
    assert states[0] == "reconnecting" and "streaming" in states and states[-1] == "stopped"
    assert states.count("streaming") >= 3  # came back after every drop-out
    assert worker.reconnects >= 2
    assert worker.frames_analyzed + worker.frames_skipped <= worker.frames_captured


def test_malformed_frames_are_counted_and_dropped(street_video: tuple) -> None:
    frames, _ = street_video
    det = Detector(DEFAULT_MODEL, DEFAULT_LABELS, backend=BACKENDS[0])
    bad = [np.zeros((480, 640), np.uint8), np.zeros((0, 0, 3), np.uint8)]  # grey, empty
    feed = [*frames[100:105], bad[0], *frames[105:110], bad[1], *frames[110:115]]
    src = FlakySource(feed, fail_opens=0, frames_per_open=len(feed))
    worker = CameraWorker(
        _camera(),
        FrameAnalyzer(det, Analytics([], [LINE])),
        lambda c, e: None,
        source_factory=lambda: src() if src.opens == 0 else ArraySource([]),
        lossless=True,
    )
    worker.start()
    try:
        assert _wait(lambda: worker.frames_analyzed >= 15)
    finally:
        worker.stop()
    assert worker.frame_errors == 2 and worker.frames_captured == 17 and worker.frames_analyzed == 15


def _frameless_worker(src: FlakySource, config: CameraConfig) -> tuple[CameraWorker, list[str]]:
    """A started worker on a source that never gives a frame, and the states it reports."""
    det = Detector(DEFAULT_MODEL, DEFAULT_LABELS, backend=BACKENDS[0])
    states: list[str] = []
    worker = CameraWorker(
        config,
        FrameAnalyzer(det, Analytics([], [])),
        lambda c, e: None,
        source_factory=src,
        on_state=lambda cam, st, detail: states.append(st),
    )
    worker.start()
    return worker, states


def test_camera_that_stays_away_is_reported_lost() -> None:
    src = FlakySource([], fail_opens=10_000, frames_per_open=0)
    worker, states = _frameless_worker(src, _camera())
    try:
        assert _wait(lambda: "lost" in states, 5.0)
        assert src.attempts >= 3  # kept trying with backoff
    finally:
        worker.stop()
    assert states[:2] == ["reconnecting", "lost"]


def test_a_source_that_opens_but_gives_nothing_is_retried_with_backoff_and_reported_lost() -> None:
    # an RTSP server that accepts and hangs up at once, or an empty file: no tight open/close loop
    src = FlakySource([], fail_opens=0, frames_per_open=0)
    worker, states = _frameless_worker(src, _camera(reconnect_min_s=0.05, reconnect_max_s=0.2, stall_s=0.3))
    try:
        assert _wait(lambda: "lost" in states, 5.0)
        time.sleep(0.5)
    finally:
        worker.stop()
    # about 1 s of waits 0.05, 0.1, 0.2, 0.2, ... (±20 %): a handful of opens, not thousands
    assert 3 <= src.opens <= 12, src.opens
    assert states[:2] == ["reconnecting", "lost"] and worker.frames_captured == 0


@pytest.mark.parametrize("kind", [MjpegCamera, RtspCamera], ids=["http", "rtsp"])
def test_a_network_camera_that_stalls_is_reported_lost_and_comes_back(kind: type[LoopbackCamera]) -> None:
    """A network stream on loopback (MJPEG over HTTP; JPEG over RTP over RTSP), read by OpenCV's FFmpeg
    backend, goes silent without closing its connection: the worker must notice within ``stall_s``, not after
    FFmpeg's 30 s, and stream again when the camera comes back."""
    frames = [f for f, _ in SceneVideo(VideoSpec(seed=11, frames=20, fps=FPS, size=(320, 240)))]
    det = Detector(DEFAULT_MODEL, DEFAULT_LABELS, backend=BACKENDS[0])
    states: list[tuple[float, str]] = []
    camera = kind(frames, fps=30)
    with camera.serving():
        config = _camera(source=camera.url, capture_size=(320, 240), reconnect_min_s=0.05, reconnect_max_s=0.2,
                         stall_s=1.0)
        worker = CameraWorker(
            config,
            FrameAnalyzer(det, Analytics([], [LINE]), geometry=(640, 480)),
            lambda c, e: None,
            on_state=lambda cam, st, detail: states.append((time.monotonic(), st)),
        )
        worker.start()
        try:
            assert _wait(lambda: worker.frames_analyzed >= 10)
            assert worker.latest_frame is not None and worker.latest_frame.shape == (240, 320, 3)
            assert worker.state == "streaming"
            camera.stall()
            stalled_at = time.monotonic()
            assert _wait(lambda: worker.state == "lost", 10.0)
            lost_at = next(t for t, st in states if st == "lost")
            # the read gives up after stall_s / 2, the reopen after another half: lost about stall_s after
            # the last frame (FFmpeg alone would wait 30 s for each)
            assert lost_at - stalled_at <= 2.5, lost_at - stalled_at
            seen = worker.frames_captured
            camera.resume()
            assert _wait(lambda: worker.state == "streaming" and worker.frames_captured >= seen + 10, 10.0)
        finally:
            worker.stop()
    after_stall = [st for t, st in states if t >= stalled_at]
    assert after_stall[:2] == ["reconnecting", "lost"] and "streaming" in after_stall
    assert worker.reconnects >= 1 and camera.connections >= 2


def test_opencv_file_capture_paced_and_looping(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    write_video(path, VideoSpec(seed=5, frames=10, fps=FPS))
    src = OpenCVSource(str(path), pace_fps=50, loop=True)
    t0 = time.monotonic()
    got = [src.read() for _ in range(25)]
    elapsed = time.monotonic() - t0
    src.close()
    assert all(f is not None and f.shape == (480, 640, 3) for f in got)  # looped past the 10 frames
    assert elapsed >= 24 / 50 * 0.9  # played at 50 fps, not as fast as it decodes
    with pytest.raises(CaptureError):
        OpenCVSource(str(tmp_path / "missing.avi"))


# ---------------------------------------------------------------------------------------------- service


async def _run_service(
    cfg: VisionConfig, sources: dict, until, timeout: float = 20.0
) -> tuple[list[Event], VisionService]:
    published: list[Event] = []

    async def publish(ev: Event) -> None:
        published.append(ev)

    async with VisionService(cfg, publish, sources=sources) as vs:
        task = asyncio.create_task(vs.run())
        end = time.monotonic() + timeout
        while time.monotonic() < end and not until(published, vs):
            await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return published, vs


async def test_service_publishes_zone_events_and_camera_faults(street_video: tuple, tmp_path: Path) -> None:
    frames, _ = street_video
    road = Zone("road", ((0, 215), (640, 215), (640, 345), (0, 345)))
    cam = _camera(zones=(road,), lines=(LINE,), stall_s=0.5)
    cfg = VisionConfig(enabled=True, cameras=(cam,), interval_s=2.0, backend=BACKENDS[0])
    once = {"done": False}

    def factory() -> FrameSource:
        if once["done"]:
            raise CaptureError("camera gone (simulated)")
        once["done"] = True
        return ArraySource(frames[:200], pace_fps=100)

    def until(pub: list[Event], vs: VisionService) -> bool:
        return any(e.body.get("state") == "lost" for e in pub) and any(e.body["type"] == "counts" for e in pub)

    published, vs = await _run_service(cfg, {"north": factory}, until)
    kinds = [e.body["type"] for e in published]
    assert "zone_enter" in kinds and "line_cross" in kinds and "counts" in kinds
    assert all(e.source == "cam:north" and e.kind == "vision" for e in published)
    assert {e.priority for e in published if e.body["type"] != "camera_state"} == {Priority.VISION}
    lost = [e for e in published if e.body.get("state") == "lost"]
    assert lost and lost[0].priority is Priority.FAULT
    assert vs.status()["north"]["frames"] == 200
    # the payloads are plain data for the uplink's CBOR/JSON encoder
    enter = next(e for e in published if e.body["type"] == "zone_enter")
    assert set(enter.body) == {"type", "zone", "track", "label"} and enter.body["zone"] == "road"


async def test_snapshots_are_off_by_default_and_blurred_when_on(street_video: tuple) -> None:
    frames, _ = street_video
    busy = next(i for i, f in enumerate(frames) if i > 60)
    src = {"north": lambda: ArraySource([frames[busy]] * 5, pace_fps=50)}
    cfg = VisionConfig(enabled=True, cameras=(_camera(),), backend=BACKENDS[0])

    _, vs = await _run_service(cfg, src, lambda p, v: v.workers["north"].frames_captured >= 5)
    with pytest.raises(CityedgeError, match="snapshots are disabled"):
        vs.snapshot("north")

    cfg_on = VisionConfig(enabled=True, cameras=(_camera(),), backend=BACKENDS[0], snapshots=True)
    _, vs_on = await _run_service(cfg_on, src, lambda p, v: v.workers["north"].frames_captured >= 5)
    jpeg = vs_on.snapshot("north")
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    assert img.shape == (480, 640, 3)
    dets = vs_on.workers["north"].analyzer.detector.detect(frames[busy])
    people = [d for d in dets if d.label in ("pedestrian", "cyclist")]
    for d in people:  # the person's pixels are no longer the original ones
        x0, y0, x1, y1 = (int(v) for v in d.box)
        original = frames[busy][y0:y1, x0:x1].astype(np.int16)
        assert np.abs(img[y0:y1, x0:x1].astype(np.int16) - original).mean() > 8
    with pytest.raises(CityedgeError, match="no camera named"):
        vs_on.snapshot("south")


class RecordingAnalyzer(FrameAnalyzer):
    """The real analyzer, remembering what its tracking stage saw, in the order it saw it."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.seen: list[list[tuple[str, tuple[float, float, float, float]]]] = []

    def track(self, r: Any) -> Any:
        result = super().track(r)
        self.seen.append([(d.label, d.box) for d in result.detections])
        return result


def test_lossless_worker_analyses_every_frame_in_order(street_video: tuple) -> None:
    """With the capture thread running ahead of inference (lossless), the tracker still gets every frame,
    once, in camera order: its per-frame detections equal a synchronous run over the same frames."""
    frames, _ = street_video
    feed = frames[60:180]
    det = Detector(DEFAULT_MODEL, DEFAULT_LABELS, backend=BACKENDS[0])
    reference = RecordingAnalyzer(det, Analytics([], [LINE]))
    for i, frame in enumerate(feed):
        reference.analyze(frame, i / FPS)
    assert sum(1 for dets in reference.seen if dets) > 60  # a busy stretch: order mismatches would show
    live = RecordingAnalyzer(Detector(DEFAULT_MODEL, DEFAULT_LABELS, backend=BACKENDS[0]), Analytics([], [LINE]))
    src = FlakySource(feed, fail_opens=0, frames_per_open=len(feed), pace_fps=0)  # as fast as it takes them
    worker = CameraWorker(
        _camera(),
        live,
        lambda c, e: None,
        source_factory=lambda: src() if src.opens == 0 else ArraySource([]),
        lossless=True,
    )
    worker.start()
    try:
        # a bound, not a speed test: tflite-runtime runs this model at ~30 invokes/s on a slow core
        assert _wait(lambda: worker.frames_analyzed >= len(feed), timeout=60.0)
    finally:
        worker.stop()
    assert worker.frames_skipped == 0 and worker.frames_analyzed == len(feed)
    assert live.seen == reference.seen


def test_worker_threads_are_named_by_stage_and_their_cpu_time_is_readable(street_video: tuple) -> None:
    """benchmarks/vision.py reports each stage's CPU per frame from the worker's threads: it finds them by
    their names' last part, and the inference thread is the one that spent CPU on the detector. (Per-thread
    CPU time comes from Linux's /proc/self/task: the gateway is a Linux box, as CI is.)"""
    from benchmarks.vision import thread_cpu_s

    frames, _ = street_video
    feed = frames[60:100]
    analyzer = FrameAnalyzer(Detector(DEFAULT_MODEL, DEFAULT_LABELS, backend=BACKENDS[0]), Analytics([], [LINE]))
    worker = CameraWorker(_camera(), analyzer, lambda c, e: None, source_factory=lambda: ArraySource(feed),
                          lossless=True)
    worker.start()
    try:
        before = thread_cpu_s(worker.threads)
        assert _wait(lambda: worker.frames_analyzed >= len(feed), timeout=60.0)
        after = thread_cpu_s(worker.threads)
    finally:
        worker.stop()
    assert sorted(before) == sorted(after) == ["capture", "infer", "track"]
    assert after["infer"] > before["infer"]  # 40 detector calls: tens of ms of CPU at the very least
    assert all(after[s] >= before[s] for s in after)
