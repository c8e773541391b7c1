"""The flashing ledger: one JSON line per board and run, appended, never rewritten.

Who, when, which port and chip, firmware and app versions, file hashes and the result; never a key
(the provisioning manifest holds keys). Format in docs/flashing.md, "Ledger".
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from cityedge.errors import ConfigError

FORMAT = 1


def default_ledger() -> Path:
    base = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "cityedge"
    return base / "flash-ledger.jsonl"


def technician() -> str:
    """Who is flashing: ``$CITYEDGE_TECHNICIAN`` or user@host."""
    name = os.environ.get("CITYEDGE_TECHNICIAN")
    if name:
        return name
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def append(path: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Append ``record`` (plus format, time and technician) as one line; flushed to disk before returning."""
    entry = {"format": FORMAT, "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "who": technician(),
             **record}
    if any(k == "key" for k in entry) or "key" in (entry.get("node") or {}):
        raise ValueError("a ledger record must not carry a key")
    line = json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    except OSError as exc:
        raise ConfigError(str(path), None, f"cannot write the ledger: {exc.strerror}",
                          hint="choose another file with --ledger") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # boards of a batch finish at the same time
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return entry


def read(path: Path) -> list[dict[str, Any]]:
    """All records (a torn last line from a crash is skipped)."""
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
