"""Streetlight node on an emulated board: lamp failure raised once and cleared, commands (program change
without reboot, a refused config naming its key), a 24 h gateway outage with every report delivered after it
in order, power cuts in the middle of outbox writes, a watchdog reset, and safe mode after a boot loop."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cewire import codes
from cewire import payloads as P

from cityedge.paths import FIRMWARE
from hil_tests.test_streetlight_support import NOON_UTC, GatewaySim, run, streetlight_board

sys.path.insert(0, str(FIRMWARE / "apps"))
import itertools

from streetlight import curves

LOG_30 = curves.duty(300, curves.CURVE_LOG, 10) / 65535

pytestmark = pytest.mark.emulator_only

H = 3600.0
NIGHT = NOON_UTC + 10 * H  # 22:00 UTC: the lamp is on by the clock
FAST = {"policy": "clock", "clock": {"tz_min": 60}, "telemetry_s": 900,
        "programs": {"default": [["sunset", 100]]},
        "control_ms": 10000,  # the default is 1 s; 10 s keeps a virtual day fast (each wake-up costs real time)
        "faults": {"delay_s": 30, "clear_s": 30}, "dimming": {"fade_s": 1}}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple]:
    board = streetlight_board(tmp_path, FAST, start=NIGHT)
    with board:
        gw = GatewaySim(board.link_port)
        run(board, gw, 5, step=1)
        yield board, gw
        gw.close()


def _evs(gw: GatewaySim, code: int) -> list[int]:
    return [e["state"] for e in gw.events() if e["code"] == code]


def test_lamp_failure_raised_once_and_cleared(node: tuple) -> None:
    board, gw = node
    run(board, gw, 60, step=5)
    assert board.hw.pwm_duty("PIN_LAMP_PWM") > 0.9  # lit at night: 100 % from sunset
    assert _evs(gw, codes.LAMP_FAILURE) == []
    board.hw.set("lamp", health="open")
    run(board, gw, 20, step=5)
    assert _evs(gw, codes.LAMP_FAILURE) == []  # not before the 30 s delay
    run(board, gw, 10 * 60, step=10)
    assert _evs(gw, codes.LAMP_FAILURE) == [P.EV_RAISED]  # once, however long it lasts
    assert _evs(gw, codes.UNDER_CURRENT) == []  # one fault, one code
    board.hw.set("lamp", health="ok")
    run(board, gw, 2 * 60, step=10)
    assert _evs(gw, codes.LAMP_FAILURE) == [P.EV_RAISED, P.EV_CLEARED]
    ev = next(e for e in gw.events() if e["code"] == codes.LAMP_FAILURE)
    assert ev["label"] == P.L_POWER and ev["value"] < 20  # what the meter read: < 2 W


def test_short_circuit_is_over_current_and_under_voltage(node: tuple) -> None:
    board, gw = node
    board.hw.set("lamp", health="short")
    run(board, gw, 90, step=5)
    raised = {e["code"] for e in gw.events() if e["state"] == P.EV_RAISED}
    assert {codes.OVER_CURRENT, codes.UNDER_VOLTAGE} <= raised, raised


def test_program_change_applies_without_reboot_and_bad_config_is_refused(node: tuple) -> None:
    board, gw = node
    gw.command(1, "program", {"programs": {"default": [["sunset", 30]]}})
    run(board, gw, 20, step=2)
    assert gw.cmd_acks()[1] == (P.CS_OK, "")
    assert board.hw.pwm_duty("PIN_LAMP_PWM") == pytest.approx(LOG_30, abs=1e-4)  # 30 % on the DALI curve
    assert _evs(gw, codes.PROGRAM_CHANGED) == [P.EV_INFO]
    gw.command(2, "config", {"dimming.curve": "cubic"})
    gw.command(3, "config", {"dimming.curve": "linear"})
    gw.command(4, "self_destruct")
    run(board, gw, 20, step=2)
    acks = gw.cmd_acks()
    assert acks[2][0] == P.CS_INVALID and acks[2][1].startswith("dimming.curve")
    assert acks[3] == (P.CS_OK, "") and acks[4][0] == P.CS_UNKNOWN
    assert board.hw.pwm_duty("PIN_LAMP_PWM") == pytest.approx(0.30, abs=0.002)
    assert len(gw.hellos()) == 1  # no reboot
    assert '"curve": "linear"' in (Path(board.flash_dir) / "streetlight.json").read_text()


def test_24h_outage_every_report_delivered_in_order(node: tuple) -> None:
    board, gw = node
    run(board, gw, 30, step=5)
    board.link_faults(cut=True)
    gw.settle()  # a report written just before the cut may still be on its way in (real time)
    before = len(gw.telemetry())
    run(board, gw, 24 * H, step=600)
    assert len(gw.telemetry()) == before  # nothing got through
    assert board.hw.pwm_duty("PIN_LAMP_PWM") > 0  # alone, following its program at night (22:00 again)
    board.link_faults(cut=False)
    run(board, gw, 15 * 60, step=5)
    tele = gw.telemetry()
    assert len(tele) - before >= 96, len(tele) - before  # a day at 15 min
    times = [t for t, _ in tele]
    assert times == sorted(times)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) <= 905, "no report missing"
    seqs = [r.seq for r in gw.of_type(2)]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # contiguous, in order
    assert _evs(gw, codes.GATEWAY_LOST) == [P.EV_RAISED, P.EV_CLEARED]


def test_power_cuts_during_outbox_writes(tmp_path: Path) -> None:
    settings = dict(FAST, telemetry_s=10)
    board = streetlight_board(tmp_path, settings, start=NIGHT)
    cuts = 6
    with board:
        gw = GatewaySim(board.link_port)
        run(board, gw, 30, step=1)
        board.link_faults(cut=True)  # the outbox grows on flash meanwhile
        for i in range(cuts):
            # past the boot manager's 30 s confirmation (a cut before it counts as a failed boot), and at a
            # different phase of the 10 s telemetry write cycle each time
            run(board, None, 35 + i * 1.37, step=5)
            board.power_cut()
            time.sleep(0.2)
        run(board, None, 60, step=10)
        board.link_faults(cut=False)
        run(board, gw, 5 * 60, step=2)
        assert gw.rx.counts.get("mac", 0) == 0 and gw.rx.counts.get("payload", 0) == 0  # nothing corrupt
        hellos = gw.hellos()
        assert len(hellos) == cuts + 1  # every boot announced itself
        assert [h["reset"] for h in hellos[1:]] == [P.RESET_POWER_ON] * cuts
        assert [h["boot"] for h in hellos] == list(range(hellos[0]["boot"], hellos[0]["boot"] + cuts + 1))
        tele = [t for t, _ in gw.telemetry()]
        assert tele == sorted(tele) and len(tele) >= cuts * 3
        seqs = [r.seq for r in gw.of_type(2)]
        assert len(seqs) == len(set(seqs)) and seqs == sorted(seqs)  # each once, in order
        assert board.hw.pwm_duty("PIN_LAMP_PWM") > 0.9
        assert "Traceback" not in board.serial_log
        gw.close()


def test_watchdog_resets_a_stalled_control_loop(node: tuple) -> None:
    board, gw = node
    gw.command(9, "wdt_test")
    run(board, gw, 120, step=2)  # control stale after 30 s, then the 35 s WDT timeout
    assert gw.cmd_acks()[9] == (P.CS_OK, "")
    assert board.status()["reset_reason"] == "wdt"
    hellos = gw.hellos()
    assert len(hellos) == 2 and hellos[1]["reset"] == P.RESET_WDT and hellos[1]["boot"] == hellos[0]["boot"] + 1
    assert board.hw.pwm_duty("PIN_LAMP_PWM") > 0.9  # and the street is lit again


def test_safe_mode_after_a_boot_loop_keeps_the_street_lit_and_the_repl_free(tmp_path: Path) -> None:
    board = streetlight_board(tmp_path, FAST, start=NIGHT, key="not a key")  # the app refuses to start
    with board:
        for _ in range(12):
            board.advance(1)
            time.sleep(0.05)
        log = board.wait_for_output("safe mode", timeout=20)
        assert log.count("node.json: key: must be hexadecimal") >= 3
        assert "not a key" not in log  # the secret is never logged
        assert "SAFE MODE" in log
        assert board.hw.pwm_duty("PIN_LAMP_PWM") == 1.0  # fixed schedule: on at 22:00 UTC (23:00 CET)
        import serial

        with serial.Serial(board.repl_port, 115200, timeout=0.2) as repl:
            repl.write(b"\r\nprint(6 * 7)\r\n")
            board.wait_for_output("42", timeout=5, since=len(log))
        board.advance(12 * H)  # 10:00 UTC: the timer switches it off by day
        assert board.hw.pwm_duty("PIN_LAMP_PWM") == 0.0


def test_motion_boosts_a_dimmed_street_and_the_boost_expires(tmp_path: Path) -> None:
    settings = dict(FAST, programs={"default": [["sunset", 30]]}, dimming={"curve": "linear", "fade_s": 1},
                    pir={"enabled": True, "level_pct": 100, "hold_s": 60})
    board = streetlight_board(tmp_path, settings, start=NIGHT)
    with board:
        gw = GatewaySim(board.link_port)
        run(board, gw, 20, step=2)
        assert board.hw.pwm_duty("PIN_LAMP_PWM") == pytest.approx(0.30, abs=0.002)
        board.hw.set("pir", pulse_ms=500)  # someone walks by
        run(board, gw, 12, step=1)
        assert board.hw.pwm_duty("PIN_LAMP_PWM") == 1.0
        run(board, gw, 70, step=5)  # hold time over
        assert board.hw.pwm_duty("PIN_LAMP_PWM") == pytest.approx(0.30, abs=0.002)
        gw.close()


def test_invalid_setting_is_logged_with_its_key_and_reported(tmp_path: Path) -> None:
    settings = dict(FAST, dimming={"curve": "cubic"}, sensor={"on_lux": "dark"})
    board = streetlight_board(tmp_path, settings, start=NIGHT)
    with board:
        gw = GatewaySim(board.link_port)
        run(board, gw, 10, step=1)
        log = board.serial_log
        assert ('config: /streetlight.json: dimming.curve: must be one of log, linear (got "cubic"); '
                'using default "log"') in log
        assert "config: /streetlight.json: sensor.on_lux: must be a number" in log
        ev = [e for e in gw.events() if e["code"] == codes.CONFIG_INVALID]
        assert len(ev) == 1 and ev[0]["text"].startswith("dimming.curve")
        assert board.hw.pwm_duty("PIN_LAMP_PWM") > 0.9  # the defaults light the street
        gw.close()


def test_without_a_clock_the_sensor_decides_until_the_gateway_sets_the_time(tmp_path: Path) -> None:
    board = streetlight_board(tmp_path, FAST, start=946_684_800 + 3600)  # RTC at 2000-01-01: never set
    with board:
        gw = GatewaySim(board.link_port)
        board.hw.set("bh1750", lux=5)
        run(board, gw, 30, step=2)
        assert board.hw.pwm_duty("PIN_LAMP_PWM") > 0.9  # dark by the sensor, whatever policy "clock" says
        assert gw.hellos()[0]["role"] == "streetlight"
        assert gw.of_type(1)[0].ts == 0  # records made before the clock was set say so
        gw.time_sync(NOON_UTC, tz_min=60)  # the gateway's TIME: noon in Berlin
        run(board, gw, 30, step=2)
        assert _evs(gw, codes.CLOCK_SET) == [P.EV_INFO]
        assert board.hw.pwm_duty("PIN_LAMP_PWM") == 0.0  # policy "clock": day
        assert abs(gw.of_type(3)[-1].ts - NOON_UTC) < 60  # and events carry real time now
        gw.close()
