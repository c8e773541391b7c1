"""Alarm state machine (docs/alarms.md), profiles and annunciator patterns of the medical node.

Each scenario is one piece of code run on CPython and on the MicroPython VM; both must print the same
event log, and the log is checked against the specification.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from hil_tests.emulator.runner import MicroPythonSession
from tests.medical_support import VM_MOUNTS

# A scenario drives AlarmSystem second by second and prints its event log as JSON:
# [event name, condition name, priority name, t_s]
PRELUDE = """
import json
from medical import alarms as A
from medical.alarms import AlarmSystem, evaluate, CONDITIONS, EVENT_NAMES, PRIORITY_NAMES
from medical import ppg, profiles
log = []
def run(a, t0, t1, mask):
    for t in range(t0, t1):
        a.update(t * 1000, mask)
        for ev, c, p, now in a.drain():
            log.append([EVENT_NAMES[ev], CONDITIONS[c][0] if c >= 0 else '*', PRIORITY_NAMES[p], now // 1000])
def bit(c):
    return 1 << c
"""

SCENARIOS = {
    "spo2_low_delay_escalate_ack_end": """
a = AlarmSystem()
run(a, 0, 9, bit(A.SPO2_LOW))                 # present 9 s: below the 10 s condition delay
run(a, 9, 10, 0)                              # gone: nothing was raised, delay restarts
run(a, 10, 25, bit(A.SPO2_LOW))               # raised at 20 s (medium)
audio1 = a.audio_priority(25000)
a.acknowledge(25000, A.SPO2_LOW)
audio2 = a.audio_priority(25000); vis = a.visual_priority()
run(a, 25, 85, bit(A.SPO2_LOW))               # escalates to high 60 s after it started: sounds again
audio3 = a.audio_priority(85000)
run(a, 85, 87, 0)                             # condition ends: non-latching alarm ends at once
log.append([audio1, audio2, vis, audio3, a.visual_priority()])
""",
    "desaturation_latches_until_acknowledged": """
a = AlarmSystem()
run(a, 0, 2, bit(A.SPO2_DESAT) | bit(A.SPO2_LOW))   # no delay: high at once
run(a, 2, 30, 0)                                    # condition gone, alarm latched
held = [a.active(A.SPO2_DESAT), a.audio_priority(30000)]
a.acknowledge(30000)                                # acknowledging resets the latched alarm
run(a, 30, 31, 0)
log.append(held + [a.visual_priority()])
""",
    "audio_pause_limited_and_ended_by_high": """
a = AlarmSystem()
run(a, 0, 12, bit(A.PR_HIGH))                       # medium after 5 s
a.pause_audio(12000, 600000)                        # asked for 10 min: capped at 2 min
run(a, 12, 140, bit(A.PR_HIGH))                     # pause expires at 132 s
b = AlarmSystem()
run(b, 0, 6, bit(A.PROBE_OFF))                      # medium technical after 2 s
b.pause_audio(6000)
s = b.audio_priority(7000)
run(b, 6, 30, bit(A.PROBE_OFF) | bit(A.SPO2_DESAT)) # a new high alarm ends the pause
log.append([s, b.audio_priority(30000)])
""",
    "ack_expires_and_technical_delays": """
a = AlarmSystem()
run(a, 0, 10, bit(A.NO_PULSE))                      # medium at 5 s, escalates to high 15 s later
run(a, 10, 30, bit(A.NO_PULSE))
a.acknowledge(30000)
run(a, 30, 340, bit(A.NO_PULSE))                    # acknowledgement lasts 5 min
run(a, 340, 341, 0)
""",
    "evaluate_conditions": """
L = profiles.defaults('adult')
ok = ppg.ST_VALIDATED
m1 = evaluate(L, 1300, 870, ok, 3900, 3700, True, False)     # PR 130 > 120, SpO2 87 < 90, temp 39.0
m2 = evaluate(L, 1300, 700, ppg.ST_QUESTIONABLE, None, 3300, False, False)  # questionable: no physiological
m3 = evaluate(L, -1, -1, ppg.ST_INVALID | ppg.ST_PROBE_OFF, 3400, None, True, True)
names = lambda m: [CONDITIONS[c][0] for c in range(A.N_COND) if m >> c & 1]
log.append([names(m1), names(m2), names(m3)])
""",
}



def _cpython(code: str) -> list[Any]:
    ns: dict[str, Any] = {}
    exec(compile(PRELUDE + code + "\nprint_log = json.dumps(log)", "<scenario>", "exec"), ns)
    return json.loads(ns["print_log"])


@pytest.fixture(scope="module")
def vm_logs() -> dict[str, list[Any]]:
    out = {}
    with MicroPythonSession(mounts=VM_MOUNTS) as mp:
        for name, code in SCENARIOS.items():
            res = mp.run(PRELUDE + code + "\nprint(json.dumps(log))").check()
            out[name] = json.loads(res.stdout)
    return out


@pytest.fixture(scope="module")
def logs() -> dict[str, list[Any]]:
    return {name: _cpython(code) for name, code in SCENARIOS.items()}


def test_micropython_and_cpython_agree(logs: dict[str, list[Any]], vm_logs: dict[str, list[Any]]) -> None:
    assert vm_logs == logs


def test_condition_delay_ack_escalation_and_end(logs: dict[str, list[Any]]) -> None:
    assert logs["spo2_low_delay_escalate_ack_end"] == [
        ["start", "spo2_low", "medium", 20],  # present from 10 s, 10 s condition delay
        ["ack", "spo2_low", "medium", 25],
        ["escalate", "spo2_low", "high", 80],  # 60 s after it started
        ["end", "spo2_low", "high", 85],
        [2, 0, 2, 3, 0],  # audio before ack, after ack, visual after ack, audio after escalation, visual at end
    ]


def test_desaturation_is_high_immediate_and_latching(logs: dict[str, list[Any]]) -> None:
    log = logs["desaturation_latches_until_acknowledged"]
    assert log[0] == ["start", "spo2_desat", "high", 0]
    assert ["end", "spo2_desat", "high", 30] in log
    assert ["ack", "spo2_desat", "high", 30] in log
    # spo2_low never started (10 s delay) and the latched desaturation kept sounding until acknowledged
    assert not any(e[1] == "spo2_low" for e in log[:-1])
    assert log[-1] == [3, 3, 0]


def test_audio_pause_is_capped_and_a_new_high_alarm_ends_it(logs: dict[str, list[Any]]) -> None:
    log = logs["audio_pause_limited_and_ended_by_high"]
    assert ["start", "pr_high", "medium", 5] in log
    assert ["pause", "*", "none", 12] in log
    assert ["resume", "*", "none", 132] in log  # 2 min after the pause
    assert ["start", "probe_off", "medium", 2] in log
    assert ["start", "spo2_desat", "high", 6] in log
    assert ["resume", "*", "none", 6] in log
    assert log[-1] == [0, 3]


def test_acknowledgement_expires_and_escalation(logs: dict[str, list[Any]]) -> None:
    log = logs["ack_expires_and_technical_delays"]
    assert log == [
        ["start", "no_pulse", "medium", 5],
        ["escalate", "no_pulse", "high", 20],
        ["ack", "no_pulse", "high", 30],
        ["resume", "no_pulse", "high", 330],
        ["end", "no_pulse", "high", 340],
    ]


def test_evaluate_only_trusts_good_values(logs: dict[str, list[Any]]) -> None:
    m1, m2, m3 = logs["evaluate_conditions"][0]
    assert m1 == ["spo2_low", "pr_high", "temp_high"]
    assert m2 == ["poor_signal", "battery_low", "link_lost"]
    assert m3 == ["temp_low", "probe_off", "sensor_fail"]


def test_profiles_and_limit_changes() -> None:
    from medical import profiles

    assert profiles.defaults("newborn")["pr_high"] == 200
    assert profiles.defaults("child")["pr_low"] == 75
    new = profiles.apply_changes(profiles.defaults("adult"), {"spo2_low": 92, "pr_high": 130})
    assert new["spo2_low"] == 92 and new["pr_high"] == 130
    for bad, key in (
        ({"spo2_low": 101}, "spo2_low"),
        ({"spo2_desat": 91}, "spo2_desat"),
        ({"pr_low": "50"}, "pr_low"),
        ({"bogus": 1}, "bogus"),
    ):
        with pytest.raises(profiles.LimitError, match=key):
            profiles.apply_changes(profiles.defaults("adult"), bad)
    with pytest.raises(profiles.LimitError, match="profile"):
        profiles.defaults("elderly")


def test_annunciator_patterns_per_priority() -> None:
    from medical.annunciator import Annunciator, led_on, tone

    # high: red 2 Hz flashing; medium: 0.5 Hz; low: steady
    assert [led_on(3, t) for t in (0, 249, 250, 499, 500)] == [True, True, False, False, True]
    assert [led_on(2, t) for t in (0, 999, 1000, 1999)] == [True, True, False, False]
    assert all(led_on(1, t) for t in range(0, 5000, 100)) and not led_on(0, 0)

    def pulses(prio: int, period: int) -> int:
        on = [tone(prio, t) > 0 for t in range(0, period, 10)]
        return sum(1 for i in range(1, len(on)) if on[i] and not on[i - 1]) + on[0]

    assert pulses(3, 6000) == 10 and pulses(2, 8000) == 3 and pulses(1, 20000) == 2
    assert tone(3, 0) > tone(2, 0) > tone(1, 0) > 0 and tone(0, 0) == 0

    class Pin:
        def __init__(self) -> None:
            self.trace: list[int] = []

        def value(self, v: int) -> None:
            self.trace.append(v)

    class Pwm:
        def __init__(self) -> None:
            self.trace: list[tuple[str, int]] = []

        def freq(self, f: int) -> None:
            self.trace.append(("f", f))

        def duty_u16(self, d: int) -> None:
            self.trace.append(("d", d))

    led, buz = Pin(), Pwm()
    ann = Annunciator(led, buz)
    for t in range(1000, 2000, 50):
        ann.tick(t, 3, 3)
    assert led.trace[:3] == [1, 0, 1]  # only changes are written
    assert buz.trace[:3] == [("f", 988), ("d", 32768), ("d", 0)]  # the burst starts when the alarm starts
