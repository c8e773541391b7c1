"""The node apps' RAM budgets (issue #4), held in CI: the heap benchmark's quick day on the MicroPython VM.

The figures are deterministic on the VM, so a change that pushes an app over its budget fails here, before it
lands, rather than in the next benchmark run. The streetlight app sits close to a cliff: MicroPython's string
pool grows in doubling blocks, and its sixth block (about 4.5 KB) opens once the VM holds more than 620 names
(docs/streetlight.md, "What closed the gap").
"""

from __future__ import annotations

from benchmarks.firmware_heap import measure_medical, measure_streetlight

STREETLIGHT_BUDGET_KB = 48
MEDICAL_BUDGET_KB = 64
HOW = "measured as `benchmarks/firmware_heap.py --quick` does; docs/streetlight.md says where the heap goes"


def test_streetlight_app_stays_within_its_48_kb_heap_and_five_name_pool_blocks() -> None:
    figures = measure_streetlight(quick=True, layout="romfs")
    assert figures["streetlight_name_pool_blocks"] <= 5, (
        f"{figures['streetlight_interned_names']} names opened a sixth string-pool block (about 4.5 KB); "
        "fewer new names (or the build's short names) keep it shut"
    )
    peak = figures["streetlight_heap_peak_kb"]
    assert peak <= STREETLIGHT_BUDGET_KB, f"streetlight heap peak {peak} KB > {STREETLIGHT_BUDGET_KB} KB ({HOW})"
    assert figures["streetlight_frames_delivered"] > 0


def test_medical_app_stays_within_its_64_kb_heap_and_drops_no_vitals() -> None:
    figures = measure_medical(True, "romfs")
    peak = figures["medical_heap_peak_kb"]
    assert peak <= MEDICAL_BUDGET_KB, f"medical heap peak {peak} KB > {MEDICAL_BUDGET_KB} KB ({HOW})"
    assert figures["medical_vitals_dropped"] == 0 and figures["medical_alarm_events"] > 0
