"""Synthetic PPG samples for host-side tests and benchmarks, from the emulator's own signal model.

The signal model lives in one place, ``hil_tests/emulator/js/devices/ppg.mjs`` (the emulated MAX30102 samples it on
the board's clock); this module runs it as a command-line program so CPython tests, MicroPython-VM tests and
``benchmarks/ppg_accuracy.py`` process exactly the waveform an emulated board would see.

    samples = synth(seconds=30, fs=100, hr_bpm=60, spo2=92, events=[(10.0, {"probe_on": False})])
    samples.pairs()        # [(red, ir), ...]
    samples.raw            # little-endian int32 red, ir, red, ir, ... (for copying into the VM)
"""

from __future__ import annotations

import json
import subprocess
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hil_tests.emulator.runner import node_executable

PPG_JS = Path(__file__).resolve().parent / "js" / "devices" / "ppg.mjs"


def r_for_spo2(spo2_pct: float) -> float:
    """Ratio of ratios the emulated probe produces at ``spo2_pct`` (inverse of SpO₂ = 110 − 25 R)."""
    return (110.0 - spo2_pct) / 25.0


@dataclass(frozen=True)
class PpgSamples:
    """Interleaved (red, ir) ADC counts at ``fs`` Hz."""

    fs: int
    raw: bytes

    @property
    def values(self) -> array:
        a = array("i")
        a.frombytes(self.raw)
        return a

    def pairs(self) -> list[tuple[int, int]]:
        v = self.values
        return list(zip(v[0::2], v[1::2]))

    def __len__(self) -> int:
        return len(self.raw) // 8


def synth(
    seconds: float,
    fs: int = 100,
    events: Sequence[tuple[float, dict[str, Any]]] = (),
    **signal: Any,
) -> PpgSamples:
    """Generate ``seconds`` of PPG; ``signal`` sets model parameters (hr_bpm, spo2, perfusion_pct,
    noise_counts, wander, hrv, motion=[{start_s, duration_s, depth, freq_hz}], probe_on, seed, ...);
    ``events`` change them at given times (seconds)."""
    req = {"seconds": seconds, "fs": fs, "signal": signal, "events": [[t, p] for t, p in events]}
    proc = subprocess.run(
        [node_executable(), str(PPG_JS), json.dumps(req)], capture_output=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ppg.mjs failed: {proc.stderr.decode(errors='replace').strip()}")
    return PpgSamples(fs, proc.stdout)
