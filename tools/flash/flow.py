"""One board, start to end: connect, (firmware), deploy, provision, verify, record.

Every run leaves a ledger record, also a failed one (with the error and its exit code). The result is a
plain dict (the ``--json`` output and the batch summary use it); a failure is re-raised for a single board
so the CLI prints the sentence and exits with its code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cityedge.errors import CityedgeError, ConfigError, record_crash
from cityedge.firmware_files import DEFAULT_BOARD, MAX_TRIES
from cityedge.manifest import NodeRecord, load_manifest, provision
from cityedge.paths import FIRMWARE
from tools.flash import compile as mpy
from tools.flash import firmware as fw
from tools.flash import ledger
from tools.flash.board import Board
from tools.flash.deploy import DeployResult, build_image, deploy, probe_roots, provision_board
from tools.flash.errors import EXIT_FIRMWARE, EXIT_INTERNAL, EXIT_NO_REPL, EXIT_USAGE, FlashError
from tools.flash.ports import port_by_usb_serial
from tools.flash.romfs import build_rom_image, deploy_romfs
from tools.flash.transport import RawRepl
from tools.flash.verify import confirm_and_selftest, watch_boot

Progress = Callable[[str, float], None]


@dataclass
class Job:
    """What to do to one board."""

    port: str
    role: str
    manifest: Path
    ledger: Path | None
    node_id: int | None = None
    name: str = ""
    site: str = ""
    lat: float | None = None
    lon: float | None = None
    link: dict[str, Any] = field(default_factory=lambda: {"kind": "uart", "baud": 115200})
    reprovision: bool = False
    link_port: str | None = None
    verify: bool = True
    selftest: bool = True
    boot_timeout: float = 20.0
    settle: float = 2.0
    source: bool = False
    board: str = DEFAULT_BOARD
    max_tries: int = MAX_TRIES
    firmware: Path | None = None
    firmware_if_needed: bool = False  # flash ``firmware`` only when no MicroPython answers
    erase: bool = False
    chip: str | None = None
    usb_serial: str | None = None
    baudrate: int = 115200
    tree: Path = FIRMWARE  # the firmware tree to deploy (boot files, lib/, apps/, boards/)
    # "auto": romfs where the board has a ROM partition the image fits in, else files; "files": the A/B slots;
    # "romfs": the ROM partition
    layout: str = "auto"


def _provision_decision(job: Job, node_on_board: dict[str, Any] | None) -> tuple[bool, str]:
    """(write /node.json?, why). Keys rotate only when asked, or when the board is new to this node id."""
    if job.node_id is None:
        if node_on_board is None:
            return False, "not provisioned (no --node-id given)"
        return False, "kept the node's provisioning"
    if job.reprovision:
        return True, "re-provisioned (key rotated)"
    if node_on_board is None or node_on_board.get("node_id") != job.node_id:
        return True, "provisioned"
    if node_on_board.get("role") != job.role:
        return True, "re-provisioned (role changed, key rotated)"
    try:
        rec = load_manifest(job.manifest).get(job.node_id)
    except ConfigError:
        rec = None
    if rec is None or rec.key_id != node_on_board.get("key_id"):
        return True, "re-provisioned (the manifest did not hold this node's key)"
    return False, "kept the node's provisioning"


def _flash_image(job: Job, rec: dict[str, Any], say: Progress) -> None:
    """Write the MicroPython image; afterwards find the board again by its USB serial number if it has one
    (a native-USB board may come back under another port name)."""
    assert job.firmware is not None
    say("firmware", 0.0)
    if job.firmware.suffix.lower() == ".uf2":
        res = fw.flash_uf2(job.firmware)
    else:
        res = fw.flash_esp32(job.port, job.firmware, erase=job.erase, chip=job.chip)
    rec["firmware_image"] = res.as_dict()
    deadline = time.monotonic() + 15
    while job.usb_serial:  # the board reboots into MicroPython, possibly under a new name
        try:
            job.port = rec["port"] = port_by_usb_serial(job.usb_serial)
            break
        except FlashError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
    time.sleep(1.0)


def _connect(job: Job, rec: dict[str, Any], say: Progress) -> RawRepl:
    """An open RawRepl in the raw REPL; with ``firmware_if_needed``, a board without an answering MicroPython
    gets the image first."""
    repl = RawRepl(job.port, job.baudrate, usb_serial=job.usb_serial).open()
    try:
        repl.enter_raw(wait=3.0 if job.firmware_if_needed and "firmware_image" not in rec else 6.0)
        return repl
    except FlashError as exc:
        repl.close()
        if exc.exit_code != EXIT_NO_REPL or job.firmware is None:
            raise
        if "firmware_image" in rec:
            raise FlashError("MicroPython does not answer after flashing the image", port=job.port,
                             exit_code=EXIT_FIRMWARE, hint="check that the image is for this board") from exc
    _flash_image(job, rec, say)  # no MicroPython answered: --firmware-if-needed
    return _connect(job, rec, say)


def run_job(job: Job, progress: Progress | None = None) -> dict[str, Any]:
    """Do ``job``; returns the result dict (``result`` = ``ok`` or ``failed``). Raises nothing but
    KeyboardInterrupt: failures are in the dict (``error``, ``exit_code``) and in the ledger."""
    say = progress or (lambda step, frac: None)
    t0 = time.monotonic()
    rec: dict[str, Any] = {"port": job.port, "usb_serial": job.usb_serial, "role": job.role, "node_id": job.node_id,
                           "layout": job.layout, "result": "failed"}
    record: NodeRecord | None = None
    try:
        if job.firmware is not None and not job.firmware_if_needed:
            _flash_image(job, rec, say)
        say("connect", 0.02)
        with _connect(job, rec, say) as repl:
            board = Board(repl)
            info = board.probe(probe_roots())
            rec.update(chip_id=info.uid, board=info.machine, micropython=info.micropython, mpy=info.mpy)
            if job.node_id is None and info.node is None and job.role != "bare":
                raise CityedgeError(
                    f"this node is not provisioned: a {job.role} node needs its identity and key",
                    exit_code=EXIT_USAGE, hint="give --node-id, --lat and --lon (and --site, --name)")
            say("compile", 0.05)
            wire0 = repl.tx_bytes + repl.rx_bytes
            dep: DeployResult
            layout = job.layout
            space = info.rom if layout == "auto" else 0  # auto: no ROM partition, no image to build
            rom = None
            if layout == "romfs" or space:
                if not job.source:
                    mpy.compiler_for(info.mpy, port=job.port, micropython=info.micropython)
                rom = build_rom_image(job.role, info.mpy, board=job.board, firmware=job.tree, source=job.source,
                                      micropython=info.micropython, port=job.port)
            if layout == "auto":
                layout = "romfs" if rom is not None and rom.size <= space else "files"
                rec["layout"] = layout
                say(f"layout {layout}", 0.05)
            if layout == "romfs":
                assert rom is not None
                dep = deploy_romfs(board, info, rom, reset_raw=repl.soft_reset_raw, max_tries=job.max_tries,
                                   progress=lambda step, frac: say(step, 0.05 + 0.6 * frac))
                rec["app"] = {"version": rom.version, "layout": layout, "image_sha256": rom.sha256,
                              **dep.as_dict()}
            else:
                image = build_image(job.role, info, board=job.board, source=job.source, firmware=job.tree)
                dep = deploy(board, info, image, max_tries=job.max_tries,
                             progress=lambda step, frac: say(step, 0.05 + 0.6 * frac))
                rec["app"] = {"version": image.version, "layout": layout, **dep.as_dict()}
            rec["hashes"] = dep.hashes
            do_prov, why = _provision_decision(job, info.node)
            if do_prov:
                say("provision", 0.7)
                if job.lat is None or job.lon is None:
                    raise CityedgeError("provisioning needs the node's position", exit_code=EXIT_USAGE,
                                        hint="give --lat and --lon (the streetlight's astronomical clock needs them)")
                assert job.node_id is not None
                record = provision(job.manifest, node_id=job.node_id, role=job.role, site=job.site, lat=job.lat,
                                   lon=job.lon, link=job.link, chip_id=info.uid, name=job.name)
                rec["node_config_sha256"] = provision_board(board, record)
            elif job.node_id is not None:
                try:
                    record = load_manifest(job.manifest).get(job.node_id)
                except ConfigError:
                    record = None
            rec["provisioning"] = why
            if record is not None:
                rec["key_id"] = record.key_id
            rec["wire_bytes"] = repl.tx_bytes + repl.rx_bytes - wire0
            if job.verify:
                say("reboot", 0.75)
                watched = watch_boot(repl, dep.slot, record=record, link=job.link_port, timeout=job.boot_timeout,
                                     settle=job.settle)
                say("self-test", 0.9)
                selftest = confirm_and_selftest(board, repl, job.role, run_selftest=job.selftest)
                rec["verify"] = {**watched.as_dict(), "selftest": selftest}
                repl.hard_reset_run()  # leave the node running its app, as after power-on
            rec["result"] = "ok"
    except CityedgeError as exc:
        rec["error"] = exc.message
        rec["hint"] = exc.hint
        rec["exit_code"] = exc.exit_code
    except Exception as exc:  # a bug: this board fails with a sentence, the others of a batch go on
        log = record_crash(f"(deploy to {job.port})")
        rec["error"] = f"internal error: {type(exc).__name__}: {exc}"
        rec["hint"] = f"details in {log}; please report it" if log else "please report it"
        rec["exit_code"] = EXIT_INTERNAL
    finally:
        rec["seconds"] = round(time.monotonic() - t0, 3)
        say("done" if rec["result"] == "ok" else "failed", 1.0)
    if job.ledger is not None:
        ledger.append(job.ledger, rec)
    return rec
