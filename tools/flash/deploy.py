"""Deploy an app into the free slot and switch to it in one atomic step.

Order, chosen so that a power cut at any moment leaves a node that boots a complete app:

1. probe (one round trip): identity, ``.mpy`` version, boot state, hashes of the slots and fixed files;
2. nothing to do when the active slot already holds exactly this app (and the fixed files match);
3. prepare the target slot: remove its ``app.json`` first (the slot is then "incomplete" and never booted),
   remove files that are not part of the new app, copy unchanged files from the active slot on the board;
4. send the files that differ (fixed files go to ``<path>.new``);
5. verify every file of the target slot and every ``.new`` by hash on the board;
6. commit (one round trip): rename the ``.new`` files into place, write the slot's ``app.json``, then
   replace ``/boot.json`` (the switch) naming the new slot active, the old one previous, on trial.

The active slot is never written (except when it is itself an unconfirmed trial and the previous slot is
complete: then the previous stays the rollback target, and while the trial slot is being rewritten it is
incomplete, so the boot manager boots the previous one).
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cityedge.firmware_files import (
    BOOT_STATE,
    DEFAULT_BOARD,
    MAX_TRIES,
    NODE_CONFIG,
    ROM_SLOT,
    SLOT_MANIFEST,
    SLOTS,
    app_files,
    boot_state,
    fixed_files,
    slot_dir,
    slot_manifest,
)
from cityedge.manifest import NodeRecord
from cityedge.paths import FIRMWARE
from tools.flash import compile as mpy
from tools.flash.board import FIXED_ROOTS, PROBE_HASH, Board, BoardInfo
from tools.flash.errors import EXIT_VERIFY, FlashError

Progress = Callable[[str, float], None]  # (step, fraction 0..1)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _short(data: bytes) -> str:
    """The hash as a probe reports it (enough to decide what to send; the verify step uses all of it)."""
    return _sha(data)[:PROBE_HASH]


def expected_digest(files: dict[str, bytes]) -> tuple[int, str]:
    """What the board's ``_V`` answers for exactly ``files`` (board path → content)."""
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(f"{path} {len(files[path])} {_sha(files[path])}\n".encode())
    return len(files), h.hexdigest()


def _json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


@dataclass
class Image:
    """The app as it will be on the board: fixed files by board path, slot files by slot-relative path."""

    role: str
    fixed: dict[str, bytes]
    slot: dict[str, bytes]
    mpy: int | None

    @property
    def manifest(self) -> dict[str, Any]:
        return slot_manifest(self.role, self.slot, mpy=self.mpy)

    @property
    def manifest_bytes(self) -> bytes:
        return _json(self.manifest)

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def size(self) -> int:
        return sum(map(len, self.fixed.values())) + sum(map(len, self.slot.values()))


def build_image(role: str, info: BoardInfo, *, board: str = DEFAULT_BOARD, source: bool = False,
                firmware: Path = FIRMWARE) -> Image:
    """Compile the app of ``role`` for this board's ``.mpy`` version (or keep sources)."""
    fixed_src = fixed_files(role, board, firmware)
    slot_src = {"/" + rel: src for rel, src in app_files(role, firmware).items()}
    if not source:
        mpy.compiler_for(info.mpy, port=info.port, micropython=info.micropython)  # refuse with this port's name
    # the same sources for the same .mpy version give the same image: a batch builds it once
    stamp = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in (*fixed_src.values(), *slot_src.values()))
    return _build(role, None if source else info.mpy, source, stamp, info.micropython,
                  tuple(fixed_src.items()), tuple(slot_src.items()))


@functools.lru_cache(maxsize=32)
def _build(role: str, mpy_version: int | None, source: bool, stamp: tuple, micropython: str,
           fixed_src: tuple[tuple[str, Path], ...], slot_src: tuple[tuple[str, Path], ...]) -> Image:
    fixed = mpy.build(dict(fixed_src), mpy_version, source=source, micropython=micropython)
    slot = mpy.build(dict(slot_src), mpy_version, source=source, micropython=micropython, outside=dict(fixed_src))
    return Image(role, fixed, {p.lstrip("/"): d for p, d in slot.items()}, mpy_version)


