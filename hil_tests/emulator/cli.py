"""``cityedge board``: start emulated boards for manual use (mpremote, the flashing tool, the gateway)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cityedge.errors import CityedgeError
from cityedge.firmware_files import LAYOUTS, ROLES
from hil_tests.emulator.board import DEFAULT_ROM_KB, BoardError, EmulatedBoard


def register(subparsers: Any) -> None:
    """Add ``board`` with its ``start`` subcommand to the ``cityedge`` command."""
    parser = subparsers.add_parser("board", help="emulated MicroPython boards (REPL and link UART on ptys)")
    sub = parser.add_subparsers(dest="board_command", metavar="ACTION")
    start = sub.add_parser("start", help="start one emulated board and print its ports as one JSON line")
    start.add_argument("--role", choices=ROLES, default="bare", help="app image to install (bare: MicroPython only)")
    start.add_argument("--flash", type=Path, required=True, help="host folder that backs the board's flash")
    start.add_argument("--keep-flash", action="store_true", help="boot the flash folder as it is (no install)")
    start.add_argument("--virtual-time", action="store_true", help="run on a host-advanced clock")
    start.add_argument("--layout", choices=LAYOUTS, default="files",
                       help="where the app goes: files (slot a on the flash) or romfs (the ROM partition)")
    start.add_argument("--name", default="board0", help="board name (also seeds its unique_id)")
    start.add_argument("--rom-kb", type=int, default=DEFAULT_ROM_KB, metavar="N",
                       help=f"ROMFS partition size in KiB (default {DEFAULT_ROM_KB}; 0: firmware without ROMFS)")
    start.set_defaults(func=_start)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _command(board: EmulatedBoard, line: str) -> Any:
    """One control line from stdin: ``advance S``, ``set DEVICE key=value...``, ``state``, ``status``,
    ``link key=value...``, ``power_cut``, ``reset``, ``brownout``, ``wdt``."""
    word, *rest = line.split()
    kv = {k: _value(v) for k, _, v in (r.partition("=") for r in rest[1:] if "=" in r)}
    if word == "advance" and rest:
        return {"now_ms": board.advance(float(rest[0])) * 1000}
    if word == "set" and rest:
        return board.hw.set(rest[0], **kv)
    if word == "link":
        return board.link_faults(**{k: _value(v) for k, _, v in (r.partition("=") for r in rest)})
    actions: dict[str, Callable[[], Any]] = {
        "state": board.hw.state,
        "status": board.status,
        "power_cut": board.power_cut,
        "reset": board.hard_reset,
        "brownout": board.brownout,
        "wdt": board.watchdog_expire,
    }
    if word in actions:
        return actions[word]()
    raise BoardError(f"unknown command {line!r}", hint=_command.__doc__)


def _commands(board: EmulatedBoard, stop: threading.Event) -> None:
    """Answer control lines from stdin with one JSON line each (errors as {"error": ...}); EOF is ignored."""
    for line in sys.stdin:
        if stop.is_set():
            return
        if not line.strip():
            continue
        try:
            print(json.dumps({"ok": _command(board, line.strip())}), flush=True)
        except (BoardError, ValueError, TypeError) as exc:
            print(json.dumps({"error": str(exc)}), flush=True)


def _start(args: argparse.Namespace) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    role = None if args.keep_flash else args.role
    try:
        if args.rom_kb < 0:
            raise CityedgeError("--rom-kb must be 0 or more", exit_code=2)
        board = EmulatedBoard(args.flash, role=role, virtual_time=args.virtual_time, name=args.name,
                              rom_kb=args.rom_kb, layout=args.layout)
        with board:
            mode = board.wait_booted(timeout=30)
            info = {
                "repl": board.repl_port,
                "link": board.link_port,
                "name": board.name,
                "role": args.role if role else None,
                "flash": str(Path(args.flash).resolve()),
                "virtual_time": args.virtual_time,
                "rom_kb": args.rom_kb,
                "layout": args.layout if role else None,
                "rom_image": str(board.spec.rom_image.resolve()) if args.rom_kb else None,
                "mode": mode,
                "pid": board.host.pid,
            }
            print(json.dumps(info), flush=True)
            reader = threading.Thread(target=_commands, args=(board, stop), daemon=True)
            reader.start()
            while not stop.wait(0.5):
                if board.host.pid is None:
                    break
    except BoardError as exc:
        raise CityedgeError(f"the emulated board did not start: {exc.message}", hint=exc.hint) from exc
    print("board stopped", file=sys.stderr)
    return 0
