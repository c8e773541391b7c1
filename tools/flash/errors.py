"""Every failure a technician can meet, as a sentence, what to do, and a documented exit code.

The exit codes are part of the tool's interface (docs/flashing.md, "Exit codes"); scripts rely on them.
"""

from __future__ import annotations

from cityedge.errors import EX_INTERNAL, CityedgeError

EXIT_OK = 0
EXIT_USAGE = 2  # bad arguments, unknown role
EXIT_NO_BOARD = 3  # no board found, or several and none chosen
EXIT_PORT_BUSY = 4  # another process holds the port
EXIT_PERMISSION = 5  # no permission to open the port (dialout group)
EXIT_PORT_GONE = 6  # the port does not exist or disappeared
EXIT_NO_REPL = 7  # the board does not answer on its MicroPython REPL
EXIT_MPY_VERSION = 8  # the board's MicroPython cannot load the compiled app
EXIT_FIRMWARE = 9  # flashing the MicroPython image failed (download mode, esptool, UF2)
EXIT_VERIFY = 10  # files on the board do not match what was sent
EXIT_BOOT = 11  # the node did not boot the new app (no HELLO, rolled back, safe mode)
EXIT_SELFTEST = 12  # the role's self-test failed
EXIT_BOARD = 13  # the board raised an error while running a step (e.g. flash full)
EXIT_BATCH = 14  # a batch finished and at least one board failed
EXIT_ROMFS = 15  # --layout romfs: the board's MicroPython has no ROMFS partition, or the image does not fit
EXIT_CONFIG = 78  # manifest or ledger unusable (cityedge.errors.ConfigError)
EXIT_INTERNAL = EX_INTERNAL  # a bug (70): the traceback is in the crash log

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_USAGE: "bad arguments or unknown role",
    EXIT_NO_BOARD: "no board found, or several and none chosen",
    EXIT_PORT_BUSY: "the serial port is held by another process",
    EXIT_PERMISSION: "no permission to open the serial port",
    EXIT_PORT_GONE: "the serial port does not exist or disappeared",
    EXIT_NO_REPL: "the board does not answer on its MicroPython REPL",
    EXIT_MPY_VERSION: "the board's MicroPython cannot load this app's .mpy files",
    EXIT_FIRMWARE: "flashing the MicroPython image failed",
    EXIT_VERIFY: "files on the board do not match what was sent",
    EXIT_BOOT: "the node did not boot the new app",
    EXIT_SELFTEST: "the role's self-test failed",
    EXIT_BOARD: "the board reported an error during a step",
    EXIT_BATCH: "at least one board of a batch failed",
    EXIT_ROMFS: "the board has no ROMFS partition, or the app image does not fit in it",
    EXIT_CONFIG: "the manifest or the ledger is unusable",
    EXIT_INTERNAL: "internal error (in a batch: that board only); the details are in the crash log",
}


class FlashError(CityedgeError):
    """A failure of one flashing step on one port."""

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int = 1, port: str | None = None) -> None:
        super().__init__(f"{port}: {message}" if port else message, hint=hint, exit_code=exit_code)
        self.port = port
        self.reason = message
