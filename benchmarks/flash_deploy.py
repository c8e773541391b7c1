"""Flashing benchmark: deploy time and bytes on the wire, redeploy with nothing changed, one board vs ten.

Runs against emulated boards (MicroPython 1.29 WebAssembly VM behind a pty; hil_tests/README.md), so the
times are those of a 115200-baud-free pty: on a real board at 115200 baud, bytes on the wire dominate,
which is why ``wire_bytes_per_byte`` is the figure to compare across machines.

    python benchmarks/flash_deploy.py [--quick] [--role streetlight]

Last line of stdout: one JSON object with ``deploy_s`` (full deploy of the app into an empty board, step
only), ``wire_bytes_per_byte`` (bytes both ways on the serial line per byte of app deployed),
``redeploy_s`` (connect → done, nothing changed), ``single_s`` (one board: deploy + provision + verify),
``batch10_s`` (ten boards in parallel, the same), ``batch_ratio`` (batch10_s / single_s; target ≤ 3),
``parallel_speedup`` (10 × single / batch), the same four with ``bare_`` for the image without an app (the
tool's own scaling: ten emulated boards booting an app share this machine's cores, real boards do not),
``baseline_mpremote_cp_s`` (stock ``mpremote fs cp`` of the same compiled files, for comparison), ``cores``
and ``load_avg`` (the machine's 1-minute load when the run ended: other work skews the batch figures).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hil_tests.emulator.board import BoardFarm, EmulatedBoard  # noqa: E402
from tools.flash.board import Board  # noqa: E402
from tools.flash.deploy import build_image, deploy, probe_roots  # noqa: E402
from tools.flash.flow import Job, run_job  # noqa: E402
from tools.flash.transport import RawRepl  # noqa: E402


def _empty_board(root: Path, name: str) -> EmulatedBoard:
    (root / name).mkdir(parents=True)
    b = EmulatedBoard(root / name, role=None, name=name)
    b.__enter__()
    b.wait_for_output(">>> ", timeout=30)
    return b


def full_deploy(port: str, role: str) -> tuple[float, float, int]:
    """(seconds, wire bytes per byte, image bytes) of a deploy into a board that has no app."""
    with RawRepl(port) as repl:
        repl.enter_raw()
        board = Board(repl)
        info = board.probe(probe_roots())
        image = build_image(role, info)  # compiled before the clock starts (cached by source hash)
        w0 = repl.tx_bytes + repl.rx_bytes
        t0 = time.perf_counter()
        res = deploy(board, info, image)
        took = time.perf_counter() - t0
        wire = repl.tx_bytes + repl.rx_bytes - w0
    assert not res.unchanged and len(res.sent) == len(image.slot)
    return took, wire / image.size, image.size


def redeploy(port: str, role: str) -> float:
    """Connect → done when nothing changed (what a technician waits for on a second run)."""
    t0 = time.perf_counter()
    with RawRepl(port) as repl:
        repl.enter_raw()
        board = Board(repl)
        info = board.probe(probe_roots())
        res = deploy(board, info, build_image(role, info))
    took = time.perf_counter() - t0
    assert res.unchanged
    return took


def job(port: str, role: str, work: Path, node_id: int) -> Job:
    """The full flow into the filesystem slots (``--layout files``), as the figures have been measured since
    the start; the tool's default, ``auto``, takes the ROM partition on boards that have one."""
    return Job(port=port, role=role, manifest=work / "nodes.json", ledger=work / "ledger.jsonl", node_id=node_id,
               site="bench", lat=48.1, lon=11.5, settle=0.5, selftest=False, boot_timeout=30, layout="files")


def mpremote_cp(port: str, role: str, work: Path) -> float:
    """Baseline: stock mpremote copying the same compiled files (no compression, no skipping)."""
    with RawRepl(port) as repl:
        repl.enter_raw()
        info = Board(repl).probe()
        image = build_image(role, info)
    tree = work / "cp"
    for rel, data in image.slot.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(data)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mpremote", "connect", port, "fs", "cp", "-r", f"{tree}/lib", ":/cp_lib"],
                   check=True, capture_output=True, timeout=300)
    return time.perf_counter() - t0


def one_vs_ten(role: str, work: Path) -> tuple[float, float, int]:
    """(one board, ten boards in parallel, boards ok) for the full flow on fresh emulated boards."""
    b = _empty_board(work / "one", "solo")
    try:
        t0 = time.perf_counter()
        r = run_job(job(b.repl_port, role, work, 100))
        single = time.perf_counter() - t0
        assert r["result"] == "ok", r
    finally:
        b.close()
    with BoardFarm.create(work / "farm", 10, role=None) as farm:
        for fb in farm:
            fb.wait_for_output(">>> ", timeout=60)
        ports = [fb.repl_port for fb in farm]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=10) as pool:
            results = list(pool.map(lambda ip: run_job(job(ip[1], role, work, 200 + ip[0])), enumerate(ports)))
        batch = time.perf_counter() - t0
    return single, batch, sum(x["result"] == "ok" for x in results)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one repetition (CI)")
    ap.add_argument("--role", default="streetlight")
    args = ap.parse_args()
    reps = 1 if args.quick else 3
    work = Path(tempfile.mkdtemp(prefix="cityedge-flash-bench-"))
    out: dict[str, object] = {"role": args.role, "cores": os.cpu_count()}

    deploys, ratios, redeploys = [], [], []
    for i in range(reps):
        b = _empty_board(work / "single", f"b{i}")
        try:
            took, ratio, size = full_deploy(b.repl_port, args.role)
            deploys.append(took)
            ratios.append(ratio)
            redeploys.append(redeploy(b.repl_port, args.role))
            if i == 0:
                out["baseline_mpremote_cp_s"] = round(mpremote_cp(b.repl_port, args.role, work), 3)
        finally:
            b.close()
    out.update(deploy_s=round(statistics.median(deploys), 3), wire_bytes_per_byte=round(max(ratios), 3),
               image_bytes=size, redeploy_s=round(statistics.median(redeploys), 3))

    # one board end to end, then ten in parallel (same job: deploy + provision + verify + self-test), for the
    # role's app and for the bare image (no app to boot: what the tool itself adds when boards run in parallel)
    for role, key in ((args.role, ""), ("bare", "bare_")):
        single, batch, ok = one_vs_ten(role, work / role)
        out.update({f"{key}single_s": round(single, 3), f"{key}batch10_s": round(batch, 3),
                    f"{key}batch_ok": ok, f"{key}batch_ratio": round(batch / single, 2),
                    f"{key}parallel_speedup": round(10 * single / batch, 2)})
    single = float(out["single_s"])  # type: ignore[arg-type]
    batch = float(out["batch10_s"])  # type: ignore[arg-type]
    print(f"full deploy {out['deploy_s']} s ({size} bytes, {out['wire_bytes_per_byte']} wire bytes/byte), "
          f"unchanged {out['redeploy_s']} s, one board {single:.2f} s, ten boards {batch:.2f} s", file=sys.stderr)
    out["load_avg"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
