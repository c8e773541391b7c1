"""Small source trees on disk for the build-pass tests (tests/test_inline_consts.py, tests/test_short_names.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hil_tests.emulator.runner import MicroPythonSession


def write_tree(root: Path, files: Mapping[str, str]) -> dict[str, Path]:
    """Write ``files`` (slot-relative path → text) under ``root``; returns board path (``/lib/...``) → file."""
    out = {}
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        out["/" + rel] = path
    return out


def probe_each(trees: Mapping[Path, Mapping[str, str]], probe: str) -> list[Any]:
    """Write each tree (root → files), run ``probe`` on a fresh MicroPython VM with the tree's ``lib`` mounted
    as ``/lib``, and return what the probe printed (one JSON value) for each tree, in order."""
    results = []
    for root, files in trees.items():
        write_tree(root, files)
        with MicroPythonSession(mounts={root / "lib": "/lib"}) as mp:
            results.append(json.loads(mp.run(probe).check().stdout))
    return results
