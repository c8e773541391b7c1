"""How well the vision analyzer follows objects, against the scene generator's per-frame truth (dev videos only).

    .venv/bin/python benchmarks/vision_tracking.py [--quick] [--seeds 5000-5035] [--backend ai_edge_litert]

The finer yardstick for tracker and line-count changes (docs/vision.md, Counting): line counts alone move by one
or two crossings between versions, inside the noise of a few dozen videos. Per video (450 frames at 15 frames/s,
0.9 new objects/s, every third at night, the shipped detector, the real FrameAnalyzer) it matches, in every
analysed frame, the confirmed tracks updated in that frame to the truth boxes (greedy, IoU >= 0.3), and reports:

  count_err_pct     sum |counted - truth| / sum truth over class and direction (as benchmarks/vision.py)
  fragmented        truth objects followed by more than one track id over their life
  id_switches       times an object's matched track id changed from one matched frame to the next
  coverage_pct      share of truth boxes (objects at least half in view) matched by a confirmed track

Dev seeds only: the held-out counting set (seeds 7000-7999, benchmarks/vision.py) is refused, so that tuning
on this yardstick cannot look at it. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.vision import end_and_score
from gateway.vision.config import DEFAULT_LABELS, DEFAULT_MODEL
from gateway.vision.detector import BACKENDS, Detector
from gateway.vision.metrics import iou
from gateway.vision.pipeline import FrameAnalyzer
from gateway.vision.scenes import WIDTH, SceneVideo, VideoSpec
from gateway.vision.tracker import Track
from gateway.vision.zones import Analytics, CountLine

Box = tuple[float, float, float, float]
HELD_OUT = range(7000, 8000)
MATCH_IOU = 0.3
# the default run (seeds 5000-5035) at commit 69ebe9a, before the line-count and kin changes of 2026-11-21
BASELINE = {"count_err_pct": 5.61, "fragmented": 301, "id_switches": 691, "coverage_pct": 80.96, "commit": "69ebe9a"}


def parse_seeds(text: str) -> list[int]:
    """``"5000-5011,3000-3005"`` -> the seeds; refuses the held-out range."""
    seeds: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        seeds += range(int(a), int(b or a) + 1)
    if any(s in HELD_OUT for s in seeds):
        raise SystemExit("vision_tracking: seeds 7000-7999 are the held-out counting set; use dev seeds")
    return seeds


def match(tracks: list[Track], truth: list[tuple[int, Box]]) -> dict[int, int]:
    """Truth object id -> track id, greedy on IoU (best pairs first)."""
    scored = ((iou(t.box, box), t.track_id, oid) for t in tracks for oid, box in truth)
    pairs = sorted((p for p in scored if p[0] >= MATCH_IOU), reverse=True)
    used_t: set[int] = set()
    out: dict[int, int] = {}
    for _, tid, oid in pairs:
        if tid not in used_t and oid not in out:
            used_t.add(tid)
            out[oid] = tid
    return out


def in_view(box: Box) -> bool:
    return min(box[2], WIDTH) - max(box[0], 0.0) >= 0.5 * (box[2] - box[0])


def one_video(det: Detector, seed: int, frames: int, night: bool) -> dict[str, int]:
    """The figures of one video (sums, so that videos add up)."""
    video = SceneVideo(VideoSpec(seed=seed, frames=frames, fps=15, rate=0.9, night=night))
    an = FrameAnalyzer(det, Analytics([], [CountLine("mid", (320, 480), (320, 0), directions=("ltr", "rtl"))]))
    min_hits, min_quality = an.analytics.min_hits, an.analytics.min_quality
    followed: dict[int, list[int]] = defaultdict(list)  # truth object -> matched track ids, frame by frame
    truth_boxes = matched = 0
    last = None
    for i, (frame, objs) in enumerate(video):
        result = an.analyze(frame, i / 15)
        last = frame
        if not result.detected:
            continue
        confirmed = [t for t in result.tracks if t.hits >= min_hits and t.quality >= min_quality]
        truth = [(o.track, o.box) for o in objs if in_view(o.box)]
        m = match(confirmed, truth)
        truth_boxes += len(truth)
        matched += len(m)
        for oid, tid in m.items():
            followed[oid].append(tid)
    assert last is not None
    err, total = end_and_score(an, last, frames, video.truth.crossings)
    return {
        "count_errors": err,
        "crossings": total,
        "objects": len(followed),
        "fragmented": sum(1 for ids in followed.values() if len(set(ids)) > 1),
        "id_switches": sum(sum(1 for a, b in pairwise(ids) if a != b) for ids in followed.values()),
        "truth_boxes": truth_boxes,
        "matched": matched,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 videos of 300 frames (< 1 minute)")
    ap.add_argument("--seeds", help="dev seeds, e.g. 5000-5035,3000-3005 (default 5000-5035; --quick 5000-5002)")
    ap.add_argument("--backend", choices=BACKENDS, default="ai_edge_litert")
    args = ap.parse_args()
    seeds = parse_seeds(args.seeds or ("5000-5002" if args.quick else "5000-5035"))
    frames = 300 if args.quick else 450
    det = Detector(DEFAULT_MODEL, DEFAULT_LABELS, backend=args.backend)
    t0 = time.perf_counter()
    sums: dict[str, int] = defaultdict(int)
    for k, seed in enumerate(seeds):
        # every third video at night, counted from the start of its range (as benchmarks/vision.py does)
        base = 3000 if seed < 4000 else 5000
        for key, value in one_video(det, seed, frames, (seed - base) % 3 == 2).items():
            sums[key] += value
        print(f"{k + 1}/{len(seeds)} seed {seed}: {dict(sums)}", file=sys.stderr)
    print(
        json.dumps(
            {
                "backend": args.backend,
                "quick": args.quick,
                "videos": len(seeds),
                "seeds": args.seeds or ("5000-5002" if args.quick else "5000-5035"),
                "count_err_pct": round(100.0 * sums["count_errors"] / max(sums["crossings"], 1), 2),
                "crossings": sums["crossings"],
                "objects": sums["objects"],
                "fragmented": sums["fragmented"],
                "id_switches": sums["id_switches"],
                "coverage_pct": round(100.0 * sums["matched"] / max(sums["truth_boxes"], 1), 2),
                "seconds": round(time.perf_counter() - t0, 1),
                "cores": os.cpu_count(),
                "baseline": BASELINE if args.seeds is None and not args.quick else None,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
