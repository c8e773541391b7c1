"""The "romfs" node layout: the app as a ROMFS image in the board's ROM partition (docs/flashing.md).

MicroPython (>= 1.25, built with ``MICROPY_VFS_ROM`` and a ROM partition) mounts a ROMFS image at ``/rom``;
``.mpy`` files there run in place, so their bytecode and constant strings stay in flash instead of the heap.
The image holds the same files a slot gets (``lib/<pkg>/...`` compiled, and ``app.json``); the files outside
the slots (boot.py, main.py, the boot manager, pin map, safe mode) stay on the filesystem as in the files
layout. ``build_romfs`` is the one place that builds the image (the flashing tool and the benchmarks).

Order of a deploy, chosen so that a power cut at any moment leaves a node that boots a complete app (or, when
the ROM held the node's only app, safe mode):

1. probe the partition (one round trip): size, block size, SHA-256 of its first ``len(image)`` bytes;
2. nothing is written when it already holds exactly this image (and the fixed files match);
3. fixed files that differ go to ``<path>.new`` and are checked by hash;
4. when the ROM app is the active one and a previous files slot is complete, ``/boot.json`` goes back to that
   slot before the partition is erased;
5. erase and write the image through ``vfs.rom_ioctl`` (3 prepare, 4 write, 5 complete), the first chunk
   (the ROMFS header) last, so that a half-written image never mounts;
6. soft reset (the partition is mapped again; an emulated board sees new content only after a reset) and
   read the image back: SHA-256 of ``vfs.rom_ioctl(2, 0)`` against the host's;
7. commit: rename the ``.new`` files, then ``/boot.json`` names ``rom`` active, the files slot previous, trial.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cityedge.firmware_files import (
    BOOT_STATE,
    DEFAULT_BOARD,
    MAX_TRIES,
    ROM_DIR,
    ROM_SLOT,
    ROMFS_HEADER,
    SLOT_MANIFEST,
    SLOTS,
    app_files,
    boot_state,
    fixed_files,
    romfs_image,
    slot_dir,
    slot_manifest,
)
from cityedge.paths import FIRMWARE
from tools.flash import compile as mpy
from tools.flash.board import CHUNK, Board, BoardInfo, _compressed
from tools.flash.deploy import DeployResult, Progress, _counterpart, _sha, _short, expected_digest
from tools.flash.errors import EXIT_ROMFS, EXIT_VERIFY, FlashError

CURRENT_MPY = 6  # .mpy major version of MicroPython >= 1.19: what build_romfs compiles for by default
WRITE_CHUNK = 4096  # image bytes per vfs.rom_ioctl(4) call (a flash sector)
PREPARE_STEP = 32768  # bytes erased per rom_ioctl(3) call where the port takes ranges (keeps each call short)
NO_ROMFS = (
    "this MicroPython has no ROMFS partition (vfs.rom_ioctl missing or 0 bytes): flash a ROMFS-enabled "
    "firmware or use --layout files"
)
NO_ROMFS_HINT = (
    "real boards need a MicroPython built with MICROPY_VFS_ROM and a ROM partition (stock "
    "ESP32_GENERIC images have none); an emulated board: start it with --rom-kb 256"
)

# Board side: what the ROM partition holds (its size, block size, hash over the image's length), or None.
_PROBE = """\
import vfs
_r=None
if hasattr(vfs,'rom_ioctl') and vfs.rom_ioctl(1)>0:
 _m=vfs.rom_ioctl(2,0)
 if not isinstance(_m,int) and len(_m):
  _r=[len(_m),vfs.rom_ioctl(6,0),binascii.hexlify(hashlib.sha256(_m[:{n}]).digest()).decode()]
  _m=None
print(json.dumps(_r))
"""
# Board side: unmount /rom, erase what the image needs, define the chunk writer.
_PREPARE = """\
try:vfs.umount('/rom')
except Exception:pass
def _E(o,n):
 r=vfs.rom_ioctl(3,0,o,n) if o>=0 else vfs.rom_ioctl(3,0,n)
 if r<0:raise OSError(-r)
 return r
