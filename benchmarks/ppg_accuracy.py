"""PPG accuracy and cost of the medical node's signal processing, on the emulated probe's signal.

    .venv/bin/python benchmarks/ppg_accuracy.py [--quick]

The signal is the emulated MAX30102's own model (hil_tests/emulator/js/devices/ppg.mjs: noise, baseline
wander, respiratory sinus arrhythmia; plus low-perfusion and motion-artefact runs). The processor is the
firmware module (firmware/apps/medical/ppg.py); it is integer-only, so CPython and the MicroPython VM compute the
same numbers (tests/test_medical_ppg.py checks that) and accuracy is computed on CPython, cost on the VM.

Figures:
  hr_err_mean_bpm / hr_err_p95_bpm   |reported - true| pulse rate over 40-200 /min, every reported second
                                     after a 12 s settling time (values flagged invalid are not reported)
  hr_err_max_bpm                     worst second
  spo2_arms_pct                      SpO2 Arms over 70-100 % (ISO 80601-2-61 style), same seconds
  low_perf_hr_err_p95_bpm            pulse-rate p95 error at perfusion index 0.3 %
  motion_unflagged_err_max_bpm       worst pulse-rate error among seconds NOT flagged questionable, with
                                     motion-artefact bursts
  reported_pct                       share of seconds after settling that carry a value
  probe_off_detect_s                 probe removed -> measurement flagged probe-off (worst of the runs)
  probe_off_alarm_s                  probe removed -> probe-off alarm raised (alarm delay included)
  mpy_ms_per_signal_s                MicroPython VM time to process one second of 100 Hz red+IR signal
  mpy_heap_kb                        MicroPython heap held by the processor object
The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hil_tests.emulator.ppg_signal import PpgSamples, synth
from hil_tests.emulator.runner import MicroPythonSession
from tests.medical_support import VM_MOUNTS, process_cpython

SETTLE_S = 12


def p95(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, math.ceil(0.95 * len(s)) - 1)]


def accuracy(quick: bool) -> dict[str, float]:
    from medical.ppg import ST_INVALID, ST_QUESTIONABLE

    secs = 30 if quick else 60
    hrs = list(range(40, 201, 20 if quick else 5))
    spo2s = list(range(70, 101, 5 if quick else 1))
    seeds = (1,) if quick else (1, 2, 3)
    hr_err: list[float] = []
    sq: list[float] = []
    reported = total = 0
    for seed in seeds:
        for hr in hrs:
            spo2 = spo2s[(hr // 5) % len(spo2s)]
            out = process_cpython(synth(secs, 100, hr_bpm=hr, spo2=spo2, seed=seed * 1000 + hr))[SETTLE_S:]
            total += len(out)
            for v in out:
                if not v[4] & ST_INVALID:
                    reported += 1
                    hr_err.append(abs(v[0] / 10 - hr))
        for s in spo2s:
            hr = hrs[(s * 7) % len(hrs)]
            out = process_cpython(synth(secs, 100, hr_bpm=hr, spo2=s, seed=seed * 1000 + s))[SETTLE_S:]
            total += len(out)
            for v in out:
                if not v[4] & ST_INVALID:
                    reported += 1
                    sq.append((v[1] / 10 - s) ** 2)
                    hr_err.append(abs(v[0] / 10 - hr))
    low = []
    for hr in (50, 90, 140):
        out = process_cpython(synth(secs, 100, hr_bpm=hr, perfusion_pct=0.3, seed=hr))[SETTLE_S:]
        low += [abs(v[0] / 10 - hr) for v in out if not v[4] & ST_INVALID]
    motion = [{"start_s": 15, "duration_s": 3}, {"start_s": 22, "duration_s": 2, "depth": 0.03, "freq_hz": 2.5}]
    out = process_cpython(synth(secs, 100, hr_bpm=72, motion=motion, seed=5))[SETTLE_S:]
    mot = [abs(v[0] / 10 - 72) for v in out if not v[4] & (ST_INVALID | ST_QUESTIONABLE)]
    return {
        "hr_err_mean_bpm": round(statistics.fmean(hr_err), 2),
        "hr_err_p95_bpm": round(p95(hr_err), 2),
        "hr_err_max_bpm": round(max(hr_err), 2),
        "spo2_arms_pct": round(math.sqrt(statistics.fmean(sq)), 2),
        "low_perf_hr_err_p95_bpm": round(p95(low), 2),
        "motion_unflagged_err_max_bpm": round(max(mot), 2) if mot else 0.0,
        "reported_pct": round(100 * reported / total, 1),
    }


def probe_off(quick: bool) -> dict[str, float]:
    from medical import alarms as A
    from medical.ppg import PpgProcessor

    detect: list[float] = []
    alarm: list[float] = []
    for k, off_at in enumerate((20.0, 20.37, 20.71) if quick else (20.0, 20.13, 20.37, 20.5, 20.71, 20.94)):
        s = synth(30, 100, hr_bpm=60 + 20 * k, events=[(off_at, {"probe_on": False})], seed=k)
        p = PpgProcessor(100)
        a = A.AlarmSystem()
        lim = {"spo2_low": 90, "spo2_desat": 80, "pr_low": 50, "pr_high": 120, "temp_low": 350, "temp_high": 385}
        flagged = raised = None
        for i, (red, ir) in enumerate(s.pairs()):
            p.add(red, ir)
            if flagged is None and p.probe_off and i / 100 >= off_at:
                flagged = (i + 1) / 100 - off_at
            if (i + 1) % 100 == 0:  # the app's 1 s evaluation
                v = p.summary()
                a.update((i + 1) * 10, A.evaluate(lim, v[0], v[1], v[4], None, None, True, False))
                if raised is None and any(e[0] == A.EV_START and e[1] == A.PROBE_OFF for e in a.drain()):
                    raised = (i + 1) / 100 - off_at
        assert flagged is not None and raised is not None, "probe-off was not detected"
        detect.append(flagged)
        alarm.append(raised)
    return {"probe_off_detect_s": round(max(detect), 2), "probe_off_alarm_s": round(max(alarm), 2)}


VM_BENCH = """
import gc, time
from array import array
from medical.ppg import PpgProcessor
with open('/data/sig.bin', 'rb') as f:
    v = array('i', f.read())
