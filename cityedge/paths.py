"""Where the project's own files are, whether run from a source tree or an installed copy."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
MODELS = ROOT / "models"
NODE_MODULES = ROOT / "node_modules"