def _O(o,d,z):
 b=binascii.a2b_base64(d)
 if z:b=deflate.DeflateIO(io.BytesIO(b),deflate.ZLIB).read()
 r=vfs.rom_ioctl(4,0,o,b)
 if r<0:raise OSError(-r)
"""


@dataclass
class RomImage:
    """The app for the romfs layout: fixed files by board path, and the ROMFS image of the slot files."""

    role: str
    fixed: dict[str, bytes]
    files: dict[str, bytes]  # slot-relative path (lib/cewire/frame.mpy) -> content, as inside the image
    data: bytes  # the ROMFS image
    mpy: int | None

    @property
    def manifest(self) -> dict[str, Any]:
        return slot_manifest(self.role, self.files, mpy=self.mpy)

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def sha256(self) -> str:
        return _sha(self.data)

    @property
    def size(self) -> int:
        return len(self.data)


def build_rom_image(
    role: str,
    mpy_version: int | None = CURRENT_MPY,
    *,
    board: str = DEFAULT_BOARD,
    firmware: Path = FIRMWARE,
    source: bool = False,
    micropython: str = "?",
    port: str | None = None,
) -> RomImage:
    """Compile ``role``'s app for ``mpy_version`` (or keep sources) and lay the slot files out as a ROMFS image."""
    version = None if source else mpy_version
    fixed = mpy.build(fixed_files(role, board, firmware), version, source=source, port=port, micropython=micropython)
    slot_src = {"/" + rel: src for rel, src in app_files(role, firmware).items()}
    # in the ROM, a module's traceback name is the file's own path: one interned string with its __file__
    slot = mpy.build(slot_src, version, source=source, port=port, micropython=micropython,
                     outside=fixed_files(role, board, firmware), source_name=lambda p: f"{ROM_DIR}{p[:-3]}.mpy")
    files = {p.lstrip("/"): d for p, d in sorted(slot.items())}
    return RomImage(role, fixed, files, romfs_image(role, files, mpy=version), version)


def build_romfs(
    role: str, board: str = DEFAULT_BOARD, *, firmware: Path = FIRMWARE, mpy_version: int | None = CURRENT_MPY
) -> bytes:
    """The ROMFS image of ``role``'s app (``lib/cewire``, ``lib/node`` without the boot manager,
    ``lib/drivers``, ``lib/<role>`` as ``.mpy``, and ``app.json``), as ``--layout romfs`` deploys it."""
    return build_rom_image(role, mpy_version, board=board, firmware=firmware).data


def rom_probe(board: Board, nbytes: int) -> tuple[int, int, str] | None:
    """(partition size, block size, SHA-256 of its first ``nbytes``) or None when the board has no ROMFS."""
    got = board.call_json(_PROBE.format(n=int(nbytes)), what="asking for the ROM partition", timeout=60)
    if not got:
        return None
    size, block = int(got[0]), int(got[1])
    return size, block if 0 < block <= size else size, str(got[2])


_STATUS = """\
import vfs
_r=None
if hasattr(vfs,'rom_ioctl') and vfs.rom_ioctl(1)>0:
 _m=vfs.rom_ioctl(2,0)
 _r={'size':0 if isinstance(_m,int) else len(_m),'app':None}
 _m=None
 try:
  with open('/rom/app.json') as _f:_a=json.loads(_f.read())
  _r['app']={'role':_a.get('role'),'version':_a.get('version')}
 except Exception:pass
print(json.dumps(_r))
"""


def rom_status(board: Board) -> dict[str, Any] | None:
    """The ROM partition as ``cityedge flash status`` shows it: ``{"size", "app": {"role", "version"} | None}``,
    or None when the board's MicroPython has no ROMFS."""
    got = board.call_json(_STATUS, what="asking for the ROM partition", timeout=30)
    return got if isinstance(got, dict) else None


