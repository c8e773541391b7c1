"""``cityedge vision ...``: run the cameras of a config, detect objects in a file, render test videos.

    cityedge vision run --config gateway.toml [--seconds N]   # events as JSON lines on stdout
    cityedge vision detect street.jpg|video.avi [--model M --labels L --backend B] [--json]
    cityedge vision render out.avi [--seed 1 --frames 300 --night]   # synthetic video + ground truth
    cityedge vision check-config --config gateway.toml
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import cv2

from cityedge.errors import CityedgeError
from gateway.events import Event
from gateway.vision.config import DEFAULT_LABELS, DEFAULT_MODEL, load_vision_config
from gateway.vision.detector import BACKENDS, Detector


def register(subparsers: Any) -> None:
    """Add ``vision`` and its subcommands to the ``cityedge`` parser."""
    p = subparsers.add_parser("vision", help="camera analytics: run cameras, detect objects, render test videos")
    sub = p.add_subparsers(dest="vision_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    run = sub.add_parser("run", help="run the cameras of the [vision] config; print events as JSON lines")
    run.add_argument("--config", required=True, type=Path, help="gateway TOML with a [vision] table")
    run.add_argument("--seconds", type=float, default=None, help="stop after this long (default: run until ^C)")
    run.set_defaults(func=_run)

    det = sub.add_parser("detect", help="run the detector on an image or a video file")
    det.add_argument("file", type=Path)
    det.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    det.add_argument("--labels", type=Path, default=None, help="label map (default: the shipped model's)")
    det.add_argument("--backend", choices=BACKENDS, default="ai_edge_litert")
    det.add_argument("--threads", type=int, default=1)
    det.add_argument("--min-score", type=float, default=0.3)
    det.add_argument("--max-frames", type=int, default=0, help="video: analyse at most this many frames")
    det.add_argument("--json", action="store_true", help="one JSON object per frame")
    det.set_defaults(func=_detect)

    ren = sub.add_parser("render", help="render a synthetic street video and its ground truth (.json)")
    ren.add_argument("out", type=Path, help="output .avi (MJPG); ground truth goes to OUT.json")
    ren.add_argument("--seed", type=int, default=1)
    ren.add_argument("--frames", type=int, default=300)
    ren.add_argument("--fps", type=float, default=15.0)
    ren.add_argument("--night", action="store_true")
    ren.add_argument("--rate", type=float, default=0.8, help="new objects per second")
    ren.set_defaults(func=_render)

    chk = sub.add_parser("check-config", help="validate the [vision] table and load its model")
    chk.add_argument("--config", required=True, type=Path)
    chk.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    cfg = load_vision_config(args.config)
    det = Detector(cfg.model, cfg.labels, backend=cfg.backend, threads=cfg.threads, xnnpack=cfg.xnnpack)
    print(f"{args.config}: vision ok: {len(cfg.cameras)} camera(s), {len(cfg.lighting)} lighting rule(s), "
          f"model {cfg.model.name} ({det.kind}, {det.backend}, labels: {', '.join(det.labels) or 'none'})")
    return 0


def _detect(args: argparse.Namespace) -> int:
    labels = args.labels if args.labels is not None else (DEFAULT_LABELS if args.model == DEFAULT_MODEL else None)
    det = Detector(args.model, labels, backend=args.backend, threads=args.threads, min_score=args.min_score)
    if not args.file.exists():
        raise CityedgeError(f"{args.file} does not exist")
    image = cv2.imread(str(args.file)) if args.file.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp") else None
    frames: Any
    if image is not None:
        frames = [image]
    else:
        cap = cv2.VideoCapture(str(args.file))
        if not cap.isOpened():
            raise CityedgeError(f"cannot read {args.file} as an image or a video",
                                hint="supported: JPEG/PNG images and videos OpenCV can decode")

        def read_all() -> Any:
            n = 0
            while args.max_frames <= 0 or n < args.max_frames:
                ok, frame = cap.read()
                if not ok:
                    return
                n += 1
                yield frame

        frames = read_all()
    for i, frame in enumerate(frames):
        found = det.detect(frame)
        if args.json:
            print(json.dumps({"frame": i, "detections": [
                {"label": d.label, "score": round(d.score, 3), "box": [round(v, 1) for v in d.box]} for d in found]}))
        else:
            desc = ", ".join(f"{d.label} {d.score:.2f} @ {tuple(int(v) for v in d.box)}" for d in found) or "nothing"
            print(f"frame {i}: {desc}")
    return 0


def _render(args: argparse.Namespace) -> int:
    from gateway.vision.scenes import VideoSpec, write_video

    truth = write_video(args.out, VideoSpec(seed=args.seed, frames=args.frames, fps=args.fps, night=args.night,
                                            rate=args.rate))
    print(f"wrote {args.out} ({args.frames} frames) and {args.out}.json; crossings of x={truth.spec.line_x:g}: "
          f"{json.dumps(truth.crossings)}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from gateway.vision.service import VisionService

    cfg = load_vision_config(args.config)
    if not cfg.cameras:
        raise CityedgeError(f"{args.config}: [vision] has no [[vision.camera]]", hint="see docs/vision.md")

    async def publish(event: Event) -> None:
        print(json.dumps({"source": event.source, "ts_ms": event.ts_ms, "priority": event.priority.lane,
                          **event.body}), flush=True)

    async def main() -> None:
        async with VisionService(cfg, publish) as vs:
            task = asyncio.create_task(vs.run())
            try:
                await asyncio.wait_for(asyncio.shield(task), args.seconds)
            except TimeoutError:
                pass
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            print(json.dumps({"status": vs.status()}), file=sys.stderr)

    asyncio.run(main())
    return 0
