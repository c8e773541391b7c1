"""`cityedge demo` bounded with --duration: boards (real firmware on the VM), gateway, broker, stops cleanly."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_a_site_and_stops_by_itself() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cityedge", "demo", "--lights", "1", "--duration", "15", "--plain"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    assert "demo stopped." in text
    assert "a mosquitto started for the demo" in text
    lines = text.splitlines()
    nodes = {line.split()[0]: line for line in lines if line.startswith("  sl-1") or line.startswith("  bed-1")}
    assert "online" in nodes["sl-1"] and "online" in nodes["bed-1"], text[-3000:]
    delivered = next(line for line in lines if line.startswith("UPSTREAM ("))
    assert int(delivered.split("(")[1].split()[0]) > 0  # events went gateway -> broker -> operations center
    by_source = next(line for line in lines if line.startswith("  by source: "))
    assert "cam:main-street" in by_source  # the street camera's events (vision) reached the operations center
    assert "node:201" in by_source  # the medical board's vitals too
    assert "Traceback" not in out.stderr
