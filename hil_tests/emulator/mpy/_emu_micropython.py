# mypy: ignore-errors
# MicroPython code: the board's `micropython` module. The port's built-in module is read-only and lacks
# kbd_intr(), which mpremote's `mount` calls; this module adds it and forwards everything else.
import _hw

_real = __import__("micropython")


def kbd_intr(c):
    # mpremote's mount protocol disables Ctrl-C while it exchanges binary data over stdio
    _hw.set_binary_stdout(c == -1)


def __getattr__(name):
    return getattr(_real, name)
