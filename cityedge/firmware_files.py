"""Which host files make up a node's flash image, and where they go on the board.

This is the one place that knows the board's file layout; the emulated boards, the flashing tool and the
benchmarks all ask it. The app lives in one of two slots so that an update is written beside the running
app and switched to in one atomic step (a rename of ``/boot.json``); everything outside the slots is small
and changes rarely. Relative to the board's flash root:

    /boot.py                  firmware/boot.py: puts the active slot's lib on sys.path (counts nothing)
    /main.py                  firmware/main.py: ``bootmgr.boot()`` (count, roll back, start), then runs the app
    /lib/bootmgr.py           firmware/lib/node/bootmgr.py (the boot manager; outside the slots)
    /lib/board.py             firmware/boards/<board>.py (pin map; hardware, not app)
    /lib/safe/<role>.py       firmware/safe/<role>.py (safe mode: ``run()``, used when no slot boots)
    /boot.json                boot state: active slot, previous slot, boot tries, rollback report
    /node.json                provisioning (written by the flashing tool, never part of the app)
    /app_a/ and /app_b/       the two app slots, each:
        lib/<pkg>/...           firmware/lib/<pkg>/ (shared node libraries: cewire without its host half, node,
                                drivers)
        lib/<role>/...          firmware/apps/<role>/ (the app package; ``<role>.main()`` is a coroutine)
        app.json                the slot's own manifest, written last: role, version, {path: [size, sha256]}
    /rom/                     the ROMFS partition (layout "romfs", slot name ``rom``): the same files as a
                              slot, compiled to .mpy, in a read-only image MicroPython mounts at boot; its
                              bytecode runs in place from flash instead of being copied into the heap

A slot without a valid ``app.json`` is incomplete and never booted. ``install_into`` lays out a board
with the app in slot ``a``, active and confirmed, as a freshly flashed node would be.

Two layouts (``LAYOUTS``): ``files`` puts the app into the free slot ``a``/``b`` of the filesystem; ``romfs``
puts it into the ROM partition (``romfs_image`` builds the image). The files outside the slots are the same.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path

from cityedge import __version__
from cityedge.errors import CityedgeError
from cityedge.paths import FIRMWARE

ROLES: tuple[str, ...] = ("streetlight", "medical", "bare")
DEFAULT_BOARD = "esp32_devkit"
SLOTS: tuple[str, ...] = ("a", "b")  # the filesystem slots
ROM_SLOT = "rom"  # the ROMFS partition as an app source (bootmgr treats it like a slot)
ROM_DIR = "/rom"  # where MicroPython mounts the ROMFS partition
APP_SOURCES: tuple[str, ...] = (*SLOTS, ROM_SLOT)
LAYOUTS: tuple[str, ...] = ("files", "romfs")
ROMFS_HEADER = b"\xd2\xcd\x31"  # the first bytes of a ROMFS image
BOOT_STATE = "/boot.json"
NODE_CONFIG = "/node.json"
SLOT_MANIFEST = "app.json"
MAX_TRIES = 3  # failed boots of an unconfirmed app before the boot manager rolls back
_SKIP = {"__pycache__"}
# files of firmware/lib that live outside the slots (the boot manager must not be swapped with the app)
_OUTSIDE_SLOTS = {"node/bootmgr.py"}
# the wire protocol's host half: the gateway and the tools run it on CPython, a node never imports it
HOST_ONLY = {"cewire/api.py", "cewire/host.py", "cewire/host_payloads.py", "cewire/receiver.py"}


class UnknownRoleError(CityedgeError):
    def __init__(self, role: str) -> None:
        super().__init__(f"unknown role {role!r}", hint=f"choose one of: {', '.join(ROLES)}", exit_code=2)


def slot_dir(slot: str) -> str:
    """Board directory of an app slot: ``/app_a``, ``/app_b`` or ``/rom`` (the ROMFS partition)."""
    if slot == ROM_SLOT:
        return ROM_DIR
    if slot not in SLOTS:
        raise ValueError(f"unknown slot {slot!r}")
    return f"/app_{slot}"


def _walk(host_dir: Path, board_dir: str) -> Iterator[tuple[str, Path]]:
    for path in sorted(host_dir.rglob("*.py")):
        rel = path.relative_to(host_dir)
        if _SKIP.intersection(path.parts) or any(p.startswith(".") for p in rel.parts):
            continue
        yield f"{board_dir}/{rel.as_posix()}" if board_dir else rel.as_posix(), path


def app_files(role: str, firmware: Path = FIRMWARE) -> dict[str, Path]:
    """The app of ``role`` relative to a slot (``lib/cewire/frame.py``) → host source file."""
    if role not in ROLES:
        raise UnknownRoleError(role)
    files: dict[str, Path] = {}
    lib = firmware / "lib"
    for pkg in sorted(p for p in lib.iterdir() if p.is_dir() and p.name not in _SKIP) if lib.is_dir() else []:
        for rel, src in _walk(pkg, f"lib/{pkg.name}"):
            if rel.removeprefix("lib/") not in _OUTSIDE_SLOTS | HOST_ONLY:
                files[rel] = src
    if role != "bare" and (firmware / "apps" / role).is_dir():
        files.update(_walk(firmware / "apps" / role, f"lib/{role}"))
    return files


def fixed_files(role: str, board: str = DEFAULT_BOARD, firmware: Path = FIRMWARE) -> dict[str, Path]:
    """Files outside the slots (absolute board paths → host source): boot, boot manager, pin map, safe mode."""
    if role not in ROLES:
        raise UnknownRoleError(role)
    files: dict[str, Path] = {}
    for name in ("boot.py", "main.py"):
        if (firmware / name).exists():
            files[f"/{name}"] = firmware / name
    if (firmware / "lib" / "node" / "bootmgr.py").exists():
        files["/lib/bootmgr.py"] = firmware / "lib" / "node" / "bootmgr.py"
    pins = firmware / "boards" / f"{board}.py"
    if pins.exists():
        files["/lib/board.py"] = pins
    safe = firmware / "safe" / f"{role}.py"
    if safe.exists():
        files[f"/lib/safe/{role}.py"] = safe
    return files


def app_image(role: str, board: str = DEFAULT_BOARD, firmware: Path = FIRMWARE, slot: str = "a") -> dict[str, Path]:
    """Map board paths (``/app_a/lib/cewire/frame.py``, ``/main.py``) to host source files for ``role``."""
    image = fixed_files(role, board, firmware)
    base = slot_dir(slot)
    image.update({f"{base}/{rel}": src for rel, src in app_files(role, firmware).items()})
    return image


def slot_manifest(role: str, files: Mapping[str, bytes], *, mpy: int | None) -> dict:
    """The ``app.json`` of a slot holding ``files`` (slot-relative path → content as deployed)."""
    entries = {rel: [len(data), hashlib.sha256(data).hexdigest()] for rel, data in sorted(files.items())}
    digest = hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()
    return {"role": role, "version": f"{__version__}+{digest[:10]}", "mpy": mpy, "files": entries}


def manifest_bytes(manifest: Mapping[str, object]) -> bytes:
    """An ``app.json`` as written to a board (compact, keys sorted: the same manifest gives the same bytes)."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def romfs_image(role: str, files: Mapping[str, bytes], *, mpy: int | None) -> bytes:
    """The ROMFS image of an app: ``files`` (slot-relative path such as ``lib/cewire/frame.mpy`` → content as
    deployed) plus their ``app.json``, in MicroPython's ROMFS format (mpremote's writer). Deterministic: the
    same files give the same bytes, so a redeploy can tell that nothing changed."""
    from mpremote.romfs import VfsRomWriter

    tree: dict[str, object] = {}
    for rel, data in {**files, SLOT_MANIFEST: manifest_bytes(slot_manifest(role, files, mpy=mpy))}.items():
        *dirs, name = rel.split("/")
        node = tree
        for d in dirs:
            sub = node.setdefault(d, {})
            assert isinstance(sub, dict), f"{rel}: {d} is a file"
            node = sub
        node[name] = data
    rom = VfsRomWriter()

    def add(node: dict[str, object]) -> None:
        for name in sorted(node):
            entry = node[name]
            if isinstance(entry, dict):
                rom.opendir(name)
                add(entry)
                rom.closedir()
            else:
                assert isinstance(entry, bytes)
                rom.mkfile(name, entry)

    add(tree)
    return bytes(rom.finalise())


