"""Errors that are meant for a person: a sentence, what to do, and an exit code.

Every subcommand raises :class:`CityedgeError` (or a subclass) for a failure a user can act on; the CLI
prints ``error: <message>`` and, if given, ``hint: <hint>``, and exits with ``exit_code``. Anything else that
escapes is an internal error: the CLI prints one sentence and writes the traceback to a crash log, so no
traceback ever reaches a technician or an operator.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path

EX_INTERNAL = 70  # EX_SOFTWARE: a bug, not something the user did


class CityedgeError(Exception):
    """A failure with a message a person can act on."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class ConfigError(CityedgeError):
    """A configuration file is missing, unreadable or invalid. The message names the file and the key."""

    exit_code = 78  # EX_CONFIG

    def __init__(self, path: str, key: str | None, problem: str, *, hint: str | None = None) -> None:
        where = f"{path}: {key}" if key else path
        super().__init__(f"{where}: {problem}", hint=hint)
        self.path = path
        self.key = key
        self.problem = problem


def crash_log() -> Path:
    """Where internal errors' tracebacks go: ``$XDG_STATE_HOME/cityedge/crash.log``."""
    base = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "cityedge"
    return base / "crash.log"


def record_crash(context: str = "") -> Path | None:
    """Append the exception being handled to the crash log, headed by the time, the command line and
    ``context``; returns the log's path, or None when it cannot be written."""
    log = crash_log()
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as fh:
            head = f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} cityedge {' '.join(sys.argv[1:])}"
            fh.write(f"{head} {context}\n" if context else f"{head}\n")
            fh.write(traceback.format_exc())
    except OSError:
        return None
    return log
