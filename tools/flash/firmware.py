"""Flashing a MicroPython image: esptool for ESP32 boards, a UF2 copy for RP2040 boards.

Only when asked (``--firmware IMAGE``). esptool runs as a subprocess (``python -m esptool``) so that its
own output and exit status are what we judge; its known failures become sentences: a board not in download
mode says which buttons to press. The UF2 path copies the image onto the RP2040's BOOTSEL drive (found by
its ``INFO_UF2.TXT``), after asking a running MicroPython to enter the bootloader.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tools.flash.errors import EXIT_FIRMWARE, EXIT_NO_BOARD, FlashError

DOWNLOAD_MODE_HINT = (
    "put the ESP32 in download mode: hold BOOT (IO0), press and release EN/RESET, release BOOT, then run again "
    "(boards with a CH340/CP210x auto-reset circuit do this by themselves; a missing capacitor or a long cable "
    "can defeat it)"
)
# ESP32 flash offset of a MicroPython image, by chip (esptool's chip names)
APP_OFFSET = {"esp32": "0x1000", "esp32s2": "0x1000", "esp32s3": "0x0", "esp32c3": "0x0", "esp32c6": "0x0"}


@dataclass(frozen=True)
class FirmwareResult:
    image: str
    sha256: str
    method: str
    chip: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"image": self.image, "sha256": self.sha256, "method": self.method, "chip": self.chip}


def image_sha256(image: Path) -> str:
    return hashlib.sha256(image.read_bytes()).hexdigest()


def esptool_base(port: str, *, chip: str = "auto", baud: int = 460800, connect_attempts: int = 7) -> list[str]:
    return [sys.executable, "-m", "esptool", "--chip", chip, "--port", port, "--baud", str(baud),
            "--connect-attempts", str(connect_attempts)]


def esptool_commands(port: str, image: Path, chip: str, *, erase: bool, baud: int = 460800) -> list[list[str]]:
    """The esptool invocations for ``image`` on a detected ``chip``: erase (optional), then write + verify."""
    offset = APP_OFFSET.get(chip.replace("-", "").lower())
    if offset is None:
        raise FlashError(f"no MicroPython image offset known for chip {chip!r}", port=port, exit_code=EXIT_FIRMWARE,
                         hint=f"supported chips: {', '.join(APP_OFFSET)}")
    base = esptool_base(port, chip=chip, baud=baud)
    cmds = []
    if erase:
        cmds.append([*base, "erase-flash"])
    # esptool 5 checks every written region by its MD5 after writing (no separate --verify needed)
    cmds.append([*base, "write-flash", "--flash-size", "detect", offset, str(image)])
    return cmds


def esptool_error(port: str, output: str) -> FlashError:
    """Map esptool's failure output to a sentence and what to do."""
    low = output.lower()
    if "wrong boot mode" in low or "download mode" in low or "no serial data received" in low \
            or "failed to connect" in low or "invalid head of packet" in low:
        return FlashError("the ESP32 is not in download mode (esptool could not connect)", port=port,
                          exit_code=EXIT_FIRMWARE, hint=DOWNLOAD_MODE_HINT)
    if "md5 of file does not match" in low or "verify failed" in low:
        return FlashError("the image written does not match the file (flash verify failed)", port=port,
                          exit_code=EXIT_FIRMWARE, hint="use a shorter/better USB cable or a lower --baud, then retry")
    if "permission denied" in low:
        return FlashError("permission denied opening the serial port", port=port, exit_code=EXIT_FIRMWARE,
                          hint="sudo usermod -aG dialout $USER; then log out and back in")
    last = [line for line in output.strip().splitlines() if line.strip()][-1:] or ["no output"]
    return FlashError(f"esptool failed: {last[0]}", port=port, exit_code=EXIT_FIRMWARE,
                      hint="run again; if it repeats, erase the flash with --erase")


def _run(cmd: list[str], port: str, timeout: float) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise FlashError("esptool did not finish in time", port=port, exit_code=EXIT_FIRMWARE,
                         hint=DOWNLOAD_MODE_HINT) from None
    out = res.stdout + res.stderr
    if res.returncode != 0:
        raise esptool_error(port, out)
    return out


def detect_chip(port: str, *, connect_attempts: int = 7, timeout: float = 60) -> str:
    """Ask the ESP32 ROM bootloader which chip it is (``esptool chip-id``)."""
    out = _run([*esptool_base(port, connect_attempts=connect_attempts), "chip-id"], port, timeout)
    for line in out.splitlines():
        # esptool prints e.g. "Detecting chip type... ESP32" / "Chip type: ESP32-D0WD-V3"
        if "detecting chip type" in line.lower():
            return line.rsplit("...", 1)[-1].strip().lower().replace("-", "")
    raise FlashError("esptool did not say which chip this is", port=port, exit_code=EXIT_FIRMWARE,
                     hint="name it with --chip (esp32, esp32s3, esp32c3)")


def flash_esp32(port: str, image: Path, *, erase: bool, chip: str | None = None, baud: int = 460800,
                connect_attempts: int = 7) -> FirmwareResult:
    """Write a MicroPython image with esptool (detect chip, optional erase, write and MD5 verify)."""
    if not image.is_file():
        raise FlashError(f"no firmware image at {image}", port=port, exit_code=EXIT_FIRMWARE,
                         hint="download the board's MicroPython .bin from micropython.org/download")
    chip = chip or detect_chip(port, connect_attempts=connect_attempts)
    for cmd in esptool_commands(port, image, chip, erase=erase, baud=baud):
        _run(cmd, port, timeout=300)
    return FirmwareResult(str(image), image_sha256(image), "esptool", chip)


def find_uf2_drive(roots: list[Path] | None = None) -> Path | None:
    """The mounted RP2040 BOOTSEL drive (it holds ``INFO_UF2.TXT``), searched under the usual mount roots."""
    user = os.environ.get("USER", "")
    roots = roots or [Path("/media") / user, Path("/run/media") / user, Path("/media"), Path("/mnt")]
    for root in roots:
        if not root.is_dir():
            continue
        for cand in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
            try:
                if (cand / "INFO_UF2.TXT").is_file():
                    return cand
            except OSError:
                continue
    return None


def flash_uf2(image: Path, *, drive: Path | None = None, wait: float = 15.0,
              roots: list[Path] | None = None) -> FirmwareResult:
    """Copy a UF2 image onto the RP2040's BOOTSEL drive (waiting up to ``wait`` s for it to appear)."""
    if image.suffix.lower() != ".uf2":
        raise FlashError(f"{image} is not a .uf2 image", exit_code=EXIT_FIRMWARE,
                         hint="RP2040 boards take the .uf2 file from micropython.org/download")
    deadline = time.monotonic() + wait
    while drive is None:
        drive = find_uf2_drive(roots)
        if drive is None:
            if time.monotonic() > deadline:
                raise FlashError("no RP2040 BOOTSEL drive (RPI-RP2) is mounted", exit_code=EXIT_NO_BOARD,
                                 hint="hold BOOTSEL while plugging in the board, and let the desktop mount it")
            time.sleep(0.2)
    info = (drive / "INFO_UF2.TXT").read_text(errors="replace")
    shutil.copyfile(image, drive / image.name)  # the bootloader flashes and reboots when the copy ends
    board = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("Board-ID")), None)
    return FirmwareResult(str(image), image_sha256(image), "uf2", board)