def _chunks(data: bytes) -> list[tuple[int, bytes]]:
    """The image in WRITE_CHUNK pieces (the last padded to 4 bytes, the smallest flash write), header last."""
    pieces = []
    for off in range(0, len(data), WRITE_CHUNK):
        piece = data[off : off + WRITE_CHUNK]
        pieces.append((off, piece + bytes(-len(piece) % 4)))
    return pieces[1:] + pieces[:1]


def _write_image(
    board: Board, data: bytes, *, size: int, block: int, deflate: bool, progress: Callable[[float], None]
) -> int:
    """Erase and write ``data`` into the partition; returns the payload bytes sent."""
    prep = [_PREPARE]
    if block < size:  # the port erases ranges: whole blocks, a bounded amount per call
        off = 0
        while off < len(data):
            n = min(len(data) - off, PREPARE_STEP)
            n = -(-n // block) * block
            prep.append(f"_E({off},{min(n, size - off)})")
            off += n
    else:
        prep.append(f"_E(-1,{len(data)})")
    board.run("\n".join(prep), what="erasing the ROM partition", timeout=120)
    batch: list[str] = []
    size_b64 = 0
    sent = 0
    done = 0

    def flush() -> None:
        nonlocal batch, size_b64
        if batch:
            board.run("\n".join(batch), what="writing the ROM partition", timeout=60)
            batch, size_b64 = [], 0

    for off, piece in _chunks(data):
        z = _compressed(piece) if deflate else piece
        use_z = deflate and len(z) < len(piece)
        payload = base64.b64encode(z if use_z else piece).decode()
        if size_b64 + len(payload) > CHUNK:
            flush()
        batch.append(f"_O({off},b'{payload}',{int(use_z)})")
        size_b64 += len(payload)
        sent += len(z if use_z else piece)
        done += len(piece)
        progress(done / max(1, len(data)))
    flush()
    board.run("r=vfs.rom_ioctl(5,0)\nif r<0:raise OSError(-r)", what="completing the ROM partition write")
    return sent


def deploy_romfs(
    board: Board,
    info: BoardInfo,
    image: RomImage,
    *,
    reset_raw: Callable[[], object],
    max_tries: int = MAX_TRIES,
    progress: Progress | None = None,
) -> DeployResult:
    """Deploy ``image`` into the ROM partition (steps in the module docstring). ``info`` is a fresh probe;
    ``reset_raw`` soft-resets the board into its raw REPL (``RawRepl.soft_reset_raw``)."""
    t0 = time.monotonic()
    wire0 = board.repl.tx_bytes + board.repl.rx_bytes
    say = progress or (lambda step, frac: None)
    files, state = info.files, info.state or {}
    rom = rom_probe(board, image.size)
    if rom is None or rom[0] == 0:
        raise FlashError(NO_ROMFS, port=board.port, exit_code=EXIT_ROMFS, hint=NO_ROMFS_HINT)
    size, block, held = rom
    if image.size > size:
        raise FlashError(
            f"the app image ({image.size} bytes) is larger than the board's ROM partition ({size} bytes)",
            port=board.port,
            exit_code=EXIT_ROMFS,
            hint="flash a firmware with a larger ROM partition, or use --layout files",
        )
    if not image.data.startswith(ROMFS_HEADER):
        raise FlashError("the app image is not a ROMFS image", port=board.port, exit_code=EXIT_VERIFY)
    hashes = {f"{slot_dir(ROM_SLOT)}/{rel}": _sha(d) for rel, d in image.files.items()}
    hashes.update({p: _sha(d) for p, d in image.fixed.items()})
    fixed_changed = {p: d for p, d in image.fixed.items() if files.get(p, (0, ""))[1] != _short(d)}
    stale_fixed = [c for p in image.fixed if (c := _counterpart(p)) and c in files and c not in image.fixed]
    active, prev = state.get("active"), state.get("previous")
    rom_same = held == image.sha256
    result = DeployResult(
        slot=ROM_SLOT,
        previous=None,
        version=image.version,
        unchanged=False,
        bytes_image=image.size + sum(map(len, image.fixed.values())),
        hashes=hashes,
    )
    if rom_same and active == ROM_SLOT and not fixed_changed and not stale_fixed and not state.get("rollback"):
        result.previous, result.unchanged, result.kept = prev, True, sorted(image.files)
        result.wire_bytes = board.repl.tx_bytes + board.repl.rx_bytes - wire0
        result.seconds = time.monotonic() - t0
        return result

    def complete(slot: object) -> bool:
        return slot in SLOTS and f"{slot_dir(str(slot))}/{SLOT_MANIFEST}" in files

    # the rollback target: the files app that runs now, or the one the ROM app replaced
    previous = active if complete(active) else prev if active == ROM_SLOT and complete(prev) else None
    result.previous = previous

    if fixed_changed:
        say("write", 0.05)
        board.write_files({p + ".new": d for p, d in fixed_changed.items()}, compress=info.deflate)
        result.bytes_payload += sum(map(len, fixed_changed.values()))
        roots = [p + ".new" for p in fixed_changed]
        if board.digest(roots) != expected_digest({p + ".new": d for p, d in fixed_changed.items()}):
            raise FlashError(
                "verification failed: the boot files differ on the board after writing",
                port=board.port,
                exit_code=EXIT_VERIFY,
                hint="the running app was not touched; run again. If it repeats, the board's flash may be failing",
            )
    if rom_same:
        result.kept = sorted(image.files)
    else:
        if active == ROM_SLOT and previous is not None:
            # the ROM is about to be erased: until the switch, the node boots its previous (complete) app
            fallback = json.dumps(boot_state(previous, image.role))
            board.run(f"_J({BOOT_STATE!r},{fallback!r})", what="switching to the previous app while writing")
        say("write", 0.1)
        result.bytes_payload += _write_image(
            board,
            image.data,
            size=size,
            block=block,
            deflate=info.deflate,
            progress=lambda f: say("write", 0.1 + 0.7 * f),
        )
        result.sent = sorted(image.files)
        say("verify", 0.85)
        reset_raw()  # the partition is mapped again at boot (an emulated board: only then)
        board.reset_agent()
        again = rom_probe(board, image.size)
        if again is None or again[2] != image.sha256:
            raise FlashError(
                "verification failed: the ROM partition read back differs from the image "
                f"(sha256 {again[2][:16] if again else '-'}… on the board, {image.sha256[:16]}… sent)",
                port=board.port,
                exit_code=EXIT_VERIFY,
                hint="run again; if it repeats, the board's flash may be failing"
                + (" (the node boots its previous app meanwhile)" if previous else ""),
            )
    say("switch", 0.95)
    new_state = boot_state(ROM_SLOT, image.role, previous=previous, trial=True)
    new_state["max_tries"] = max_tries
    commit = [f"_N({p + '.new'!r},{p!r})" for p in fixed_changed]
    commit += [f"_R({c!r})" for c in stale_fixed]
    commit.append(f"_J({BOOT_STATE!r},{json.dumps(new_state)!r})")
    commit.append(f"print(json.dumps(_H({BOOT_STATE!r})))")
    out = board.call_json("\n".join(commit), what="switching to the new app")
    if out != _sha(json.dumps(new_state).encode()):
        raise FlashError(
            "verification failed: /boot.json differs on the board",
            port=board.port,
            exit_code=EXIT_VERIFY,
            hint="run again",
        )
    result.wire_bytes = board.repl.tx_bytes + board.repl.rx_bytes - wire0
    result.seconds = time.monotonic() - t0
    say("deployed", 1.0)
    return result
