"""Small source trees on disk for the build-pass tests (tests/test_inline_consts.py, tests/test_short_names.py)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def write_tree(root: Path, files: Mapping[str, str]) -> dict[str, Path]:
    """Write ``files`` (slot-relative path → text) under ``root``; returns board path (``/lib/...``) → file."""
    out = {}
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        out["/" + rel] = path
    return out