gc.collect()
m0 = gc.mem_alloc()
p = PpgProcessor(100)
gc.collect()
held = gc.mem_alloc() - m0
n = len(v) // 2
t0 = time.ticks_ms()
for s in range(n // 100):
    add = p.add
    for k in range(s * 200, s * 200 + 200, 2):
        add(v[k], v[k + 1])
    p.summary()
dt = time.ticks_diff(time.ticks_ms(), t0)
print(dt, n // 100, held)
"""


def vm_cost(quick: bool) -> dict[str, float]:
    secs = 30 if quick else 120
    sig: PpgSamples = synth(secs, 100, hr_bpm=75, spo2=96)
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "sig.bin").write_bytes(sig.raw)
        with MicroPythonSession(mounts={**VM_MOUNTS, d: "/data"}) as mp:
            ms, n, held = (int(x) for x in mp.run(VM_BENCH).check().stdout.split())
    return {"mpy_ms_per_signal_s": round(ms / n, 2), "mpy_heap_kb": round(held / 1024, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rates and seeds (< 1 minute)")
    args = ap.parse_args()
    res: dict[str, object] = {"benchmark": "ppg_accuracy", "quick": args.quick}
    res.update(accuracy(args.quick))
    res.update(probe_off(args.quick))
    res.update(vm_cost(args.quick))
    res["targets"] = {"hr_err_max_bpm": 3.0, "spo2_arms_pct": 3.0, "probe_off_alarm_s": 5.0,
                      "mpy_ms_per_signal_s": 1000.0}
    res["cores"] = os.cpu_count()
    for k, v in res.items():
        if k not in ("targets",):
            print(f"{k:32} {v}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
