"""The emulated board itself: machine module on the peripheral models, virtual time, resets and faults."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import serial

from hil_tests.emulator.board import Board, EmulatedBoard
from hil_tests.plugin import BoardExecError, Repl

pytestmark = [pytest.mark.board(role="bare", virtual_time=True, start_time=1_750_000_000), pytest.mark.emulator_only]

I2C = "from machine import I2C, Pin, PWM, ADC\nimport board as B\ni2c = I2C(B.I2C_ID)\n"


def test_i2c_scan_and_bh1750_registers_follow_the_light(board: Board, sensors: Any, repl: Repl) -> None:
    assert repl.eval("__import__('machine').I2C(0).scan()") == [0x23, 0x40, 0x48]
    sensors.set("bh1750", lux=250.0)
    repl.exec(I2C + "i2c.writeto(B.ADDR_BH1750, b'\\x10')")  # continuous high-resolution mode
    board.advance(0.2)  # conversion time 120 ms
    counts = repl.eval("int.from_bytes(__import__('machine').I2C(0).readfrom(0x23, 2), 'big')")
    assert counts == round(250.0 * 1.2)
    sensors.set("bh1750", lux=4.0)
    board.advance(0.2)
    assert repl.eval("int.from_bytes(__import__('machine').I2C(0).readfrom(0x23, 2), 'big')") == round(4.8)
    sensors.set("bh1750", attached=False)
    out = repl.exec(
        "try:\n    __import__('machine').I2C(0).readfrom(0x23, 2)\nexcept OSError as e:\n    print(e.errno)"
    )
    assert out.strip() == "19"  # ENODEV, as the ESP32 port reports a missing device
    sensors.set("bh1750", attached=True)


def test_lamp_power_follows_pwm_duty_and_health(board: Board, sensors: Any, repl: Repl) -> None:
    read = (
        I2C + "i2c.writeto_mem(B.ADDR_INA219, 5, b'\\x10\\x00')\n"  # calibration 4096: 0.1 mA/bit with 0.1 ohm
        "relay = Pin(B.PIN_LAMP_RELAY, Pin.OUT, value=1)\n"
        "lamp = PWM(Pin(B.PIN_LAMP_PWM), freq=1000, duty_u16={duty})\n"
        "bus = int.from_bytes(i2c.readfrom_mem(B.ADDR_INA219, 2, 2), 'big') >> 3\n"
        "cur = int.from_bytes(i2c.readfrom_mem(B.ADDR_INA219, 4, 2), 'big')\n"
        "print(bus * 0.004, cur * 0.0001)\n"
    )

    def watts(duty: int) -> float:
        volts, amps = map(float, repl.exec(read.format(duty=duty)).split())
        return volts * amps

    full, half, off = watts(65535), watts(32768), watts(0)
    assert 38 < full < 43 and 18 < half < 23 and off < 1.0  # 40 W lamp + 0.6 W driver
    assert sensors.pwm_duty("PIN_LAMP_PWM") == 0.0
    trace = sensors.trace("PIN_LAMP_PWM")
    assert [round(e[1], 2) for e in trace[-3:]] == [1.0, 0.5, 0.0]
    sensors.set("lamp", health="open")
    assert watts(65535) < 0.5
    sensors.set("ina219", stuck=True)  # a frozen meter: the reading no longer follows the lamp
    assert watts(65535) == pytest.approx(watts(0), abs=0.05)
    sensors.set("ina219", stuck=False)
    sensors.set("lamp", health="short")
    assert repl.exec(read.format(duty=65535)).split()[0] != ""
    assert sensors.device("lamp")["current_a"] > 3
    sensors.set("lamp", health="ok")


def test_pir_irq_battery_adc_thermometer(board: Board, sensors: Any, repl: Repl) -> None:
    repl.exec(
        "from machine import Pin, ADC\nimport board as B\nhits = []\n"
        "pir = Pin(B.PIN_PIR, Pin.IN)\npir.irq(lambda p: hits.append(p.value()), Pin.IRQ_RISING)\n"
    )
    sensors.set("pir", value=1)
    sensors.set("pir", value=0)
    sensors.set("pir", value=1)
    assert repl.eval("hits") == [1, 1]
    sensors.set("battery", volts=3.7)
    mv = repl.eval("ADC(Pin(B.PIN_BATTERY_ADC), atten=ADC.ATTN_11DB).read_uv() * B.BATTERY_DIVIDER // 1000")
    assert mv == 3700
    sensors.set("max30205", celsius=38.25)
    raw = repl.eval("int.from_bytes(__import__('machine').I2C(0).readfrom_mem(0x48, 0, 2), 'big')")
    assert raw / 256 == 38.25


def test_board_exceptions_come_back_with_the_board_traceback(repl: Repl) -> None:
    with pytest.raises(BoardExecError, match="ZeroDivisionError"):
        repl.exec("print('before')\n1 / 0")
    with pytest.raises(BoardExecError, match=r"\[Errno 2\] ENOENT"):  # board errno values, not Emscripten's
        repl.exec("open('/no/such/file')")


def test_virtual_time_runs_an_hour_of_asyncio_exactly(board: Board, repl: Repl) -> None:
    repl.exec(
        "import asyncio, time\nticks = [0]\nt0 = time.ticks_ms()\n"
        "async def loop():\n    while True:\n        await asyncio.sleep_ms(100)\n        ticks[0] += 1\n"
        "task = asyncio.create_task(loop())\n"
    )
    started = time.monotonic()
    board.advance(3600)
    elapsed = time.monotonic() - started
    assert repl.eval("ticks[0]") == 36000
    assert repl.eval("time.ticks_diff(time.ticks_ms(), t0)") == 3_600_000
    assert elapsed < 20
    repl.exec("task.cancel()")


def test_timer_and_rtc_on_virtual_time(board: Board, repl: Repl) -> None:
    repl.exec(
        "from machine import Timer, RTC\nfired = []\n"
        "t = Timer(0, mode=Timer.PERIODIC, period=250, callback=lambda t: fired.append(1))\n"
        "RTC().datetime((2030, 1, 2, 2, 3, 4, 5, 0))\n"
    )
    board.advance(1.0)
    assert repl.eval("len(fired)") == 4
    repl.exec("t.deinit()")
    assert repl.eval("__import__('time').localtime()[:6]") == (2030, 1, 2, 3, 4, 6)
    assert repl.eval("__import__('time').time_ns() // 10**9") == repl.eval("__import__('time').time()")


def test_link_uart_stream_both_ways_and_faults(board: Board, repl: Repl, link_faults: Callable[..., Any]) -> None:
    link = serial.Serial(board.link_port, 115200, timeout=2)
    try:
        repl.exec(
            "import asyncio\nfrom machine import UART\nimport board as B\n"
            "u = UART(B.LINK_UART_ID, B.LINK_BAUD)\n"
            "async def echo():\n    r = asyncio.StreamReader(u)\n    w = asyncio.StreamWriter(u, {})\n"
            "    while True:\n        line = await r.readline()\n"
            "        w.write(b'echo ' + line)\n        await w.drain()\n"
            "echo_task = asyncio.create_task(echo())\n"
        )
        link.write(b"hello\n")
        board.advance(0.05)
        deadline = time.monotonic() + 5
        got = b""
        while not got.endswith(b"\n") and time.monotonic() < deadline:
            board.advance(0.01)
            got += link.read(link.in_waiting or 1)
        assert got == b"echo hello\n"
        counters = link_faults(cut=True)
        repl.exec("u.write(b'lost')")
        assert link.read(4) == b""
        counters = link_faults(cut=False, ber=0.5)
        repl.exec("u.write(bytes(200))")
        noisy = link.read(200)
        counters = link_faults(ber=0)
        assert counters["corrupted"] > 0 and any(noisy)
        counters = link_faults(drop=1.0)
        repl.exec("u.write(b'gone')")
        assert link.read(4) == b""
        assert link_faults(drop=0)["dropped"] >= 4
        link_faults(delay_ms=400)
        sent = time.monotonic()
        repl.exec("u.write(b'late')")
        assert link.read(4) == b"late" and time.monotonic() - sent >= 0.35
    finally:
        link.close()


def _fresh(board_factory: Callable[..., EmulatedBoard], **opts: Any) -> tuple[EmulatedBoard, Repl]:
    b = board_factory(**opts)
    return b, Repl(b.repl_port)


def test_power_cut_keeps_closed_files_and_loses_an_open_one(board_factory: Callable[..., EmulatedBoard]) -> None:
    b, r = _fresh(board_factory)
    r.exec(
        "with open('done.txt', 'w') as f:\n    f.write('kept')\n"
        "half = open('half.txt', 'w')\nhalf.write('never closed')\n"
    )
    r.close()
    assert (b.flash_dir / "done.txt").read_text() == "kept"
    b.power_cut()
    b.wait_booted()
    r = Repl(b.repl_port)
    assert r.eval("sorted(n for n in __import__('os').listdir() if n.endswith('.txt'))") == ["done.txt"]
    assert r.eval("__import__('machine').reset_cause()") == 1  # PWRON
    r.close()
    assert "POWERON_RESET" in b.serial_log


def test_a_file_renamed_over_another_is_never_missing_on_the_host(board_factory: Callable[..., EmulatedBoard]) -> None:
    # littlefs replaces a file with a rename in one step: the host copy of the flash must too, or a host
    # reader (a test, the flashing tool's checks) can catch the moment between "remove" and "rename"
    b, r = _fresh(board_factory)
    r.exec("with open('state.json', 'w') as f:\n    f.write('0')\n")
    target = b.flash_dir / "state.json"
    seen: list[str] = []
    done = threading.Event()

    def read_on_the_host() -> None:
        while not done.is_set() and len(seen) < 200_000:
            try:
                seen.append(target.read_text())
            except FileNotFoundError:
                seen.append("missing")

    reader = threading.Thread(target=read_on_the_host)
    reader.start()
    try:
        r.exec(
            "import os\nfor i in range(1, 301):\n"
            "    with open('state.json.tmp', 'w') as f:\n        f.write(str(i))\n"
            "    os.rename('state.json.tmp', 'state.json')\n"
        )
    finally:
        done.set()
        reader.join()
    r.close()
    assert target.read_text() == "300"
    assert "missing" not in seen and "" not in seen, sorted(set(seen))[:5]
    assert len(set(seen)) > 10, f"the reader ran alongside only {len(set(seen))} distinct versions"


def test_watchdog_expiry_resets_with_wdt_cause(board_factory: Callable[..., EmulatedBoard]) -> None:
    b, r = _fresh(board_factory, virtual_time=True)
    r.exec("from machine import WDT\nw = WDT(timeout=2000)\nw.feed()")
    b.advance(1.5)
    assert b.status()["boots"] == 1, (b.status(), b.serial_log[-800:])
    boots = b.status()["boots"]
    b.advance(1.0)
    b.wait_booted(boots=boots + 1)
    r.close()
    r = Repl(b.repl_port)
    assert r.eval("__import__('machine').reset_cause()") == 3  # WDT_RESET
    r.close()
    b.brownout()
    b.wait_booted(boots=boots + 2)
    assert "BROWN_OUT" in b.serial_log


def test_rtc_time_survives_software_and_watchdog_resets_not_a_power_cut(
    board_factory: Callable[..., EmulatedBoard],
) -> None:
    # as the ESP32's RTC domain: it keeps counting through machine.reset() and a watchdog reset (a node that
    # resets at night still knows the time); a power-on starts it from zero
    b, r = _fresh(board_factory, virtual_time=True)
    year = "__import__('time').localtime()[0]"
    r.exec("from machine import RTC\nRTC().datetime((2030, 1, 2, 2, 3, 4, 5, 0))")
    assert r.eval(year) == 2030
    r.close()
    for reset in (b.hard_reset, b.watchdog_expire):
        boots = b.status()["boots"]
        reset()
        b.wait_booted(boots=boots + 1)
        r = Repl(b.repl_port)
        assert r.eval(year) == 2030, reset.__name__
        r.close()
    boots = b.status()["boots"]
    b.power_cut()
    b.wait_booted(boots=boots + 1)
    r = Repl(b.repl_port)
    assert r.eval(year) != 2030
    r.close()


def test_main_runs_at_boot_not_after_raw_repl_soft_reset_and_ctrl_c(
    board_factory: Callable[..., EmulatedBoard],
) -> None:
    b, r = _fresh(board_factory)
    r.exec(
        "with open('main.py', 'w') as f:\n"
        '    f.write(\'import asyncio, time\\nprint("MAIN RAN")\\n'
        "async def app():\\n    while True:\\n        await asyncio.sleep_ms(50)\\n"
        "asyncio.run(app())\\n')"
    )
    r.soft_reset()  # from the raw REPL: main.py must not run
    assert "MAIN RAN" not in b.serial_log
    r.close()
    b.hard_reset()
    b.wait_for_output("MAIN RAN")
    # the app runs forever; Ctrl-C stops it and gives the friendly prompt, as on a board
    with serial.Serial(b.repl_port, 115200, timeout=2) as s:
        s.write(b"\x03")
        assert b">>> " in s.read_until(b">>> ")
        s.write(b"import time\r")
        s.read_until(b">>> ")
        s.write(b"time.sleep(30)\r")
        time.sleep(0.3)
        s.write(b"\x03")  # interrupts a blocking sleep without burning CPU
        assert b"KeyboardInterrupt" in s.read_until(b">>> ")
        s.write(b"n = [0]\r")
        s.read_until(b">>> ")
        s.write(b"while True: n[0] += abs(-1)\r\r")  # busy, but calling functions: Ctrl-C raises in it
        time.sleep(0.3)
        s.write(b"\x03")
        assert b"KeyboardInterrupt" in s.read_until(b">>> ")
        s.write(b"print(n[0] > 100)\r")
        assert b"True" in s.read_until(b">>> ")  # interrupted, not reset: RAM kept
        boots = b.status()["boots"]
        s.write(b"while True: pass\r\r")
        time.sleep(0.3)
        s.write(b"\x03")  # a loop that never sleeps: the host respawns the board
    b.wait_booted(boots=boots + 1, timeout=10)
    assert b.status()["reset_reason"] == "hung"
