"""The medical vital-signs node on an emulated board, virtual time (docs/alarms.md).

The board runs the deployed app on the real MicroPython VM; the MAX30102 model feeds it the synthetic PPG
(hil_tests/emulator/js/devices/); the gateway is played with cewire on CPython over the link pty. Every check
is on what leaves the board: frames on the link, and the buzzer / status LED pin traces.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cewire
import pytest
import serial
from cewire import payloads as P

from hil_tests.emulator.board import EmulatedBoard
from hil_tests.test_medical_support import (
    MedicalGateway,
    alarm_events,
    gateway,
    led_edges,
    medical_board,
    run,
    tones,
    vitals,
)

pytestmark = pytest.mark.emulator_only

MEDIUM_HZ, HIGH_HZ = 784, 988


def _start(tmp: Path, settle_s: float = 25) -> tuple[EmulatedBoard, MedicalGateway]:
    board = medical_board(tmp)
    board.__enter__()
    board.wait_booted(timeout=20)
    gw = gateway(board)
    gw.time_sync(board.now())
    run(board, gw, settle_s, step=1)
    return board, gw


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmulatedBoard, MedicalGateway]]:
    board, gw = _start(tmp_path_factory.mktemp("medical"))
    yield board, gw
    gw.close()
    board.close()


def _events_since(gw: MedicalGateway, index: int) -> list[tuple[str, str, int, int]]:
    return [e for e in alarm_events(gw) if e[3] >= index]


def _event_ts(gw: MedicalGateway, index: int) -> int:
    return gw.records[index].ts


def _until(board: EmulatedBoard, gw: MedicalGateway, pred: Callable[[], list[Any]], limit_s: int) -> list[Any]:
    """Advance 1 s at a time until ``pred()`` is truthy; return its value (fails after ``limit_s``)."""
    for _ in range(limit_s):
        run(board, gw, 1, step=1)
        got = pred()
        if got:
            return got
    raise AssertionError(f"not within {limit_s} s; board serial log (tail):\n{board.serial_log[-2000:]}")


def _normal(board: EmulatedBoard, gw: MedicalGateway) -> None:
    """Back to a healthy adult reading and no active alarm."""
    board.hw.set("max30102", hr_bpm=75, spo2=97, probe_on=True)
    board.hw.set("max30205", celsius=36.8)
    run(board, gw, 20, step=1)
    gw.command(900 + len(gw.records), "ack", {})  # reset anything latched
    run(board, gw, 3, step=1)


def test_boot_hello_vitals_every_second_and_sensor_setup(node: tuple[EmulatedBoard, MedicalGateway]) -> None:
    board, gw = node
    assert gw.records[0].ftype == cewire.T_HELLO
    hello = gw.hellos()[0]
    assert hello["role"] == "medical" and "spo2" in hello["caps"] and hello["boot"] >= 1
    vs = [v for v in vitals(gw) if v.t >= board.now() - 15]
    ts = [v.t for v in vs]
    assert len(ts) == len(set(ts)) and max(ts) - min(ts) + 1 == len(ts) >= 14, "one vitals record per second"
    for v in vs:
        assert v.hr is not None and v.spo2 is not None and abs(v.hr - 75) <= 3 and abs(v.spo2 - 97) <= 3, v
        assert v.quality & P.Q_VALIDATED
    assert any(v.temp == 36.8 for v in vs), "body temperature every 5 s"
    sensor = board.hw.device("max30102")
    assert sensor["mode"] == 3 and sensor["rate_hz"] == 100 and sensor["led_pa"] == [36, 36]
    assert sensor["samples_lost"] == 0, "the FIFO is drained in time"
    assert not alarm_events(gw)


def test_spo2_low_delay_ack_escalation_end(node: tuple[EmulatedBoard, MedicalGateway]) -> None:
    board, gw = node
    start = len(gw.records)
    board.hw.set("max30102", spo2=86)
    t_set = board.now() * 1000
    raised = _until(board, gw, lambda: [e for e in _events_since(gw, start) if e[:2] == ("spo2_low", "raised")], 30)
    _name, _state, prio, idx = raised[0]
    assert prio == cewire.PRIO_MEDIUM
    run(board, gw, 2, step=1)
    first_low = min(v.t for v in vitals(gw) if v.t * 1000 >= t_set - 1000 and v.spo2 is not None and v.spo2 < 90)
    assert 10 <= _event_ts(gw, idx) - first_low <= 12, "10 s alarm condition delay"
    body = P.parse_event(gw.records[idx].body)
    assert body["label"] == P.L_SPO2 and body["limit"] == 900 and body["value"] < 900
    run(board, gw, 8, step=1)
    assert {hz for _, hz in tones(board, t_set)} == {MEDIUM_HZ}
    # acknowledge: audio stops, the LED keeps flashing
    gw.command(11, "ack", {"alarm": "spo2_low"})
    run(board, gw, 2, step=1)
    assert gw.cmd_acks()[11][0] == P.CS_OK
    t_ack = board.now() * 1000
    run(board, gw, 20, step=1)
    assert ("spo2_low", "acked", cewire.PRIO_MEDIUM) in [e[:3] for e in _events_since(gw, start)]
    assert not tones(board, t_ack + 100)
    assert len(led_edges(board, t_ack)) >= 8, "visual signal continues while acknowledged"
    # still low 60 s after it started: escalates to high and sounds again
    esc = _until(board, gw, lambda: [e for e in _events_since(gw, start) if e[:2] == ("spo2_low", "escalated")], 40)
    assert esc[0][2] == cewire.PRIO_HIGH
    assert 59 <= _event_ts(gw, esc[0][3]) - _event_ts(gw, idx) <= 61
    t_esc = board.now() * 1000
    run(board, gw, 8, step=1)
    assert {hz for _, hz in tones(board, t_esc - 1000)} == {HIGH_HZ}
    # SpO2 recovers: the alarm ends, signals stop
    board.hw.set("max30102", spo2=97)
    _until(board, gw, lambda: [e for e in _events_since(gw, start) if e[:2] == ("spo2_low", "cleared")], 20)
    t_end = board.now() * 1000
    run(board, gw, 10, step=1)
    assert not tones(board, t_end + 100) and not led_edges(board, t_end + 100)


def test_desaturation_is_immediate_high_and_latched(node: tuple[EmulatedBoard, MedicalGateway]) -> None:
    board, gw = node
    _normal(board, gw)
    start = len(gw.records)
    board.hw.set("max30102", spo2=74)
    t_set = board.now() * 1000
    ev = _until(board, gw, lambda: [e for e in _events_since(gw, start) if e[:2] == ("desaturation", "raised")], 20)
    assert ev[0][2] == cewire.PRIO_HIGH
    run(board, gw, 2, step=1)  # the event overtook that second's vitals record
    first_below = min(v.t for v in vitals(gw) if v.t * 1000 >= t_set - 1000 and v.spo2 is not None and v.spo2 < 80)
    assert _event_ts(gw, ev[0][3]) - first_below <= 1, "no condition delay"
    run(board, gw, 6, step=1)
    edges = led_edges(board, t_set)
    gaps = {round(b[0] - a[0]) for a, b in itertools.pairwise(edges)}
    assert 250 in gaps, "high priority: LED flashing at 2 Hz"
    assert HIGH_HZ in {hz for _, hz in tones(board, t_set)}
    # the condition ends but the alarm is latched until acknowledged
    board.hw.set("max30102", spo2=97)
    run(board, gw, 30, step=1)
    assert ("desaturation", "cleared") not in [e[:2] for e in _events_since(gw, start)]
    t_latched = board.now() * 1000 - 10_000
    assert tones(board, t_latched) and led_edges(board, t_latched), "latched: still signalled"
    gw.command(21, "ack", {})
    run(board, gw, 3, step=1)
    after = [e[:2] for e in _events_since(gw, start)]
    assert ("desaturation", "acked") in after and ("desaturation", "cleared") in after


def test_pulse_rate_and_temperature_alarms(node: tuple[EmulatedBoard, MedicalGateway]) -> None:
    board, gw = node
    _normal(board, gw)
    start = len(gw.records)
    board.hw.set("max30102", hr_bpm=140)
    board.hw.set("max30205", celsius=39.4)
    pr = _until(board, gw, lambda: [e for e in _events_since(gw, start) if e[:2] == ("pr_high", "raised")], 30)
    assert pr[0][2] == cewire.PRIO_MEDIUM
    run(board, gw, 2, step=1)
    first_high = min(v.t for v in vitals(gw) if v.t >= gw.records[start].ts - 1 and v.hr is not None and v.hr > 120)
    assert 5 <= _event_ts(gw, pr[0][3]) - first_high <= 7, "5 s condition delay"
    temp = _until(board, gw, lambda: [e for e in _events_since(gw, start) if e[:2] == ("temp_high", "raised")], 45)
    assert temp[0][2] == cewire.PRIO_LOW
    assert P.parse_event(gw.records[temp[0][3]].body)["value"] == 3940
    _normal(board, gw)
    names = [e[:2] for e in _events_since(gw, start)]
    assert ("pr_high", "cleared") in names and ("temp_high", "cleared") in names


def test_audio_pause_is_time_limited(node: tuple[EmulatedBoard, MedicalGateway]) -> None:
    board, gw = node
    _normal(board, gw)
    start = len(gw.records)
    board.hw.set("max30102", hr_bpm=40)  # below 50: pr_low, medium
    _until(board, gw, lambda: [e for e in _events_since(gw, start) if e[:2] == ("pr_low", "raised")], 30)
    gw.command(31, "pause_audio", {"s": 500})
    gw.command(32, "pause_audio", {"s": 30})
    run(board, gw, 2, step=1)
    acks = gw.cmd_acks()
    assert acks[31][0] == P.CS_INVALID and acks[32][0] == P.CS_OK
    assert ("pr_low", "paused") in [e[:2] for e in _events_since(gw, start)]
    t_pause = board.now() * 1000
    run(board, gw, 26, step=1)
    assert not tones(board, t_pause), "silent during the pause"
    assert led_edges(board, t_pause), "visual signal continues"
    run(board, gw, 12, step=1)
    assert tones(board, t_pause + 28_000), "sound returns when the pause ends"
    assert ("pr_low", "info") in [e[:2] for e in _events_since(gw, start)]


def test_probe_off_within_5_seconds(node: tuple[EmulatedBoard, MedicalGateway]) -> None:
    board, gw = node
    _normal(board, gw)
    start = len(gw.records)
    t_off = board.now()
    board.hw.set("max30102", probe_on=False)
    ev = _until(board, gw, lambda: [e for e in _events_since(gw, start) if e[:2] == ("probe_off", "raised")], 6)
    assert ev[0][2] == cewire.PRIO_MEDIUM
    assert board.now() - t_off <= 5
    run(board, gw, 2, step=1)
    flagged = [v for v in vitals(gw) if v.t > t_off + 1]
    assert flagged and all(v.hr is None and v.quality & P.Q_INVALID for v in flagged)
    board.hw.set("max30102", probe_on=True)
    _until(board, gw, lambda: [e for e in _events_since(gw, start) if e[:2] == ("probe_off", "cleared")], 10)
    run(board, gw, 15, step=1)
    assert vitals(gw)[-1].hr is not None, "values come back"


def test_limit_and_profile_commands(node: tuple[EmulatedBoard, MedicalGateway]) -> None:
    board, gw = node
    _normal(board, gw)
    gw.command(41, "set_limits", {"spo2_low": 101})
    gw.command(42, "set_limits", {"spo2_desat": 92})
    gw.command(43, "set_profile", {"profile": "elderly"})
    gw.command(44, "bogus", {})
    gw.command(45, "set_profile", {"profile": "child"})
    run(board, gw, 2, step=1)
    acks = gw.cmd_acks()
    assert acks[41][0] == P.CS_INVALID and "spo2_low" in acks[41][1]
    assert acks[42][0] == P.CS_INVALID and "spo2_desat" in acks[42][1]
    assert acks[43][0] == P.CS_INVALID and acks[44][0] == P.CS_UNKNOWN
    assert acks[45][0] == P.CS_OK
    saved = json.loads((board.flash_dir / "medical.json").read_text())
    assert saved["profile"] == "child"
    start = len(gw.records)
    board.hw.set("max30102", hr_bpm=140)  # above the adult limit, below the child one (160)
    run(board, gw, 25, step=1)
    assert not _events_since(gw, start)
    gw.command(46, "set_limits", {"pr_high": 130})
    run(board, gw, 12, step=1)
    assert gw.cmd_acks()[46][0] == P.CS_OK
    assert ("pr_high", "raised") in [e[:2] for e in _events_since(gw, start)]
    gw.command(47, "set_profile", {"profile": "adult"})
    _normal(board, gw)


def test_gateway_outage_alarms_sound_locally_and_arrive_later(tmp_path: Path) -> None:
    board, gw = _start(tmp_path, settle_s=20)
    try:
        board.link_faults(cut=True)
        t_cut = board.now()
        gw.settle()  # a frame the board wrote just before the cut may still be on its way in (real time)
        start = len(gw.records)
        run(board, gw, 60, step=2)
        board.hw.set("max30102", spo2=74)
        t_desat = board.now() * 1000
        run(board, gw, 150, step=2)
        assert len(gw.records) == start, "nothing gets through the cut link"
        # alone: the desaturation alarm is signalled on the device
        assert {hz for _, hz in tones(board, t_desat)} >= {HIGH_HZ}
        edges = led_edges(board, t_desat)
        assert len(edges) >= 2 * 100, "LED flashing at 2 Hz through the outage"
        board.link_faults(cut=False)
        t_back = board.now()
        run(board, gw, 120, step=2)
        after = gw.records[start:]
        events = _events_since(gw, start)
        names = [e[:2] for e in events]
        assert ("desaturation", "raised") in names
        assert ("gateway_lost", "raised") in names and ("gateway_lost", "cleared") in names
        assert len(names) == len(set(names)), "each event exactly once"
        # alarm events overtake the vitals backlog: before every queued DATA frame but the one that woke the link
        first_event = next(i for i, r in enumerate(after) if r.ftype == cewire.T_EVENT)
        data_before = sum(1 for r in after[:first_event] if r.ftype == cewire.T_DATA)
        data_total = sum(1 for r in after if r.ftype == cewire.T_DATA)
        assert data_before <= 1 < data_total
        # the vitals of the outage arrive later, batched, none lost
        outage = [v.t for v in vitals(gw) if t_cut + 1 <= v.t <= t_back - 1]
        assert len(set(outage)) >= (t_back - t_cut) - 3, "every second of the outage is delivered"
        assert any(len(P.parse_data(r.body, r.ts)) > 1 for r in after if r.ftype == cewire.T_DATA), "batched"
    finally:
        gw.close()
        board.close()


def test_accuracy_sweep_on_the_board(tmp_path: Path) -> None:
    board, gw = _start(tmp_path, settle_s=5)
    try:
        sq = []
        for hr, spo2 in ((40, 99), (100, 85), (160, 78), (200, 70)):
            board.hw.set("max30102", hr_bpm=hr, spo2=spo2)
            t_set = board.now()
            run(board, gw, 25, step=1)
            # the last 8 s of values (vitals may trail a second or two: they are batched while un-acknowledged)
            recent = [v for v in vitals(gw) if v.t >= t_set + 15]
            assert len(recent) >= 6, (t_set, [v.t for v in vitals(gw)][-5:])
            for v in recent:
                assert v.hr is not None and v.spo2 is not None, v
                assert abs(v.hr - hr) <= 3, (hr, v)
                sq.append((v.spo2 - spo2) ** 2)
        assert (sum(sq) / len(sq)) ** 0.5 <= 3.0
        assert board.hw.device("max30102")["samples_lost"] == 0
    finally:
        gw.close()
        board.close()


def test_safe_mode_after_repeated_boot_failures(tmp_path: Path) -> None:
    board = medical_board(tmp_path)
    for app in (tmp_path / "flash").glob("app_*/lib/medical/app.py"):
        app.write_text("raise RuntimeError('a broken build')\n")
    with board:
        board.wait_for_output("SAFE MODE", timeout=30)
        t0 = board.now() * 1000
        board.advance(20)
        log = board.serial_log
        assert "medical safe mode" in log and log.rstrip().endswith(">>>"), "the REPL is free for a fixed app"
        pulses = tones(board, t0)
        assert pulses and {hz for _, hz in pulses} == {MEDIUM_HZ}, "technical alarm, medium priority"
        assert len(led_edges(board, t0)) >= 18, "LED flashing at 0.5 Hz"


def test_technical_alarms_no_pulse_battery_sensor_and_temp_low(tmp_path: Path) -> None:
    board, gw = _start(tmp_path, settle_s=20)
    try:
        start = len(gw.records)

        def raised(name: str) -> list[Any]:
            return [e for e in _events_since(gw, start) if e[:2] == (name, "raised")]

        board.hw.set("max30102", perfusion_pct=0.0)  # probe on, no pulsation
        t0 = board.now()
        ev = _until(board, gw, lambda: raised("no_pulse"), 20)
        assert ev[0][2] == cewire.PRIO_MEDIUM and board.now() - t0 >= 5
        esc = _until(board, gw, lambda: [e for e in _events_since(gw, start) if e[:2] == ("no_pulse", "escalated")], 20)
        assert esc[0][2] == cewire.PRIO_HIGH and 14 <= _event_ts(gw, esc[0][3]) - _event_ts(gw, ev[0][3]) <= 16
        board.hw.set("max30102", perfusion_pct=2.0)
        board.hw.set("battery", volts=3.3)
        board.hw.set("max30205", celsius=34.2)
        bat = _until(board, gw, lambda: raised("low_battery"), 20)
        assert bat[0][2] == cewire.PRIO_LOW
        tl = _until(board, gw, lambda: raised("temp_low"), 45)
        assert tl[0][2] == cewire.PRIO_LOW
        board.hw.set("max30102", attached=False)  # the sensor stops answering on the bus
        sf = _until(board, gw, lambda: raised("sensor_failure"), 5)
        assert sf[0][2] == cewire.PRIO_MEDIUM
        board.hw.set("max30102", attached=True)
        board.hw.set("battery", volts=3.9)
        board.hw.set("max30205", celsius=36.8)
        run(board, gw, 45, step=1)
        names = [e[:2] for e in _events_since(gw, start)]
        assert ("no_pulse", "cleared") in names and ("low_battery", "cleared") in names
        assert ("temp_low", "cleared") in names
        assert ("sensor_failure", "cleared") not in names, "latching: held until acknowledged"
        assert vitals(gw)[-1].hr is not None, "the sensor was re-initialised"
        gw.command(51, "ack", {"alarm": "sensor_fail"})
        run(board, gw, 2, step=1)
        assert ("sensor_failure", "cleared") in [e[:2] for e in _events_since(gw, start)]
    finally:
        gw.close()
        board.close()


def test_config_validation_forged_commands_and_watchdog(tmp_path: Path) -> None:
    board = medical_board(tmp_path, settings={"profile": "newborn", "fs": 75, "limits": {"pr_high": 999}})
    with board:
        board.wait_booted(timeout=20)
        gw = gateway(board)
        try:
            gw.time_sync(board.now())
            run(board, gw, 5, step=1)
            info = [P.parse_event(r.body) for r in gw.of_type(cewire.T_EVENT)]
            bad = [e for e in info if e["code"] == cewire.codes.CONFIG_INVALID]
            assert bad and "fs" in bad[0]["text"], "an invalid setting is reported, with its key"
            assert "medical.json: fs: must be 50 or 100" in board.serial_log
            assert "limits.pr_high" in board.serial_log
            assert board.hw.device("max30102")["rate_hz"] == 100, "the default is used"
            # a command under the wrong key is dropped unanswered and changes nothing
            forger = gateway(board)
            forger.k = cewire.Key(bytes(32), 1)
            forger.seq = 1000
            forger.command(61, "set_profile", {"profile": "adult"})
            run(board, gw, 3, step=1)
            assert 61 not in gw.cmd_acks()
            assert "adult" not in (board.flash_dir / "medical.json").read_text()
            forger.close()
            # watchdog: a task that stops reporting resets the board; the next HELLO says why
            gw.command(62, "wdt_test", {})
            t_cmd = board.now()
            _until(board, gw, lambda: gw.hellos()[1:], 30)
            assert board.now() - t_cmd <= 5 + 8 + 5, "stale after 5 s, WDT timeout 8 s, boot"
            hellos = gw.hellos()
            assert len(hellos) == 2 and hellos[1]["reset"] == P.RESET_WDT and hellos[1]["boot"] == hellos[0]["boot"] + 1
        finally:
            gw.close()


def test_fifo_overflow_is_detected(tmp_path: Path) -> None:
    from hil_tests.plugin import Repl

    with medical_board(tmp_path) as board:
        board.wait_booted(timeout=20)
        # interrupt the app (the FIFO is then no longer drained): Ctrl-C lands when the app's tasks next run,
        # so keep the virtual clock moving until the prompt shows, then take the raw REPL
        done = threading.Event()

        def tick() -> None:
            while not done.is_set():
                board.advance(0.05)
                time.sleep(0.01)

        mover = threading.Thread(target=tick, daemon=True)
        since = len(board.serial_log)
        with serial.Serial(board.repl_port, 115200, timeout=0.1) as con:
            mover.start()
            try:
                con.write(b"\x03\x03")
                board.wait_for_output(">>> ", timeout=20, since=since)
            finally:
                done.set()
                mover.join(timeout=5)
        repl = Repl(board.repl_port)
        try:
            repl.exec("import board as B\nfrom machine import I2C\nfrom drivers.max30102 import MAX30102\n"
                      "from array import array\ns = MAX30102(I2C(B.I2C_ID), B.ADDR_MAX30102)\ns.start()\n"
                      "r = array('i', [0] * 32)\ni = array('i', [0] * 32)")
            repl.exec("s.clear()")
            board.advance(0.2)
            assert repl.eval("(s.read_into(r, i), s.last_lost)") == (20, 0)
            board.advance(1.0)  # 100 samples into a 32-sample FIFO
            n, lost = repl.eval("(s.read_into(r, i), s.last_lost)")
            assert n == 32 and lost == 31, "overflow counter (saturates at 31) reported by the driver"
            assert board.hw.device("max30102")["samples_lost"] == 68
            assert repl.eval("s.lost") >= 31 and repl.eval("s.overflows") == 1
            assert 100_000 < repl.eval("i[31]") < 130_000
        finally:
            repl.close()
