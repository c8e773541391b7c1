"""The bench plugin and `cityedge board start`, exercised the way testers and technicians use them."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from hil_tests.emulator.board import EmulatedBoard

pytestmark = pytest.mark.emulator_only  # these tests start their own emulated boards

INNER = """
import pytest

def test_repl_answers(repl):
    assert repl.eval("6 * 7") == 42

def test_needs_sensors(sensors):
    sensors.set("bh1750", lux=1.0)

@pytest.mark.emulator_only
def test_needs_fault_injection(power):
    power.power_cut()
"""

FAILING = """
def test_deliberate_failure(board, sensors, repl):
    sensors.set("bh1750", lux=123.5)
    repl.exec("print('MARKER-FROM-BOARD')")
    assert False, "deliberate"
"""


def _inner_pytest(tmp_path: Path, source: str, *args: str) -> subprocess.CompletedProcess[str]:
    test = tmp_path / "test_inner.py"
    test.write_text(source)
    cmd = [sys.executable, "-m", "pytest", "-p", "hil_tests.plugin", "-p", "no:cacheprovider", "-c", "/dev/null"]
    cmd += ["--rootdir", str(tmp_path), "-rs", "-q", str(test), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)


def test_same_tests_run_against_a_real_board_port(board_factory: Callable[..., EmulatedBoard], tmp_path: Path) -> None:
    bench = board_factory()  # stands in for a USB-serial board: the plugin sees only its port
    r = _inner_pytest(tmp_path, INNER, "--board-port", bench.repl_port, "--board-role", "bare")
    assert "1 passed, 2 skipped" in r.stdout, r.stdout + r.stderr
    assert "needs controllable sensor models: not available on a real bench board" in r.stdout
    assert "needs emulator-only fault injection" in r.stdout


def test_failure_report_carries_serial_log_and_peripheral_state(tmp_path: Path) -> None:
    r = _inner_pytest(tmp_path, FAILING, "--junitxml", str(tmp_path / "junit.xml"))
    assert "1 failed" in r.stdout, r.stdout + r.stderr
    failure = ET.parse(tmp_path / "junit.xml").find(".//failure")
    assert failure is not None
    text = failure.text or ""
    assert "board board0 serial log" in text and "MARKER-FROM-BOARD" in text
    assert "board board0 peripheral state" in text and '"lux": 123.5' in text


def test_cli_board_start_prints_ports_and_stops_on_sigterm(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "cityedge", "board", "start", "--role", "bare", "--virtual-time"]
    proc = subprocess.Popen(
        [*cmd, "--flash", str(tmp_path / "flash")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["repl"].startswith("/dev/pts/") and info["link"].startswith("/dev/pts/")
        r = subprocess.run(
            [sys.executable, "-m", "mpremote", "connect", info["repl"], "eval", "2 ** 10"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.stdout.strip() == "1024", r.stderr
        assert (tmp_path / "flash" / "boot.py").exists()  # the role's image was installed
        assert proc.stdin is not None
        proc.stdin.write("set bh1750 lux=42.5\nadvance 60\nfly away\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline())["ok"]["lux"] == 42.5
        assert json.loads(proc.stdout.readline())["ok"]["now_ms"] > 0
        assert "unknown command" in json.loads(proc.stdout.readline())["error"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_reports_a_bad_role_as_a_sentence(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "cityedge", "board", "start", "--role", "toaster", "--flash", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "invalid choice" in r.stderr and "Traceback" not in r.stderr