def boot_state(active: str, role: str, *, previous: str | None = None, trial: bool = False) -> dict:
    """A ``/boot.json``: ``trial`` means the active app has not yet proven that it boots."""
    return {"active": active, "previous": previous, "role": role, "trial": trial, "tries": 0,
            "max_tries": MAX_TRIES, "rollback": None}


def install_into(flash_dir: Path, role: str, board: str = DEFAULT_BOARD, *, layout: str = "files") -> list[str]:
    """Lay out a board for ``role`` in a host folder that backs an emulated flash (sources, slot ``a``).

    With ``layout="romfs"`` only the files outside the slots are written and ``/boot.json`` names ``rom``
    active: the caller puts the app's ROMFS image into the board's ROM partition. Returns the board paths
    written. ``/node.json`` is not written (that is provisioning).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}")
    if layout == "romfs":
        for board_path, src in fixed_files(role, board).items():
            _write(flash_dir, board_path, src.read_bytes())
        _write(flash_dir, BOOT_STATE, json.dumps(boot_state(ROM_SLOT, role)).encode())
        return [*fixed_files(role, board), BOOT_STATE]
    written = []
    slot_files: dict[str, bytes] = {}
    base = slot_dir("a")
    for board_path, src in app_image(role, board).items():
        data = src.read_bytes()
        if board_path.startswith(base + "/"):
            slot_files[board_path[len(base) + 1:]] = data
        _write(flash_dir, board_path, data)
        written.append(board_path)
    meta = json.dumps(slot_manifest(role, slot_files, mpy=None)).encode()
    _write(flash_dir, f"{base}/{SLOT_MANIFEST}", meta)
    _write(flash_dir, BOOT_STATE, json.dumps(boot_state("a", role)).encode())
    written += [f"{base}/{SLOT_MANIFEST}", BOOT_STATE]
    return written


def _write(flash_dir: Path, board_path: str, data: bytes) -> None:
    dst = flash_dir / board_path.lstrip("/")
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data)
