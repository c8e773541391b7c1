"""Vision benchmark: detector rate, pipeline rate under constant motion, CPU on a quiet scene, mAP@0.5 and
counting error on held-out synthetic data, for every TFLite runtime installed in this Python.

    .venv/bin/python benchmarks/vision.py [--quick]                  # ai-edge-litert
    PYTHONPATH=. .venv-tflite/bin/python benchmarks/vision.py --quick  # tflite-runtime

Figures (per runtime):
  detector_fps   invokes/s of the shipped int8 detector on a prepared input (1 thread, XNNPACK default)
  pipeline_fps   frames/s fully analysed (motion gate, detector, tracker, zones) by a camera worker fed
                 frames as fast as it takes them, on a scene where something moves in every frame
  pipeline_ratio pipeline_fps / detector_fps (target >= 0.9)
  quiet_cpu_pct  CPU of this process, in % of one core, for a camera worker reading a 640x480 MJPG file of
                 an empty street at 15 frames/s through OpenCV (decode included; target <= 10)
  map50          mAP@0.5 of the detector on held-out synthetic images (target >= 0.8)
  count_err_pct  line-count error on held-out synthetic videos, |counted - truth| / truth (target <= 5)
The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.vision.capture import ArraySource, OpenCVSource
from gateway.vision.config import DEFAULT_LABELS, DEFAULT_MODEL, CameraConfig
from gateway.vision.detector import Detector, installed_backends
from gateway.vision.metrics import average_precision
from gateway.vision.pipeline import CameraWorker, FrameAnalyzer
from gateway.vision.scenes import CLASSES, SceneVideo, VideoSpec, quiet_frames, render_image
from gateway.vision.zones import Analytics, CountLine

LINE = CountLine("mid", (320, 480), (320, 0), directions=("ltr", "rtl"))


def detector_fps(det: Detector, frame: np.ndarray, seconds: float) -> float:
    tensor = det.prepare(frame)
    for _ in range(20):
        det.invoke_prepared(tensor)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        det.invoke_prepared(tensor)
        n += 1
    return n / (time.perf_counter() - t0)


def busy_frames(n: int) -> list[np.ndarray]:
    """A street where every frame differs from the last (dense traffic, noise): the gate is always open."""
    video = SceneVideo(VideoSpec(seed=77, frames=n + 60, fps=15, rate=2.0))
    return [f for i, (f, _) in enumerate(video) if i >= 60]


def pipeline_fps(backend: str, frames: list[np.ndarray], seconds: float) -> tuple[float, float]:
    det = Detector(DEFAULT_MODEL, DEFAULT_LABELS, backend=backend)
    analyzer = FrameAnalyzer(det, Analytics([], [LINE]), always_detect=False)
    cam = CameraConfig("bench", "memory")
    worker = CameraWorker(cam, analyzer, lambda c, e: None,
                          source_factory=lambda: ArraySource(frames, loop=True), lossless=True)
    worker.start()
    time.sleep(0.5)
    a0, d0, t0 = worker.frames_analyzed, analyzer.detections_run, time.perf_counter()
    time.sleep(seconds)
    a1, d1, t1 = worker.frames_analyzed, analyzer.detections_run, time.perf_counter()
    worker.stop()
    analysed = (a1 - a0) / (t1 - t0)
    detected_share = (d1 - d0) / max(1, a1 - a0)
    return analysed, detected_share


def quiet_cpu(backend: str, seconds: float, tmp: Path) -> float:
    path = tmp / "quiet.avi"
    frames = quiet_frames(n=60, noise=2.0)
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 15.0, (640, 480))
    for f in frames:
        writer.write(f)
    writer.release()
    det = Detector(DEFAULT_MODEL, DEFAULT_LABELS, backend=backend)
    analyzer = FrameAnalyzer(det, Analytics([], [LINE]))
    cam = CameraConfig("quiet", str(path), fps=15.0, loop=True)
    worker = CameraWorker(cam, analyzer, lambda c, e: None,
                          source_factory=lambda: OpenCVSource(str(path), pace_fps=15.0, loop=True))
    worker.start()
    time.sleep(1.0)
    r0, t0, f0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter(), worker.frames_captured
    time.sleep(seconds)
    r1, t1, f1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter(), worker.frames_captured
    worker.stop()
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    fps = (f1 - f0) / (t1 - t0)
    if fps < 13.5:
        print(f"warning: quiet scene ran at {fps:.1f} frames/s, not 15", file=sys.stderr)
    if analyzer.detections_run:
        print(f"warning: detector ran {analyzer.detections_run} times on the quiet scene", file=sys.stderr)
    return 100.0 * cpu / (t1 - t0)


def map50(det: Detector, n: int) -> float:
    rng = np.random.default_rng(90210)  # held out: training used seeds 7 and 1007
    preds, truth = [], []
    low = det.min_score
    det.min_score = 0.05
    for _ in range(n):
        img, objs = render_image(rng)
        preds.append([(CLASSES.index(d.label), d.score, d.box) for d in det.detect(img)])
        truth.append([(o.cls, o.box) for o in objs])
    det.min_score = low
    return average_precision(preds, truth, len(CLASSES))


def count_error(backend: str, videos: int, frames: int) -> tuple[float, int]:
    err = total = 0
    for k in range(videos):
        spec = VideoSpec(seed=3000 + k, frames=frames, fps=15, rate=0.9, night=(k % 3 == 2))
        video = SceneVideo(spec)
        det = Detector(DEFAULT_MODEL, DEFAULT_LABELS, backend=backend)
        an = FrameAnalyzer(det, Analytics([], [LINE]))
        last = None
        for i, (frame, _) in enumerate(video):
            an.analyze(frame, i / 15)
            last = frame
        assert last is not None
        for j in range(1, 40):
            an.analyze(last, (frames + j) / 15)
        counted = an.analytics.totals["mid"]
        for label, dirs in video.truth.crossings.items():
            for d, n in dirs.items():
                err += abs(counted.get(label, {}).get(d, 0) - n)
                total += n
    return 100.0 * err / max(total, 1), total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs (< 1 minute in all)")
    args = ap.parse_args()
    seconds = 2.0 if args.quick else 6.0
    backends = installed_backends()
    if not backends:
        print("no TFLite runtime installed (pip install ai-edge-litert)", file=sys.stderr)
        return 1
    frames = busy_frames(60 if args.quick else 150)
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            det = Detector(DEFAULT_MODEL, DEFAULT_LABELS, backend=backend)
            # detector alone before and after the pipeline run: the mean cancels slow drifts of machine load
            d_before = detector_fps(det, frames[0], seconds / 2)
            pfps, share = pipeline_fps(backend, frames, seconds)
            dfps = (d_before + detector_fps(det, frames[0], seconds / 2)) / 2
            quiet = quiet_cpu(backend, 3.0 if args.quick else 10.0, Path(tmp))
            m = map50(det, 80 if args.quick else 300)
            cerr, ctotal = count_error(backend, 2 if args.quick else 6, 300 if args.quick else 450)
            out[backend] = {
                "detector_fps": round(dfps, 1),
                "pipeline_fps": round(pfps, 1),
                "pipeline_ratio": round(pfps / dfps, 3),
                "pipeline_detect_share": round(share, 3),
                "quiet_cpu_pct": round(quiet, 2),
                "map50": round(m, 4),
                "count_err_pct": round(cerr, 2),
                "count_truth": ctotal,
            }
            print(f"{backend}: {json.dumps(out[backend])}", file=sys.stderr)
    print(json.dumps({"runtimes": out, "cores": os.cpu_count(), "quick": args.quick,
                      "load_avg_1min": round(os.getloadavg()[0], 2),
                      "model": DEFAULT_MODEL.name, "targets": {"pipeline_ratio": 0.9, "quiet_cpu_pct": 10,
                                                               "map50": 0.8, "count_err_pct": 5}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