@dataclass
class DeployResult:
    slot: str
    previous: str | None
    version: str
    unchanged: bool
    sent: list[str] = field(default_factory=list)
    copied: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    bytes_image: int = 0
    bytes_payload: int = 0
    wire_bytes: int = 0
    seconds: float = 0.0
    hashes: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"slot": self.slot, "previous": self.previous, "version": self.version, "unchanged": self.unchanged,
                "sent": len(self.sent), "copied": len(self.copied), "kept": len(self.kept),
                "bytes_image": self.bytes_image, "bytes_payload": self.bytes_payload, "wire_bytes": self.wire_bytes,
                "seconds": round(self.seconds, 3)}


def image_hashes(image: Image, slot: str) -> dict[str, str]:
    """Board path → SHA-256 of every file of ``image`` with its app in ``slot`` (what the ledger records)."""
    out = {f"{slot_dir(slot)}/{rel}": _sha(d) for rel, d in image.slot.items()}
    out.update({p: _sha(d) for p, d in image.fixed.items()})
    return out


def _other(slot: str) -> str:
    return SLOTS[1 - SLOTS.index(slot)]


def choose_slot(state: dict[str, Any] | None, files: dict[str, tuple[int, str]]) -> tuple[str, str | None]:
    """(target slot, rollback slot) for a deploy given the board's boot state."""
    active = (state or {}).get("active")
    prev = (state or {}).get("previous")
    if state and active == ROM_SLOT:  # the node runs its app from the ROM partition (layout romfs)
        if state.get("trial") and prev in SLOTS and f"{slot_dir(prev)}/{SLOT_MANIFEST}" in files:
            return _other(prev), prev  # the ROM app is unproven: keep the proven files app as the target
        return "a", ROM_SLOT  # bootmgr checks /rom/app.json before it would roll back to it
    if not state or active not in SLOTS:
        return "a", None
    if state.get("trial") and prev in SLOTS and f"{slot_dir(prev)}/{SLOT_MANIFEST}" in files:
        return active, prev
    has_active = f"{slot_dir(active)}/{SLOT_MANIFEST}" in files
    return _other(active), active if has_active else None


def slot_matches(image: Image, slot: str, files: dict[str, tuple[int, str]]) -> bool:
    base = slot_dir(slot)
    want = {f"{base}/{rel}": _short(d) for rel, d in image.slot.items()}
    want[f"{base}/{SLOT_MANIFEST}"] = _short(image.manifest_bytes)
    have = {p: h for p, (_, h) in files.items() if p.startswith(base + "/")}
    return have == want


def _counterpart(path: str) -> str | None:
    if path.endswith(".mpy"):
        return path[:-4] + ".py"
    if path.endswith(".py") and path.count("/") > 1:
        return path[:-3] + ".mpy"
    return None


