"""Shared helpers for the medical node tests: firmware import paths and running PPG processing on both runtimes."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from cityedge.paths import FIRMWARE
from hil_tests.emulator.ppg_signal import PpgSamples

APPS = FIRMWARE / "apps"
LIB = FIRMWARE / "lib"
# the app's modules import each other as ``medical.*``, as on the board (/lib/medical)
for _p in (str(APPS), str(LIB)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

VM_MOUNTS: dict[Path | str, str] = {LIB: "/lib", APPS: "/lib"}

Summary = tuple[int, int, int, int, int]


def process_cpython(samples: PpgSamples) -> list[Summary]:
    """Run the node's PPG processor on CPython; one summary per second of signal."""
    from medical.ppg import PpgProcessor

    v = samples.values
    p = PpgProcessor(samples.fs)
    out: list[Summary] = []
    per_s = 2 * samples.fs
    for s in range(len(v) // per_s):
        for k in range(s * per_s, (s + 1) * per_s, 2):
            p.add(v[k], v[k + 1])
        out.append(p.summary())
    return out


# the same loop as process_cpython, for the MicroPython VM; reads /data/<name>.bin
VM_PROCESS = """
from array import array
from medical.ppg import PpgProcessor
def process(name, fs):
    with open('/data/' + name + '.bin', 'rb') as f:
        v = array('i', f.read())
    p = PpgProcessor(fs)
    out = []
    per_s = 2 * fs
    for s in range(len(v) // per_s):
        for k in range(s * per_s, (s + 1) * per_s, 2):
            p.add(v[k], v[k + 1])
        out.append(p.summary())
    return out
"""


def valid(out: Sequence[Summary], settle_s: int) -> list[Summary]:
    """Summaries after ``settle_s`` seconds that carry a value (not flagged invalid)."""
    from medical.ppg import ST_INVALID

    return [x for x in out[settle_s:] if not x[4] & ST_INVALID]


def write_case(dir_: Path, name: str, samples: PpgSamples) -> None:
    (dir_ / f"{name}.bin").write_bytes(samples.raw)
