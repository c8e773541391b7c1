"""How many emulated boards one machine runs at once, and how fast one board starts.

Each board boots a flash whose main.py runs a 100 ms asyncio loop and records how late every wake-up is.
All boards run together for a while; then each board's samples are read over its REPL (stock mpremote
transport). Boards run as worker threads in ``--per-process`` boards per Node.js process.

    python benchmarks/board_density.py --quick      # last stdout line: one JSON object
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hil_tests.emulator.board import BoardFarm, BoardSpec, EmulatedBoard
from hil_tests.plugin import Repl

LOOP_MAIN = """\
import asyncio, time
LAT = []
async def loop():
    nxt = time.ticks_add(time.ticks_ms(), 100)
    while True:
        await asyncio.sleep_ms(max(0, time.ticks_diff(nxt, time.ticks_ms())))
        LAT.append((time.time_ns() // 1_000_000, time.ticks_diff(time.ticks_ms(), nxt)))
        nxt = time.ticks_add(nxt, 100)
asyncio.run(loop())
"""


def spawn_to_prompt_ms(root: Path, runs: int) -> list[float]:
    """Start one board (a fresh Node process) ``runs`` times; time until its friendly prompt."""
    times = []
    for i in range(runs):
        flash = root / f"single{i}"
        flash.mkdir()
        t0 = time.perf_counter()
        with EmulatedBoard(flash, role=None, name=f"single{i}") as b:
            b.wait_booted()
            times.append((time.perf_counter() - t0) * 1000)
    return times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="a shorter run (8 s instead of 20 s, 3 single-board starts instead of 7)"
    )
    ap.add_argument("--boards", type=int, default=None, help="boards to run together (default 50)")
    ap.add_argument("--per-process", type=int, default=25, help="boards per Node.js process")
    ap.add_argument("--seconds", type=float, default=None, help="how long all boards run (default 20, quick 8)")
    args = ap.parse_args()
    count = args.boards or 50
    seconds = args.seconds or (8.0 if args.quick else 20.0)

    load_at_start = round(os.getloadavg()[0], 2)  # the machine may be shared: say how busy it was
    with tempfile.TemporaryDirectory(prefix="board-density-") as tmp:
        root = Path(tmp)
        spawn = spawn_to_prompt_ms(root, 3 if args.quick else 7)
        specs = []
        for i in range(count):
            flash = root / f"node{i}"
            flash.mkdir()
            (flash / "main.py").write_text(LOOP_MAIN)
            specs.append(BoardSpec(flash, name=f"node{i}", seed=i + 1))
        t0 = time.perf_counter()
        with BoardFarm(specs, per_process=args.per_process) as farm:
            for b in farm:
                b.wait_booted(timeout=120)
            farm_ready_s = time.perf_counter() - t0
            procs = [psutil.Process(h.pid) for h in farm.hosts if h.pid]
            cpu0 = sum(p.cpu_times().user + p.cpu_times().system for p in procs)
            window = (time.time() * 1000, time.time() * 1000 + seconds * 1000)
            time.sleep(seconds)
            cpu1 = sum(p.cpu_times().user + p.cpu_times().system for p in procs)
            rss = sum(p.memory_info().rss for p in procs)
            lateness: list[float] = []
            for b in farm:
                r = Repl(b.repl_port)  # Ctrl-C stops the loop; its samples stay in __main__
                samples = ast.literal_eval(r.exec("print(LAT)").strip())
                lateness += [late for t, late in samples if window[0] <= t <= window[1]]
                r.close()
    expected = count * seconds * 10
    result = {
        "quick": args.quick,
        "boards": count,
        "boards_per_process": args.per_process,
        "spawn_to_prompt_ms_median": round(statistics.median(spawn), 1),
        "farm_ready_s": round(farm_ready_s, 2),
        "rss_mib_per_board": round(rss / count / 2**20, 1),
        "loop_lateness_ms_p50": percentile(lateness, 50),
        "loop_lateness_ms_p99": percentile(lateness, 99),
        "loop_samples": len(lateness),
        "loop_samples_expected": int(expected),
        "cpu_cores_used": round((cpu1 - cpu0) / seconds, 2),
        "cores": os.cpu_count(),
        "load_avg_1min_at_start": load_at_start,
        "targets": {"boards": 50, "loop_lateness_ms_p99": 20, "spawn_to_prompt_ms_median": 300},
    }
    if args.quick:
        result["note"] = f"quick mode: {count} boards measured for {seconds:.0f} s (full run: 20 s)"
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
