"""Which host files make up a node's flash image, and where they go on the board.

This is the one place that knows the board's file layout; the emulated boards' strategies, the flashing
tool and the benchmarks all ask it. The layout, relative to the board's flash root:

    /boot.py, /main.py            firmware/boot.py, firmware/main.py (start-up, app selection)
    /lib/<pkg>/...                firmware/lib/<pkg>/ (shared node libraries: cewire, node, drivers)
    /lib/<role>/...               firmware/apps/<role>/ (the app package; ``<role>.main()`` is a coroutine)
    /lib/board.py                 firmware/boards/<board>.py (pin map)
    /node.json                    provisioning (written by the flashing tool, never part of the app)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from cityedge.errors import CityedgeError
from cityedge.paths import FIRMWARE

ROLES: tuple[str, ...] = ("streetlight", "medical", "bare")
DEFAULT_BOARD = "esp32_devkit"
_SKIP = {"__pycache__"}


class UnknownRoleError(CityedgeError):
    def __init__(self, role: str) -> None:
        super().__init__(f"unknown role {role!r}", hint=f"choose one of: {', '.join(ROLES)}", exit_code=2)


def _walk(host_dir: Path, board_dir: str) -> Iterator[tuple[str, Path]]:
    for path in sorted(host_dir.rglob("*.py")):
        if _SKIP.intersection(path.parts) or any(p.startswith(".") for p in path.relative_to(host_dir).parts):
            continue
        yield f"{board_dir}/{path.relative_to(host_dir).as_posix()}", path


def app_image(role: str, board: str = DEFAULT_BOARD, firmware: Path = FIRMWARE) -> dict[str, Path]:
    """Map board paths (``/lib/cewire/frame.py``) to host source files for a node of ``role``."""
    if role not in ROLES:
        raise UnknownRoleError(role)
    image: dict[str, Path] = {}
    for name in ("boot.py", "main.py"):
        if (firmware / name).exists():
            image[f"/{name}"] = firmware / name
    for pkg in sorted(p for p in (firmware / "lib").iterdir() if p.is_dir() and p.name not in _SKIP):
        image.update(_walk(pkg, f"/lib/{pkg.name}"))
    if role != "bare":
        image.update(_walk(firmware / "apps" / role, f"/lib/{role}"))
    pins = firmware / "boards" / f"{board}.py"
    if pins.exists():
        image["/lib/board.py"] = pins
    return image


def install_into(flash_dir: Path, role: str, board: str = DEFAULT_BOARD) -> list[str]:
    """Copy the app image for ``role`` as source files into a host folder that backs an emulated flash."""
    written = []
    for board_path, src in app_image(role, board).items():
        dst = flash_dir / board_path.lstrip("/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())
        written.append(board_path)
    return written
