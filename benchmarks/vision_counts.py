"""Line-counting error of the vision analyzer on the held-out and the dev synthetic videos.

    .venv/bin/python benchmarks/vision_counts.py [--backend ai_edge_litert] [--quick]

The held-out set is the one ``benchmarks/vision.py`` reports: 30 videos, seeds 7000-7029, declared on
2026-11-21 before anything was measured on them (the earlier 6-video set, seeds 3000-3005, was looked at
too often to stay held out and is now part of the dev data). The dev set is the 12 videos the tracker's
changes were tuned and measured on (seeds 5000-5011). Both: 450 frames at
15 frames/s, 0.9 new objects/s, every third video at night, a vertical line at x = 320, the shipped
detector. The error is sum |counted - truth| / sum truth over class and direction. A tracker change must
keep the held-out error <= 5 % and must not make the dev error worse. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vision import HELDOUT_SEED0, HELDOUT_VIDEOS, count_error

from gateway.vision.detector import BACKENDS


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=BACKENDS, default="ai_edge_litert")
    ap.add_argument("--quick", action="store_true", help="3 held-out and 3 dev videos of 300 frames")
    args = ap.parse_args()
    frames = 300 if args.quick else 450
    t0 = time.perf_counter()
    held, held_n = count_error(args.backend, 3 if args.quick else HELDOUT_VIDEOS, frames, seed0=HELDOUT_SEED0)
    dev, dev_n = count_error(args.backend, 3 if args.quick else 12, frames, seed0=5000)
    print(
        json.dumps(
            {
                "backend": args.backend,
                "quick": args.quick,
                "heldout_count_err_pct": round(held, 2),
                "heldout_truth": held_n,
                "dev_count_err_pct": round(dev, 2),
                "dev_truth": dev_n,
                "seconds": round(time.perf_counter() - t0, 1),
                "cores": os.cpu_count(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
