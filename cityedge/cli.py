"""The ``cityedge`` command: one entry point, one subcommand per part of the system.

Each part registers its own subcommand from its own package (``register(subparsers)``), so this module
only knows where they live. A part that is not installed is left out of the command rather than breaking it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from cityedge import __version__
from cityedge.errors import EX_INTERNAL, CityedgeError, record_crash

# subcommand -> module providing ``register(subparsers)``
SUBCOMMANDS: dict[str, str] = {
    "demo": "cityedge.demo",
    "gateway": "gateway.cli",
    "ops": "gateway.ops.cli",
    "vision": "gateway.vision.cli",
    "flash": "tools.flash.cli",
    "board": "hil_tests.emulator.cli",
}

EX_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cityedge",
        description="cityedge: node firmware, gateway agent, flashing tool and emulated boards.",
    )
    parser.add_argument("--version", action="version", version=f"cityedge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMANDS.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # that part is not part of this installation
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        result = func(args)
        return int(result or 0)
    except CityedgeError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EX_INTERRUPTED
    except Exception as exc:  # the last line of defence: a sentence for the user, the details in a file
        log = record_crash()
        where = f" (details in {log})" if log else ""
        print(f"error: internal error: {type(exc).__name__}: {exc}{where}", file=sys.stderr)
        return EX_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
