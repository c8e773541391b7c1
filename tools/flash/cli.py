"""``cityedge flash``: list boards, deploy (flash, provision, verify, record) one or many, show status.

    cityedge flash list [--probe]
    cityedge flash deploy --role streetlight --node-id 1001 --site harbour --lat 53.54 --lon 9.98 [PORT ...]
    cityedge flash deploy --layout romfs ...      (the app in the board's ROM partition)
    cityedge flash romfs build --role streetlight -o app.romfs
    cityedge flash status PORT
    cityedge flash exit-codes

Exit codes: see tools/flash/errors.py and docs/flashing.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TextIO

from cityedge.errors import CityedgeError
from cityedge.firmware_files import DEFAULT_BOARD, LAYOUTS, MAX_TRIES, ROLES, UnknownRoleError
from cityedge.manifest import LINK_KINDS
from cityedge.paths import FIRMWARE
from tools.flash import ledger
from tools.flash.board import Board
from tools.flash.errors import EXIT_BATCH, EXIT_CODES, EXIT_NO_BOARD, FlashError
from tools.flash.flow import Job, run_job
from tools.flash.ports import list_serial_ports, port_by_usb_serial
from tools.flash.transport import RawRepl


def default_manifest() -> Path:
    base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "cityedge"
    return Path(os.environ.get("CITYEDGE_MANIFEST", base / "nodes.json"))


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("flash", help="flash, deploy, provision, verify and record nodes",
                              description="The technicians' flashing and provisioning tool (docs/flashing.md).")
    sub = p.add_subparsers(dest="flash_command", metavar="ACTION")

    ls = sub.add_parser("list", help="list serial ports and what is on them")
    ls.add_argument("--probe", action="store_true", help="ask each board for its MicroPython version and chip id")
    ls.add_argument("--all", action="store_true", help="also ports without a USB id")
    ls.add_argument("--port", action="append", default=[], help="also this port (e.g. an emulated board's pty)")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=cmd_list)

    d = sub.add_parser("deploy", help="deploy the app (and provision, verify, record); several ports in parallel")
    d.add_argument("ports", nargs="*", metavar="PORT", help="serial ports (default: the one board plugged in)")
    d.add_argument("--usb-serial", action="append", default=[], help="choose a board by its USB serial number")
    d.add_argument("--role", required=True, help=f"the node's role: {', '.join(ROLES)}")
    d.add_argument("--node-id", type=lambda s: int(s, 0), help="node id (u32); with several ports, the first id")
    d.add_argument("--name", default="", help="a label for the node (e.g. the pole number)")
    d.add_argument("--site", default="", help="site name")
    d.add_argument("--lat", type=float, help="latitude (degrees)")
    d.add_argument("--lon", type=float, help="longitude (degrees)")
    d.add_argument("--link-kind", default="uart", choices=LINK_KINDS, help="how the node reaches its gateway")
    d.add_argument("--link-baud", type=int, default=115200)
    d.add_argument("--reprovision", action="store_true", help="rotate the node's key (new key id)")
    d.add_argument("--manifest", type=Path, default=None, help=f"provisioning manifest (default {default_manifest()})")
    d.add_argument("--ledger", type=Path, default=None, help=f"ledger file (default {ledger.default_ledger()})")
    d.add_argument("--link", action="append", default=[], metavar="PORT",
                   help="the node's link port, to wait for its HELLO (one per board, in order)")
    d.add_argument("--no-verify", action="store_true", help="do not reboot and verify")
    d.add_argument("--no-selftest", action="store_true", help="skip the role's self-test")
    d.add_argument("--boot-timeout", type=float, default=20.0, help="seconds to wait for the node to come up")
    d.add_argument("--layout", choices=(*LAYOUTS, "auto"), default="auto",
                   help="auto (default): romfs where the board has a ROM partition the app fits in, else files; "
                   "files: the A/B slots on the filesystem; romfs: the board's ROM partition, whose .mpy run "
                   "in place (far less RAM; needs a ROMFS-enabled MicroPython)")
    d.add_argument("--source", action="store_true", help="deploy .py sources instead of compiled .mpy")
    d.add_argument("--tree", type=Path, default=FIRMWARE, help="firmware tree to deploy (default: the project's)")
    d.add_argument("--board", default=DEFAULT_BOARD, help="pin map (firmware/boards/<board>.py)")
    d.add_argument("--max-tries", type=int, default=MAX_TRIES, help="failed boots before the node rolls back")
    d.add_argument("--firmware", type=Path, help="flash this MicroPython image first (.bin: esptool, .uf2: RP2040)")
    d.add_argument("--firmware-if-needed", action="store_true",
                   help="flash --firmware only when the board has no answering MicroPython")
    d.add_argument("--erase", action="store_true", help="erase the whole flash before writing --firmware")
    d.add_argument("--chip", help="ESP32 chip for --firmware (default: detect)")
    d.add_argument("--json", action="store_true", help="print the results as JSON")
    d.set_defaults(func=cmd_deploy)

    rf = sub.add_parser("romfs", help="ROMFS images of the app (the romfs layout)")
    rsub = rf.add_subparsers(dest="romfs_command", metavar="ACTION")
    rb = rsub.add_parser("build", help="build the ROMFS image --layout romfs deploys, into a file")
    rb.add_argument("--role", required=True, help=f"the node's role: {', '.join(ROLES)}")
    rb.add_argument("-o", "--output", type=Path, required=True, help="image file to write")
    rb.add_argument("--board", default=DEFAULT_BOARD, help="pin map (firmware/boards/<board>.py)")
    rb.add_argument("--tree", type=Path, default=FIRMWARE, help="firmware tree (default: the project's)")
    rb.add_argument("--mpy", type=int, default=6, help=".mpy major version to compile for (default 6: "
                    "MicroPython 1.19 and newer)")
    rb.set_defaults(func=cmd_romfs_build)
    rf.set_defaults(func=lambda args: (rf.print_help(), 2)[1])

    st = sub.add_parser("status", help="what a board runs: slots, versions, rollback report, provisioning")
    st.add_argument("port")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)

    ex = sub.add_parser("exit-codes", help="list the exit codes")
    ex.set_defaults(func=lambda args: _print_exit_codes())
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _print_exit_codes() -> int:
    for code, text in sorted(EXIT_CODES.items()):
        print(f"{code:3d}  {text}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    ports = [p.as_dict() for p in list_serial_ports(all_ports=args.all)]
    known = {p["device"] for p in ports}
    ports += [{"device": d, "usb_id": None, "bridge": None, "serial_number": None, "description": "given"}
              for d in args.port if d not in known]
    if args.probe:
        for p in ports:
            try:
                with RawRepl(p["device"], timeout=3) as repl:
                    repl.enter_raw(wait=1.5)
                    p["board"] = Board(repl).probe().as_dict()
            except CityedgeError as exc:
                p["error"] = exc.message
    if args.json:
        print(json.dumps(ports, indent=1))
        return 0
    if not ports:
        print("no USB serial ports found (check the cable: charge-only cables show no port)")
        return 0
    for p in ports:
        line = f"{p['device']:<16} {p.get('usb_id') or '-':<10} {p.get('serial_number') or '-':<18} " \
               f"{p.get('bridge') or p.get('description') or ''}"
        b = p.get("board")
        if b:
            node = b.get("node") or {}
            line += f"  MicroPython {b['micropython']} ({b['machine']}) chip {b['chip_id'] or '?'}" \
                    f" node {node.get('node_id', '-')}"
        elif p.get("error"):
            line += f"  ({p['error']})"
        print(line)
    return 0


def _resolve_ports(args: argparse.Namespace) -> list[tuple[str, str | None]]:
    ports: list[tuple[str, str | None]] = [(p, None) for p in args.ports]
    ports += [(port_by_usb_serial(sn), sn) for sn in args.usb_serial]
    if ports:
        return ports
    found = [p for p in list_serial_ports() if p.bridge]
    if len(found) == 1:
        return [(found[0].device, found[0].serial_number)]
    if not found:
        raise FlashError("no board found", exit_code=EXIT_NO_BOARD,
                         hint="plug the board in (a data cable, not charge-only); `cityedge flash list` shows ports")
    raise FlashError(f"{len(found)} boards are plugged in: say which ({', '.join(p.device for p in found)})",
                     exit_code=EXIT_NO_BOARD, hint="give the port(s), or --usb-serial")


class ProgressBoard:
    """One progress bar per board: redrawn in place on a terminal, one line per step otherwise."""

    def __init__(self, ports: list[str], out: TextIO, enabled: bool) -> None:
        self.ports = ports
        self.out = out
        self.enabled = enabled
        self.tty = enabled and out.isatty()
        self.state = {p: ("waiting", 0.0) for p in ports}
        self.lock = threading.Lock()
        self.drawn = False
        self.width = max(len(p) for p in ports) if ports else 10

    def _line(self, port: str) -> str:
        step, frac = self.state[port]
        bar = "#" * int(frac * 30)
        return f"{port:<{self.width}} [{bar:<30}] {int(frac * 100):3d}% {step}"

    def update(self, port: str, step: str, frac: float) -> None:
        if not self.enabled:
            return
        with self.lock:
            old = self.state[port]
            self.state[port] = (step, frac)
            if self.tty:
                if self.drawn:
                    self.out.write(f"\x1b[{len(self.ports)}F")
                self.out.write("".join(f"\x1b[2K{self._line(p)}\n" for p in self.ports))
                self.drawn = True
            elif old[0] != step:
                self.out.write(self._line(port) + "\n")
            self.out.flush()


def summary_table(results: list[dict[str, Any]]) -> str:
    rows = [("PORT", "NODE", "ROLE", "RESULT", "SLOT", "SENT/KEPT", "TIME", "DETAIL")]
    for r in results:
        app = r.get("app") or {}
        detail = r.get("error") or (r.get("verify") or {}).get("how") or r.get("provisioning") or ""
        rows.append((r["port"], str(r.get("node_id") or "-"), r["role"], r["result"], str(app.get("slot", "-")),
                     f"{app.get('sent', '-')}/{app.get('kept', 0) + app.get('copied', 0) if app else '-'}",
                     f"{r.get('seconds', 0):.1f}s", detail))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1] for row in rows)


def cmd_deploy(args: argparse.Namespace) -> int:
    if args.role not in ROLES:
        raise UnknownRoleError(args.role)
    ports = _resolve_ports(args)
    manifest = args.manifest or default_manifest()
    led = args.ledger or ledger.default_ledger()
    jobs = []
    for i, (port, sn) in enumerate(ports):
        jobs.append(Job(
            port=port, usb_serial=sn, role=args.role, manifest=manifest, ledger=led,
            node_id=None if args.node_id is None else args.node_id + i, name=args.name if len(ports) == 1 else "",
            site=args.site, lat=args.lat, lon=args.lon, link={"kind": args.link_kind, "baud": args.link_baud},
            reprovision=args.reprovision, link_port=args.link[i] if i < len(args.link) else None,
            verify=not args.no_verify, selftest=not args.no_selftest, boot_timeout=args.boot_timeout,
            source=args.source, board=args.board, max_tries=args.max_tries, firmware=args.firmware,
            erase=args.erase, chip=args.chip, tree=args.tree, firmware_if_needed=args.firmware_if_needed,
            layout=args.layout,
        ))
    bars = ProgressBoard([j.port for j in jobs], sys.stderr, enabled=not args.json)

    def one(job: Job) -> dict[str, Any]:
        return run_job(job, progress=lambda step, frac: bars.update(job.port, step, frac))

    with ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool:
        results = list(pool.map(one, jobs))
    if args.json:
        print(json.dumps(results if len(results) > 1 else results[0], indent=1, default=str))
    elif len(results) > 1:
        print(summary_table(results))
    failed = [r for r in results if r["result"] != "ok"]
    if len(results) == 1:
        r = results[0]
        if failed:
            if args.json:
                return int(r["exit_code"])
            raise CityedgeError(r["error"], hint=r.get("hint"), exit_code=int(r["exit_code"]))
        if args.json:  # stdout is the JSON alone, for scripts
            return 0
        app = r.get("app") or {}
        what = "unchanged" if app.get("unchanged") else f"{app.get('sent')} files sent, {app.get('copied')} copied"
        print(f"{r['port']}: ok: {r['role']} {app.get('version')} in slot {app.get('slot')} ({what}); "
              f"{r.get('provisioning')}; node {r.get('node_id') or '-'} key id {r.get('key_id', '-')}; "
              f"{(r.get('verify') or {}).get('how') or 'not verified'}")
        return 0
    return EXIT_BATCH if failed else 0


def cmd_romfs_build(args: argparse.Namespace) -> int:
    """Write the ROMFS image of ``--role``'s app to ``-o`` (what ``deploy --layout romfs`` writes)."""
    from tools.flash.romfs import build_rom_image

    if args.role not in ROLES:
        raise UnknownRoleError(args.role)
    image = build_rom_image(args.role, args.mpy, board=args.board, firmware=args.tree)
    try:
        args.output.write_bytes(image.data)
    except OSError as exc:
        raise CityedgeError(f"cannot write {args.output}: {exc.strerror}", exit_code=2) from None
    print(f"{args.output}: ROMFS image of {args.role} {image.version}, {image.size} bytes, {len(image.files)} files "
          f"(.mpy v{args.mpy}), sha256 {image.sha256}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from tools.flash.deploy import probe_roots
    from tools.flash.romfs import rom_status

    with RawRepl(args.port) as repl:
        repl.enter_raw()
        board = Board(repl)
        info = board.probe(probe_roots())
        rom = rom_status(board)
    out = {**info.as_dict(), "rom": rom}
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    st = info.state or {}
    print(f"{args.port}: MicroPython {info.micropython} ({info.machine}), {info.mpy and f'mpy {info.mpy & 0xFF}'}, "
          f"chip {info.uid or '?'}")
    print(f"  active slot {st.get('active', '-')}, previous {st.get('previous') or '-'}, "
          f"trial {st.get('trial')}, failed boots {st.get('tries', 0)}/{st.get('max_tries', '-')}")
    rb = st.get("rollback")
    if rb:
        print(f"  ROLLED BACK from slot {rb.get('from')} ({rb.get('version')}) after {rb.get('tries')} failed "
              f"boots: {rb.get('error') or rb.get('reason')}")
    if rom is None:
        print("  ROM partition: none (this MicroPython has no ROMFS)")
    else:
        app = rom.get("app") or {}
        held = f"{app.get('role')} {app.get('version')}" if app else "no app image"
        print(f"  ROM partition: {rom.get('size')} bytes, {held}")
    node = info.node or {}
    print(f"  node {node.get('node_id', 'not provisioned')} role {node.get('role', '-')} key id "
          f"{node.get('key_id', '-')}")
    return 0
