"""A camera's smaller sub-stream (``capture_size``): zones, lines and privacy blurring drawn on one frame size
keep working on frames of another, and the configuration says so or names what is wrong."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cityedge.errors import ConfigError
from gateway.vision.capture import OpenCVSource
from gateway.vision.config import DEFAULT_LABELS, DEFAULT_MODEL, load_vision_config
from gateway.vision.detector import Detector, installed_backends
from gateway.vision.pipeline import FrameAnalyzer
from gateway.vision.scenes import SceneVideo, VideoSpec, write_video
from gateway.vision.service import build_analyzer, encode_private_jpeg
from gateway.vision.zones import Analytics, CountLine

BACKEND = installed_backends()[0]
FPS = 15.0

CONFIG = f"""
[vision]
enabled = true
backend = "{BACKEND}"
[[vision.camera]]
name = "north"
source = "rtsp://127.0.0.1:8554/north_sub"
capture_size = [320, 240]
zone_frame = [640, 480]
[[vision.camera.zone]]
name = "road"
polygon = [[0, 215], [640, 215], [640, 345], [0, 345]]
[[vision.camera.line]]
name = "mid"
points = [[320, 480], [320, 0]]
directions = ["ltr", "rtl"]
"""


@pytest.fixture(scope="module")
def substream() -> tuple[list[np.ndarray], dict[str, dict[str, int]]]:
    """The pipeline tests' held-out street (seed 2024) as a 320×240 stream: same scene, smaller frames."""
    video = SceneVideo(VideoSpec(seed=2024, frames=450, fps=FPS, rate=0.9, size=(320, 240)))
    frames = [f for f, _ in video]
    assert frames[0].shape == (240, 320, 3)
    return frames, video.truth.crossings


def _run(an: FrameAnalyzer, frames: list[np.ndarray]) -> tuple[list[str], float]:
    """Event kinds, and the right-most box edge the analyzer reported."""
    kinds, right = [], 0.0
    stamped = [(f, i / FPS) for i, f in enumerate(frames)]
    stamped += [(frames[-1], (len(frames) + k) / FPS) for k in range(1, 40)]  # let the last tracks end
    for frame, ts in stamped:
        result = an.analyze(frame, ts)
        kinds += [e.kind for e in result.events]
        right = max([right] + [d.box[2] for d in result.detections])
    return kinds, right


def _errors(counted: dict[str, dict[str, int]], truth: dict[str, dict[str, int]]) -> tuple[int, int]:
    total = sum(n for dirs in truth.values() for n in dirs.values())
    err = sum(abs(counted.get(lb, {}).get(d, 0) - n) for lb, dirs in truth.items() for d, n in dirs.items())
    return err, total


def test_zones_and_lines_drawn_at_640x480_work_on_a_320x240_stream(tmp_path: Path, substream: tuple) -> None:
    frames, truth = substream
    f = tmp_path / "gw.toml"
    f.write_text(CONFIG)
    cfg = load_vision_config(f)
    (cam,) = cfg.cameras
    assert cam.capture_size == (320, 240) and cam.zone_frame == (640, 480)
    an = build_analyzer(cfg, cam)
    assert an.geometry == (640, 480)
    kinds, right = _run(an, frames)
    err, total = _errors({lb: dict(v) for lb, v in an.analytics.totals["mid"].items()}, truth)
    assert total >= 8 and err <= 1, f"counted {dict(an.analytics.totals['mid'])}, truth {truth}"
    assert "zone_enter" in kinds and "zone_leave" in kinds
    assert right > 600  # boxes are reported in the zones' 640×480 pixels, not the stream's


def test_without_the_zone_frame_the_same_line_misses_everything(substream: tuple) -> None:
    """The control: the 640×480 line taken as 320×240 pixels lies on the frame's right edge."""
    frames, _ = substream
    det = Detector(DEFAULT_MODEL, DEFAULT_LABELS, backend=BACKEND)
    an = FrameAnalyzer(det, Analytics([], [CountLine("mid", (320, 480), (320, 0), directions=("ltr", "rtl"))]))
    _, right = _run(an, frames[:200])
    assert not an.analytics.totals["mid"] and right <= 320


def test_privacy_blur_on_a_320x240_frame(substream: tuple) -> None:
    frames, _ = substream
    det = Detector(DEFAULT_MODEL, DEFAULT_LABELS, backend=BACKEND, min_score=0.25)
    frame, people = None, []
    for f in frames[60:]:
        people = [d for d in det.detect(f) if d.label in ("pedestrian", "cyclist")]
        if people:
            frame = f
            break
    assert frame is not None, "the street should show a person"
    img = cv2.imdecode(np.frombuffer(encode_private_jpeg(frame, det.detect(frame)), np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "the snapshot should be a JPEG OpenCV can decode"
    assert img.shape == (240, 320, 3)
    for d in people:  # boxes in the frame's own pixels: the person's pixels are no longer the original ones
        x0, y0, x1, y1 = (int(v) for v in d.box)
        assert x1 <= 320 and y1 <= 240
        original = frame[y0:y1, x0:x1].astype(np.int16)
        assert np.abs(img[y0:y1, x0:x1].astype(np.int16) - original).mean() > 8


def test_a_file_source_delivers_its_own_size_whatever_capture_size_says(tmp_path: Path) -> None:
    path = tmp_path / "street.avi"
    write_video(path, VideoSpec(seed=5, frames=5, fps=FPS))
    src = OpenCVSource(str(path), size=(320, 240))
    try:
        frame = src.read()
    finally:
        src.close()
    assert frame is not None and frame.shape == (480, 640, 3)


@pytest.mark.parametrize(
    ("old", "new", "key", "problem"),
    [
        ("capture_size = [320, 240]", 'capture_size = "320x240"', "vision.camera[0].capture_size", "[width, height]"),
        ("capture_size = [320, 240]", "capture_size = [320.5, 240]", "vision.camera[0].capture_size", "whole pixels"),
        ("capture_size = [320, 240]", "capture_size = [8, 240]", "vision.camera[0].capture_size", "16..8192"),
        ("zone_frame = [640, 480]", "zone_frame = [640]", "vision.camera[0].zone_frame", "[width, height]"),
        # zones drawn on 640×480 but only the 320×240 capture size said: the mix-up is caught, not stretched
        ("zone_frame = [640, 480]", "", "vision.camera[0].zone[0].polygon", "outside the 320x240 frame"),
        (
            "zone_frame = [640, 480]\n",
            "zone_frame = [640, 480]\nzone_size = [640, 480]\n",
            "vision.camera[0].zone_size",
            "unknown key",
        ),
    ],
)
def test_frame_size_errors_name_file_and_key(tmp_path: Path, old: str, new: str, key: str, problem: str) -> None:
    assert old in CONFIG
    f = tmp_path / "gw.toml"
    f.write_text(CONFIG.replace(old, new, 1))
    with pytest.raises(ConfigError) as err:
        load_vision_config(f)
    assert err.value.key == key and problem in err.value.problem and str(f) in str(err.value)
