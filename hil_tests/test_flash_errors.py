"""Every technician-facing error an emulated board can produce, through the real CLI: a sentence, a hint and
the documented exit code, never a traceback.

Not producible here, and proven by unit tests instead (tests/test_flash_tool.py): a board with an older
MicroPython (.mpy v5) — the WebAssembly VM is MicroPython 1.29 (.mpy v6.3); a real ESP32 ROM bootloader
in download mode, and a real RP2040 BOOTSEL drive — no such hardware is attached.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cityedge.cli import main
from hil_tests.emulator.board import EmulatedBoard
from tools.flash import errors as ex
from tools.flash.transport import RawRepl

Cli = Callable[..., tuple[int, str]]
pytestmark = [pytest.mark.emulator_only, pytest.mark.board(role="bare")]


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Cli]:
    def run(*args: str) -> tuple[int, str]:
        code = main(["flash", *args, "--manifest", str(tmp_path / "m.json"), "--ledger", str(tmp_path / "l.jsonl")]
                    if args[0] == "deploy" else ["flash", *args])
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err
        return code, captured.err

    yield run


def deploy_args(port: str, *extra: str) -> list[str]:
    return ["deploy", port, "--role", "bare", "--node-id", "77", "--lat", "1", "--lon", "2", *extra]


def test_port_busy_names_the_process(board: EmulatedBoard, cli: Cli) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import serial,sys,time; s=serial.Serial(sys.argv[1], exclusive=True); "
         "print('held', flush=True); time.sleep(30)", board.repl_port],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        code, err = cli(*deploy_args(board.repl_port))
    finally:
        holder.kill()
        holder.wait()
    assert code == ex.EXIT_PORT_BUSY
    assert "busy" in err and f"pid {holder.pid}" in err and f"kill {holder.pid}" in err


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux setpriv to drop privileges")
def test_permission_denied_says_dialout(board: EmulatedBoard, tmp_path: Path) -> None:
    # the port's mode lets nobody in, and the tool runs without the capabilities that let root ignore file
    # modes: the kernel refuses the open with EACCES, as it does for a user outside the dialout group
    mode = os.stat(board.repl_port).st_mode
    os.chmod(board.repl_port, 0)
    try:
        res = subprocess.run(
            ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", sys.executable, "-m", "cityedge",
             "flash", *deploy_args(board.repl_port), "--manifest", str(tmp_path / "m.json"),
             "--ledger", str(tmp_path / "l.jsonl")],
            capture_output=True, text=True, timeout=60,
        )
    finally:
        os.chmod(board.repl_port, mode)
    assert res.returncode == ex.EXIT_PERMISSION, res.stderr
    assert "permission denied" in res.stderr and "usermod -aG" in res.stderr and "Traceback" not in res.stderr


def test_no_such_port(cli: Cli) -> None:
    code, err = cli(*deploy_args("/dev/ttyUSB-nothing-here"))
    assert code == ex.EXIT_PORT_GONE and "no such serial port" in err and "--usb-serial" in err


def test_esp32_not_in_download_mode(board: EmulatedBoard, tmp_path: Path) -> None:
    """Real esptool against a board that runs MicroPython (its ROM bootloader is not listening)."""
    from tools.flash.errors import FlashError
    from tools.flash.firmware import detect_chip

    with pytest.raises(FlashError) as info:
        detect_chip(board.repl_port, connect_attempts=1, timeout=60)
    assert info.value.exit_code == ex.EXIT_FIRMWARE
    assert "download mode" in info.value.message and "hold BOOT" in (info.value.hint or "")


def test_no_hello_on_link(board: EmulatedBoard, cli: Cli) -> None:
    # the bare role runs no app, so nothing arrives on the link
    code, err = cli(*deploy_args(board.repl_port, "--link", board.link_port, "--boot-timeout", "2"))
    assert code == ex.EXIT_BOOT and "no HELLO" in err and "nothing arrived on the link" in err


def test_unprovisioned_node_needs_an_identity(board: EmulatedBoard, cli: Cli) -> None:
    with RawRepl(board.repl_port) as repl:
        from tools.flash.board import Board

        Board(repl).run("_R('/node.json')", what="forgetting the provisioning")
    code, err = cli("deploy", board.repl_port, "--role", "streetlight")
    assert code == ex.EXIT_USAGE and "not provisioned" in err and "--node-id" in err


def test_unknown_role(cli: Cli) -> None:
    code, err = cli("deploy", "/dev/null", "--role", "toaster")
    assert code == ex.EXIT_USAGE and "unknown role 'toaster'" in err and "streetlight" in err


def test_safe_mode_on_a_first_deploy_that_never_boots(board: EmulatedBoard, tmp_path: Path, cli: Cli) -> None:
    """No previous app to go back to: the node ends in safe mode and the tool says so."""
    from hil_tests.test_flash import make_firmware

    tree = make_firmware(tmp_path / "crash", "raise RuntimeError('no')\n")
    # a fresh board: wipe the slots first (this module's board already runs the bare app)
    with RawRepl(board.repl_port) as repl:
        from tools.flash.board import Board

        Board(repl).run("_R('/app_a')\n_R('/app_b')\n_R('/boot.json')", what="wiping")
    code, err = cli("deploy", board.repl_port, "--role", "medical", "--tree", str(tree), "--boot-timeout", "20",
                    "--node-id", "78", "--lat", "1", "--lon", "2")
    assert code == ex.EXIT_BOOT and "safe mode" in err


def test_no_repl_answer(board: EmulatedBoard, cli: Cli) -> None:
    board.power_off()  # the port is there, nothing answers (a board stuck, or not running MicroPython)
    try:
        t0 = time.monotonic()
        code, err = cli("status", board.repl_port)
        assert code == ex.EXIT_NO_REPL and "does not answer" in err and "RESET" in err
        assert time.monotonic() - t0 < 15
    finally:
        board.power_on()


def test_firmware_if_needed_flashes_a_board_without_micropython(board: EmulatedBoard, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A board whose MicroPython does not answer gets the image, then the deploy goes on. No RP2040 is
    attached: a folder with INFO_UF2.TXT stands in for its BOOTSEL drive, and the emulated board is powered
    on when the image lands there (as the RP2040 reboots into the new firmware)."""
    import threading

    from tools.flash import firmware as fw
    from tools.flash.flow import Job, run_job

    drive = tmp_path / "RPI-RP2"
    drive.mkdir()
    (drive / "INFO_UF2.TXT").write_text("UF2 Bootloader v3.0\nBoard-ID: RPI-RP2\n")
    monkeypatch.setattr(fw, "find_uf2_drive", lambda roots=None: drive)
    image = tmp_path / "RPI_PICO-v1.27.0.uf2"
    image.write_bytes(b"UF2\n" * 64)

    def reboot_when_copied() -> None:
        deadline = time.monotonic() + 30
        while not (drive / image.name).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        board.power_on()

    board.power_off()
    t = threading.Thread(target=reboot_when_copied)
    t.start()
    try:
        r = run_job(Job(port=board.repl_port, role="bare", manifest=tmp_path / "m.json", ledger=None,
                        firmware=image, firmware_if_needed=True, verify=False))
    finally:
        t.join()
        board.power_on()
    assert r["result"] == "ok", r
    assert r["firmware_image"]["method"] == "uf2" and (drive / image.name).read_bytes() == image.read_bytes()