def deploy(board: Board, info: BoardInfo, image: Image, *, max_tries: int = MAX_TRIES,
           progress: Progress | None = None) -> DeployResult:
    """Deploy ``image`` (see the module docstring for the order of steps). ``info`` is a fresh probe."""
    t0 = time.monotonic()
    wire0 = board.repl.tx_bytes + board.repl.rx_bytes
    say = progress or (lambda step, frac: None)
    files = info.files
    state = info.state
    fixed_changed = {p: d for p, d in image.fixed.items() if files.get(p, (0, ""))[1] != _short(d)}
    stale_fixed = [c for p in image.fixed if (c := _counterpart(p)) and c in files and c not in image.fixed]
    active = state.get("active") if state else None
    if (active in SLOTS and slot_matches(image, active, files) and not fixed_changed and not stale_fixed
            and not (state or {}).get("rollback")):
        return DeployResult(slot=active, previous=(state or {}).get("previous"), version=image.version,
                            unchanged=True, kept=sorted(image.slot), bytes_image=image.size,
                            hashes=image_hashes(image, active),
                            wire_bytes=board.repl.tx_bytes + board.repl.rx_bytes - wire0,
                            seconds=time.monotonic() - t0)

    target, previous = choose_slot(state, files)
    base = slot_dir(target)
    source_base = slot_dir(active) if active in SLOTS and active != target else None
    want = {f"{base}/{rel}": d for rel, d in image.slot.items()}
    have_target = {p: h for p, (_, h) in files.items() if p.startswith(base + "/")}
    have_source = {p[len(source_base) + 1:]: h for p, (_, h) in files.items()
                   if source_base and p.startswith(source_base + "/")}
    result = DeployResult(slot=target, previous=previous, version=image.version, unchanged=False,
                          bytes_image=image.size)

    prep = [f"_R({f'{base}/{SLOT_MANIFEST}'!r})"]
    prep += [f"_R({p!r})" for p in sorted(have_target) if p not in want and not p.endswith("/" + SLOT_MANIFEST)]
    to_send: dict[str, bytes] = {}
    for path, data in want.items():
        h = _short(data)
        rel = path[len(base) + 1:]
        if have_target.get(path) == h:
            result.kept.append(rel)
        elif have_source.get(rel) == h and source_base:
            prep.append(f"_C({f'{source_base}/{rel}'!r},{path!r})")
            result.copied.append(rel)
        else:
            to_send[path] = data
            result.sent.append(rel)
    for path, data in fixed_changed.items():
        to_send[path + ".new"] = data
    say("prepare", 0.05)
    board.run("\n".join(prep), what="preparing the free app slot", timeout=60)

    total = sum(map(len, to_send.values())) or 1
    result.bytes_payload = sum(map(len, to_send.values()))
    board.write_files(to_send, compress=info.deflate,
                      progress=lambda done: say("write", 0.1 + 0.75 * done / total))

    say("verify", 0.88)
    expect = dict(want)
    expect.update({p + ".new": d for p, d in fixed_changed.items()})
    roots = [base, *(p + ".new" for p in fixed_changed)]
    if board.digest(roots) != expected_digest(expect):
        got = {p: h for p, (_, h) in board.hashes(roots).items()}  # which ones: a second, longer answer
        bad = sorted(p for p in expect if got.get(p) != _sha(expect[p]))
        extra = sorted(p for p in got if p not in expect)
        raise FlashError(
            f"verification failed: {len(bad)} file(s) differ on the board ({', '.join(bad[:3])})"
            + (f", {len(extra)} unexpected" if extra else ""),
            port=board.port, exit_code=EXIT_VERIFY,
            hint="the running app was not touched; run again. If it repeats, the board's flash may be failing",
        )

    say("switch", 0.95)
    new_state = boot_state(target, image.role, previous=previous, trial=True)
    new_state["max_tries"] = max_tries
    manifest = image.manifest_bytes.decode()
    commit = [f"_N({p + '.new'!r},{p!r})" for p in fixed_changed]
    commit += [f"_R({c!r})" for c in stale_fixed]
    commit.append(f"_J({f'{base}/{SLOT_MANIFEST}'!r},{manifest!r})")
    commit.append(f"_J({BOOT_STATE!r},{json.dumps(new_state)!r})")
    commit.append(f"print(json.dumps([_H({f'{base}/{SLOT_MANIFEST}'!r}),_H({BOOT_STATE!r})]))")
    out = board.call_json("\n".join(commit), what="switching to the new app")
    if out[0] != _sha(image.manifest_bytes):
        raise FlashError("verification failed: the new slot's app.json differs on the board", port=board.port,
                         exit_code=EXIT_VERIFY, hint="run again")
    result.hashes = image_hashes(image, target)
    result.wire_bytes = board.repl.tx_bytes + board.repl.rx_bytes - wire0
    result.seconds = time.monotonic() - t0
    say("deployed", 1.0)
    return result


def provision_board(board: Board, record: NodeRecord) -> str:
    """Write the node's ``/node.json`` atomically and check it by hash; returns its hash. Never logs the key."""
    text = json.dumps(record.node_config(), sort_keys=True)
    out = board.call_json(f"_J({NODE_CONFIG!r},{text!r})\nprint(json.dumps(_H({NODE_CONFIG!r})))",
                          what="writing the node's provisioning")
    want = _sha(text.encode())
    if out != want:
        raise FlashError("verification failed: /node.json differs on the board", port=board.port,
                         exit_code=EXIT_VERIFY, hint="run again")
    return want


def probe_roots() -> list[str]:
    return [*FIXED_ROOTS, *(slot_dir(s) for s in SLOTS)]
