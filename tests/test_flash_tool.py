"""Parts of the flashing tool that need no board: .mpy versions, port discovery, esptool/UF2 paths, ledger,
the CLI's output, and that every exit code is documented."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from cityedge.paths import FIRMWARE, ROOT
from tools.flash import compile as mpy
from tools.flash import firmware as fw
from tools.flash import ledger
from tools.flash.cli import ProgressBoard, summary_table
from tools.flash.errors import EXIT_CODES, EXIT_FIRMWARE, EXIT_MPY_VERSION, FlashError
from tools.flash.ports import describe, port_holders

# --- .mpy versions -----------------------------------------------------------------------------------------

def test_compiles_for_the_boards_mpy_version(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("def f(x):\n    return x + 1\n")
    v6 = mpy.build({"/lib/m.py": src}, 6 | 3 << 8 | 10 << 10)["/lib/m.mpy"]  # an ESP32 (xtensawin) 1.27 board
    v5 = mpy.build({"/lib/m.py": src}, 5)["/lib/m.mpy"]  # a MicroPython 1.12-1.18 board
    assert v6[:2] == b"M\x06" and v5[:2] == b"M\x05"
    # boot.py and main.py stay source: MicroPython runs only those two as .py
    out = mpy.build({"/main.py": FIRMWARE / "main.py", "/lib/m.py": src}, 774)
    assert set(out) == {"/main.py", "/lib/m.mpy"}


def test_refuses_an_mpy_version_it_cannot_emit() -> None:
    with pytest.raises(FlashError) as info:
        mpy.compiler_for(7, port="/dev/ttyUSB0", micropython="2.0.0")
    assert info.value.exit_code == EXIT_MPY_VERSION
    assert ".mpy v7.0" in info.value.message and "--source" in (info.value.hint or "")
    with pytest.raises(FlashError, match=r"no \.mpy support"):
        mpy.compiler_for(None)


def test_old_board_gets_a_sentence_when_the_app_needs_a_newer_micropython(tmp_path: Path) -> None:
    # the real mpy-cross for .mpy v5 (MicroPython 1.12) has no f-strings: the app needs a newer MicroPython
    src = tmp_path / "new.py"
    src.write_text("x = 1\ny = f'{x}'\n")
    with pytest.raises(FlashError) as info:
        mpy.build({"/lib/new.py": src}, 5, port="/dev/ttyUSB0", micropython="1.12.0")
    assert info.value.exit_code == EXIT_MPY_VERSION and "1.12.0" in info.value.message
    assert "--firmware" in (info.value.hint or "")
    # while today's firmware compiles for such a board
    files = {f"/lib/cewire/{p.name}": p for p in (FIRMWARE / "lib" / "cewire").glob("*.py")}
    assert all(data[:2] == b"M\x05" for data in mpy.build(files, 5).values())


# --- ports ---------------------------------------------------------------------------------------------------

def test_known_usb_bridges_are_named() -> None:
    assert describe("/dev/ttyUSB0", 0x10C4, 0xEA60, "0001", "CP2102").bridge == "Silicon Labs CP210x USB-UART"
    assert describe("/dev/ttyUSB1", 0x1A86, 0x7523, None, "").family == "esp32"
    assert describe("/dev/ttyACM0", 0x2E8A, 0x0005, "E66", "Board in FS mode").family == "rp2"
    assert describe("/dev/ttyACM1", 0x303A, 0x1001, None, "").usb_id == "303a:1001"
    assert describe("/dev/ttyS0", None, None, None, "").bridge is None


def test_port_holders_found_through_proc() -> None:
    master, slave = pty.openpty()
    path = os.ttyname(slave)
    holder = subprocess.Popen([sys.executable, "-c", "import sys,time; f=open(sys.argv[1]); print(1, flush=True); "
                               "time.sleep(30)", path], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline()
        pids = [pid for pid, _ in port_holders(path)]
        assert holder.pid in pids and os.getpid() not in pids
    finally:
        holder.kill()
        holder.wait()
        os.close(master)
        os.close(slave)


# --- firmware images (no ESP32 ROM bootloader and no RP2040 are attached: command construction, output
#     mapping and the UF2 copy onto a folder standing in for the BOOTSEL drive) -------------------------------

def test_esptool_commands_per_chip(tmp_path: Path) -> None:
    image = tmp_path / "ESP32_GENERIC-v1.27.0.bin"
    cmds = fw.esptool_commands("/dev/ttyUSB0", image, "esp32", erase=True)
    assert [c[c.index("--connect-attempts") + 2] for c in cmds] == ["erase-flash", "write-flash"]
    assert cmds[1][-2:] == ["0x1000", str(image)] and cmds[1][:3] == [sys.executable, "-m", "esptool"]
    assert fw.esptool_commands("/dev/ttyACM0", image, "esp32s3", erase=False)[0][-2] == "0x0"
    with pytest.raises(FlashError, match="no MicroPython image offset"):
        fw.esptool_commands("/dev/ttyUSB0", image, "esp8266", erase=False)


@pytest.mark.parametrize(
    ("output", "phrase"),
    [
        ("A fatal error occurred: Failed to connect to ESP32: Wrong boot mode detected (0x13)! "
         "The chip needs to be in download mode.", "download mode"),
        ("A fatal error occurred: Failed to connect to Espressif device: No serial data received.", "download mode"),
        ("A fatal error occurred: MD5 of file does not match data in flash!", "does not match"),
        ("A fatal error occurred: Something new", "esptool failed: A fatal error occurred: Something new"),
    ],
)
def test_esptool_failures_become_sentences(output: str, phrase: str) -> None:
    err = fw.esptool_error("/dev/ttyUSB0", output)
    assert err.exit_code == EXIT_FIRMWARE and phrase in err.message and err.hint


def test_uf2_copy_onto_bootsel_drive(tmp_path: Path) -> None:
    drive = tmp_path / "media" / "RPI-RP2"
    drive.mkdir(parents=True)
    (drive / "INFO_UF2.TXT").write_text("UF2 Bootloader v3.0\nModel: Raspberry Pi RP2\nBoard-ID: RPI-RP2\n")
    image = tmp_path / "RPI_PICO-v1.27.0.uf2"
    image.write_bytes(b"UF2\n" * 128)
    res = fw.flash_uf2(image, roots=[tmp_path / "media"], wait=1)
    assert (drive / image.name).read_bytes() == image.read_bytes()
    assert res.method == "uf2" and res.chip == "RPI-RP2" and len(res.sha256) == 64
    with pytest.raises(FlashError, match="BOOTSEL"):
        fw.flash_uf2(image, roots=[tmp_path / "empty"], wait=0.1)
    with pytest.raises(FlashError, match=r"not a \.uf2"):
        fw.flash_uf2(tmp_path / "x.bin", roots=[tmp_path / "media"], wait=0.1)


# --- ledger, output ----------------------------------------------------------------------------------------

def test_ledger_appends_and_refuses_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYEDGE_TECHNICIAN", "ana@depot")
    path = tmp_path / "l.jsonl"
    ledger.append(path, {"port": "/dev/ttyUSB0", "result": "ok"})
    ledger.append(path, {"port": "/dev/ttyUSB1", "result": "failed", "exit_code": 7})
    with path.open("a") as fh:
        fh.write('{"torn": ')  # a crash mid-line loses only that line
    got = ledger.read(path)
    assert [r["port"] for r in got] == ["/dev/ttyUSB0", "/dev/ttyUSB1"] and got[0]["who"] == "ana@depot"
    with pytest.raises(ValueError):
        ledger.append(path, {"key": "00" * 32})


def test_summary_table_and_progress_lines() -> None:
    rows = [{"port": "/dev/ttyUSB0", "node_id": 1, "role": "streetlight", "result": "ok", "seconds": 3.2,
             "app": {"slot": "b", "sent": 3, "kept": 20, "copied": 1}, "verify": {"how": "hello on link"}},
            {"port": "/dev/ttyUSB1", "node_id": 2, "role": "streetlight", "result": "failed", "seconds": 1.0,
             "error": "/dev/ttyUSB1: the serial port is busy"}]
    table = summary_table(rows).splitlines()
    assert table[0].split()[:4] == ["PORT", "NODE", "ROLE", "RESULT"]
    assert "3/21" in table[1] and "hello on link" in table[1] and "busy" in table[2]
    out = io.StringIO()
    bars = ProgressBoard(["/dev/ttyUSB0", "/dev/ttyUSB1"], out, enabled=True)  # not a terminal: one line a step
    bars.update("/dev/ttyUSB0", "write", 0.5)
    bars.update("/dev/ttyUSB0", "write", 0.6)
    bars.update("/dev/ttyUSB1", "verify", 0.9)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "50% write" in lines[0] and "90% verify" in lines[1]


def test_every_exit_code_is_documented() -> None:
    doc = (ROOT / "docs" / "flashing.md").read_text()
    for code in EXIT_CODES:
        assert f"| {code} |" in doc, f"exit code {code} missing from docs/flashing.md"


def test_cli_lists_exit_codes_and_ports(capsys: pytest.CaptureFixture[str]) -> None:
    from cityedge.cli import main

    assert main(["flash", "exit-codes"]) == 0
    assert "the serial port is held by another process" in capsys.readouterr().out
    assert main(["flash", "list", "--json"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out), list)
