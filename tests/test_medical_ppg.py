"""PPG signal processing of the medical node, on CPython and on the MicroPython VM.

The signal is the emulated probe's own model (hil_tests/emulator/js/devices/ppg.mjs). The processor is integer-only,
so the VM must produce exactly the same numbers as CPython; accuracy is then asserted on those numbers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from hil_tests.emulator.ppg_signal import PpgSamples, synth
from hil_tests.emulator.runner import MicroPythonSession
from tests.medical_support import VM_MOUNTS, VM_PROCESS, Summary, process_cpython, valid, write_case

SETTLE_S = 12
MOTION = [{"start_s": 18, "duration_s": 3}, {"start_s": 27, "duration_s": 2, "depth": 0.03, "freq_hz": 2.5}]

# name: (seconds, fs, signal parameters, events)
CASES: dict[str, tuple[int, int, dict, list]] = {
    **{f"hr{hr}": (30, 100, {"hr_bpm": hr, "seed": hr}, []) for hr in (40, 55, 75, 100, 130, 160, 200)},
    **{f"spo2_{s}": (30, 100, {"spo2": s, "seed": s}, []) for s in (70, 78, 85, 92, 100)},
    "low_perfusion": (30, 100, {"perfusion_pct": 0.25, "hr_bpm": 110}, []),
    "motion": (36, 100, {"motion": MOTION, "hr_bpm": 68, "spo2": 95}, []),
    "fs50": (30, 50, {"hr_bpm": 150, "spo2": 88}, []),
    "no_pulse": (20, 100, {"perfusion_pct": 0.0}, []),
    "probe_off": (24, 100, {"hr_bpm": 80}, [[12.0, {"probe_on": False}]]),
}


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, PpgSamples]]:
    d = tmp_path_factory.mktemp("ppg")
    out = {}
    for name, (secs, fs, sig, events) in CASES.items():
        out[name] = synth(secs, fs, events=[(t, p) for t, p in events], **sig)
        write_case(d, name, out[name])
    return d, out


@pytest.fixture(scope="module")
def cpython(cases: tuple[Path, dict[str, PpgSamples]]) -> dict[str, list[Summary]]:
    return {name: process_cpython(s) for name, s in cases[1].items()}


@pytest.fixture(scope="module")
def vm(cases: tuple[Path, dict[str, PpgSamples]]) -> dict[str, list[Summary]]:
    d, samples = cases
    with MicroPythonSession(mounts={**VM_MOUNTS, d: "/data"}) as mp:
        mp.run(VM_PROCESS).check()
        calls = ", ".join(f"{name!r}: process({name!r}, {s.fs})" for name, s in samples.items())
        code = "import json\nprint(json.dumps({" + calls + "}))"
        res = mp.run(code).check()
    return {k: [tuple(x) for x in v] for k, v in json.loads(res.stdout).items()}


def test_micropython_vm_computes_exactly_what_cpython_computes(
    cpython: dict[str, list[Summary]], vm: dict[str, list[Summary]]
) -> None:
    assert set(vm) == set(cpython)
    for name in cpython:
        assert vm[name] == cpython[name], name


@pytest.mark.parametrize("hr", [40, 55, 75, 100, 130, 160, 200])
def test_heart_rate_within_3_per_min_over_40_to_200(cpython: dict[str, list[Summary]], hr: int) -> None:
    vals = valid(cpython[f"hr{hr}"], SETTLE_S)
    assert len(vals) == 30 - SETTLE_S, "every second after settling has a value"
    errs = [abs(v[0] / 10 - hr) for v in vals]
    assert max(errs) <= 3.0, errs


def test_spo2_arms_at_most_3_percent_over_70_to_100(cpython: dict[str, list[Summary]]) -> None:
    sq = []
    for s in (70, 78, 85, 92, 100):
        vals = valid(cpython[f"spo2_{s}"], SETTLE_S)
        assert vals
        sq += [(v[1] / 10 - s) ** 2 for v in vals]
    arms = math.sqrt(sum(sq) / len(sq))
    assert arms <= 3.0, arms


def test_low_perfusion_is_measured_and_flagged(cpython: dict[str, list[Summary]]) -> None:
    from medical.ppg import ST_LOW_PERFUSION

    vals = valid(cpython["low_perfusion"], SETTLE_S)
    assert len(vals) >= 15
    assert all(v[4] & ST_LOW_PERFUSION for v in vals)
    assert all(abs(v[0] / 10 - 110) <= 3 for v in vals)
    assert all(v[2] < 40 for v in vals)  # PI in 0.01 %


def test_motion_artefacts_are_flagged_and_do_not_corrupt_values(cpython: dict[str, list[Summary]]) -> None:
    from medical.ppg import ST_QUESTIONABLE

    out = cpython["motion"]
    vals = valid(out, SETTLE_S)
    # whatever is reported during and after the bursts stays close, or is flagged questionable
    for v in vals:
        if not v[4] & ST_QUESTIONABLE:
            assert abs(v[0] / 10 - 68) <= 3 and abs(v[1] / 10 - 95) <= 3, v
    clean = [v for v in out[30:] if not v[4] & ST_QUESTIONABLE]
    assert clean, "values come back once the motion stops"


def test_50_hz_sampling_works_too(cpython: dict[str, list[Summary]]) -> None:
    vals = valid(cpython["fs50"], SETTLE_S)
    assert len(vals) == 30 - SETTLE_S
    assert all(abs(v[0] / 10 - 150) <= 3 and abs(v[1] / 10 - 88) <= 3 for v in vals)


def test_no_pulse_reports_no_value_and_says_why(cpython: dict[str, list[Summary]]) -> None:
    from medical.ppg import ST_INVALID, ST_NO_PULSE

    out = cpython["no_pulse"]
    assert all(v[4] & ST_INVALID and v[0] == -1 for v in out)
    assert all(v[4] & ST_NO_PULSE for v in out[8:])


def test_probe_off_is_detected_within_5_seconds(cpython: dict[str, list[Summary]]) -> None:
    from medical.ppg import ST_INVALID, ST_PROBE_OFF

    out = cpython["probe_off"]
    assert not out[11][4] & ST_INVALID  # a value just before the probe comes off (at 12 s)
    flagged = [i for i, v in enumerate(out) if v[4] & ST_PROBE_OFF]
    assert flagged and flagged[0] + 1 - 12 <= 5  # summary i covers second i..i+1
    assert all(out[i][4] & ST_PROBE_OFF and out[i][0] == -1 for i in range(flagged[0], len(out)))


def test_calibration_curve_and_fifo_overflow_flag() -> None:
    from medical.ppg import ST_OVERFLOW, PpgProcessor

    p = PpgProcessor()
    assert p.spo2_x10(0) == 1000  # clipped at 100 %
    assert p.spo2_x10(1024) == 850  # R = 1.0 -> 85 %
    assert p.spo2_x10(2048) == 600  # R = 2.0 -> 60 %
    assert p.spo2_x10(512) == 975
    p.lost = 3
    assert p.summary()[4] & ST_OVERFLOW
    assert not p.summary()[4] & ST_OVERFLOW  # reported once, for the second it happened in
