"""Serial ports: what is plugged in, and opening one with errors a technician understands.

Boards are recognised by the USB VID/PID of their USB-serial bridge (or of the chip's native USB). A port
held by another program is refused by pyserial's exclusive lock (mpremote takes the same lock); the error
then names the processes that have the port open, found through ``/proc/*/fd``.
"""

from __future__ import annotations

import errno
import grp
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import serial
from serial.tools import list_ports

from tools.flash.errors import EXIT_NO_BOARD, EXIT_PERMISSION, EXIT_PORT_BUSY, EXIT_PORT_GONE, FlashError

# (VID, PID) -> what sits behind the port; "family" says which firmware path applies
KNOWN_USB: dict[tuple[int, int], tuple[str, str]] = {
    (0x10C4, 0xEA60): ("Silicon Labs CP210x USB-UART", "esp32"),
    (0x1A86, 0x7523): ("WCH CH340 USB-UART", "esp32"),
    (0x1A86, 0x55D4): ("WCH CH9102 USB-UART", "esp32"),
    (0x0403, 0x6001): ("FTDI FT232R USB-UART", "esp32"),
    (0x0403, 0x6010): ("FTDI FT2232 USB-UART", "esp32"),
    (0x0403, 0x6014): ("FTDI FT232H USB-UART", "esp32"),
    (0x0403, 0x6015): ("FTDI FT231X USB-UART", "esp32"),
    (0x303A, 0x1001): ("Espressif native USB (serial/JTAG)", "esp32"),
    (0x303A, 0x4001): ("Espressif native USB (TinyUSB CDC)", "esp32"),
    (0x2E8A, 0x0005): ("Raspberry Pi RP2040 (MicroPython)", "rp2"),
    (0x2E8A, 0x000A): ("Raspberry Pi RP2040 (USB CDC)", "rp2"),
}


@dataclass(frozen=True)
class PortInfo:
    """One serial port and what the USB descriptors say about it."""

    device: str
    vid: int | None = None
    pid: int | None = None
    serial_number: str | None = None
    description: str = ""
    bridge: str | None = None  # a known bridge/chip name, None when unknown
    family: str | None = None  # "esp32" / "rp2" when the VID/PID tells

    @property
    def usb_id(self) -> str | None:
        return f"{self.vid:04x}:{self.pid:04x}" if self.vid is not None and self.pid is not None else None

    def as_dict(self) -> dict:
        return {**asdict(self), "usb_id": self.usb_id}


def describe(device: str, vid: int | None, pid: int | None, serial_number: str | None, description: str) -> PortInfo:
    bridge, family = KNOWN_USB.get((vid, pid), (None, None)) if vid is not None and pid is not None else (None, None)
    return PortInfo(device, vid, pid, serial_number, description or "", bridge, family)


def list_serial_ports(*, all_ports: bool = False) -> list[PortInfo]:
    """USB serial ports (all ports with ``all_ports``), known bridges first."""
    found = []
    for p in list_ports.comports():
        if p.vid is None and not all_ports:
            continue  # built-in UARTs (/dev/ttyS*) are not boards
        found.append(describe(p.device, p.vid, p.pid, p.serial_number, p.description))
    return sorted(found, key=lambda i: (i.bridge is None, i.device))


def port_by_usb_serial(serial_number: str) -> str:
    """The device whose USB serial number is ``serial_number`` (the name a port gets can change on reset)."""
    for p in list_serial_ports():
        if p.serial_number == serial_number:
            return p.device
    raise FlashError(f"no board with USB serial number {serial_number!r} is plugged in",
                     hint="check the cable; `cityedge flash list` shows what is connected", exit_code=EXIT_NO_BOARD)


def port_holders(device: str) -> list[tuple[int, str]]:
    """Processes (pid, command name) that have ``device`` open, from ``/proc/*/fd``; ours excluded."""
    try:
        target = os.path.realpath(device)
    except OSError:
        return []
    holders = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:
            continue  # gone, or not ours to look at
        for fd in fds:
            try:
                if os.readlink(fd) == target:
                    comm = (proc / "comm").read_text().strip()
                    holders.append((int(proc.name), comm))
                    break
            except OSError:
                continue
    return sorted(holders)


def _device_group(device: str) -> str:
    try:
        return grp.getgrgid(os.stat(device).st_gid).gr_name
    except (OSError, KeyError):
        return "dialout"


def open_port(device: str, baudrate: int = 115200) -> serial.Serial:
    """Open ``device`` exclusively without resetting an ESP32 (DTR/RTS low); map failures to FlashError."""
    ser = serial.Serial(baudrate=baudrate, timeout=0.05, write_timeout=10, exclusive=True)
    ser.port = device
    try:
        ser.dtr = False  # an ESP32 auto-reset circuit must see neither EN nor IO0 pulled low
        ser.rts = False
    except (OSError, serial.SerialException):
        pass
    try:
        ser.open()
    except serial.SerialException as exc:
        raise port_error(device, exc) from None
    except OSError as exc:
        raise port_error(device, exc) from None
    return ser


def port_error(device: str, exc: BaseException) -> FlashError:
    """Turn what pyserial/the OS said about opening ``device`` into a sentence and a hint."""
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO) or "No such file" in text or not os.path.exists(device):
        return FlashError(
            "no such serial port", port=device, exit_code=EXIT_PORT_GONE,
            hint="check the USB cable (a charge-only cable shows no port); `cityedge flash list` shows the ports. "
            "A board that was reset may come back under another name: choose it with --usb-serial instead",
        )
    if code in (errno.EACCES, errno.EPERM) or "Permission denied" in text:
        group = _device_group(device)
        user = os.environ.get("USER") or "$USER"
        return FlashError(
            "permission denied opening the serial port", port=device, exit_code=EXIT_PERMISSION,
            hint=f"add yourself to the '{group}' group: sudo usermod -aG {group} {user}; then log out and back in",
        )
    if code in (errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK) or "exclusively lock" in text or "busy" in text:
        holders = port_holders(device)
        who = ", ".join(f"{name} (pid {pid})" for pid, name in holders) or "another program"
        return FlashError(
            f"the serial port is busy: held by {who}", port=device, exit_code=EXIT_PORT_BUSY,
            hint="close the other program (mpremote, screen, minicom, Thonny, an IDE's serial monitor)"
            + (f" or stop it: kill {holders[0][0]}" if holders else ""),
        )
    return FlashError(f"cannot open the serial port: {text}", port=device, exit_code=EXIT_PORT_GONE,
                      hint="unplug and replug the board, then run again")
