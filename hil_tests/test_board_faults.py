"""Emulator-only faults on a real-time board: a hung firmware and its watchdog, a scheduled power cut."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import serial

from hil_tests.emulator.board import EmulatedBoard
from hil_tests.plugin import Repl

pytestmark = pytest.mark.emulator_only


def test_watchdog_resets_firmware_stuck_in_a_busy_loop(board_factory: Callable[..., EmulatedBoard]) -> None:
    b = board_factory()
    with serial.Serial(b.repl_port, 115200, timeout=2) as s:
        s.write(b"from machine import WDT\r")
        s.read_until(b">>> ")
        s.write(b"w = WDT(timeout=500)\r")
        s.read_until(b">>> ")
        s.write(b"while True: pass\r\r")  # never feeds, never sleeps: only the host can see the deadline
    b.wait_booted(boots=2, timeout=10)
    assert b.status()["reset_reason"] == "wdt"
    r = Repl(b.repl_port)
    assert r.eval("__import__('machine').reset_cause()") == 3
    r.close()


def test_power_cut_in_the_middle_of_a_file_write(board_factory: Callable[..., EmulatedBoard]) -> None:
    b = board_factory()
    r = Repl(b.repl_port)
    r.exec("with open('log.txt', 'w') as f:\n    f.write('old')\n")
    r.close()
    # the firmware rewrites the file slowly; the power goes away while it is open
    with serial.Serial(b.repl_port, 115200, timeout=2) as s:
        s.write(b"import time\r")
        s.read_until(b">>> ")
        s.write(b"f = open('log.txt', 'w'); f.write('new, half'); print('WRITING'); time.sleep(5); f.close()\r")
        b.wait_for_output("WRITING")
        b.power_cut(after_seconds=0.2, off_seconds=0.1)  # scheduled by the host while the file is open
    b.wait_booted(boots=2, timeout=10)
    assert (b.flash_dir / "log.txt").read_text() == "old"  # littlefs-like: the old file survives
    r = Repl(b.repl_port)
    assert r.eval("open('log.txt').read()") == "old"
    assert r.eval("__import__('machine').reset_cause()") == 1
    r.close()


def test_deep_sleep_wakes_on_the_virtual_clock(board_factory: Callable[..., EmulatedBoard]) -> None:
    b = board_factory(virtual_time=True, start_time=1_750_000_000)
    r = Repl(b.repl_port)
    assert r.eval("__import__('os').uname().sysname") == "esp32"
    r._t.serial.write(b"import machine; machine.deepsleep(60000)\x04")  # no answer: the board goes to sleep
    r._t.serial.close()
    deadline = time.monotonic() + 10
    while not b.status()["asleep"] and time.monotonic() < deadline:
        time.sleep(0.02)
    b.advance(30)
    assert b.status()["asleep"] is True
    b.advance(40)  # wakes at +60 s, then runs 10 s of its own
    b.wait_booted(boots=2)
    r = Repl(b.repl_port)
    assert r.eval("__import__('machine').reset_cause()") == 4  # DEEPSLEEP_RESET
    assert r.eval("__import__('time').time()") == 1_750_000_070
    r.close()
