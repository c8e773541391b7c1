# mypy: ignore-errors
# MicroPython code: runs inside the emulated board's VM at every boot, before boot.py. It makes the
# WebAssembly port look like a board: /flash as the root filesystem with board errno values, a CPU-free
# time.sleep that Ctrl-C interrupts, the board's RTC, input(), and the asyncio pieces the port lacks
# (asyncio.run, ThreadSafeFlag, UART streams). The `machine` module is in machine.py next to this file.
import sys

import _hw

# Emscripten errno -> the errno a MicroPython board raises
_ERRNO = {44: 2, 20: 17, 54: 20, 31: 21, 55: 39, 28: 22, 2: 13, 10: 16, 8: 9, 51: 28, 63: 1}


def _oserror(e):
    code = e.errno if hasattr(e, "errno") else (e.args[0] if e.args else 0)
    return OSError(_ERRNO.get(code, code))


class FlashVfs:
    """The board's root filesystem: /flash of the VM (written through to the host folder), board errnos."""

    def __init__(self, inner):
        self._v = inner

    def _call(self, name, *args):
        try:
            return getattr(self._v, name)(*args)
        except OSError as e:
            raise _oserror(e) from None

    def mount(self, readonly, mkfs):
        return self._call("mount", readonly, mkfs)

    def umount(self):
        return self._call("umount")

    def open(self, path, mode):
        return self._call("open", path, mode)

    def ilistdir(self, path):
        entries = []
        base = path.rstrip("/")
        for e in self._call("ilistdir", path):
            size = 0
            if e[1] == 0x8000:
                try:
                    size = self._v.stat(base + "/" + e[0])[6]
                except OSError:
                    pass
            entries.append((e[0], e[1], e[2], size))
        return iter(entries)

    def chdir(self, path):
        return self._call("chdir", path)

    def getcwd(self):
        return self._call("getcwd")

    def mkdir(self, path):
        return self._call("mkdir", path)

    def rmdir(self, path):
        return self._call("rmdir", path)

    def remove(self, path):
        return self._call("remove", path)

    def rename(self, old, new):
        # the port's VfsPosix.rename passes the new name for both paths; rename in the JS filesystem instead
        err = _hw.fs_rename("/flash/" + old.lstrip("/"), "/flash/" + new.lstrip("/"))
        if err:
            raise OSError(_ERRNO.get(err, err))

    def stat(self, path):
        return self._call("stat", path)

    def statvfs(self, path):
        # a 2 MiB littlefs partition with 4 KiB blocks, as on an ESP32 with 4 MiB flash
        return (4096, 4096, 512, 400, 400, 0, 0, 0, 0, 255)


def _sleep_ms(ms):
    if _hw.sleep_ms(ms):
        raise KeyboardInterrupt


def _patch_time():
    import time

    time.sleep_ms = _sleep_ms
    time.sleep = lambda s: _sleep_ms(s * 1000)
    time.sleep_us = lambda us: _sleep_ms(us / 1000)
    raw_time = time.time
    raw_localtime = time.localtime
    raw_gmtime = time.gmtime

    def now():
        return int(raw_time()) + int(_hw.get_rtc_offset()) // 1000  # an int, as on an ESP32

    time.time = now
    time.time_ns = lambda: (int(_hw.now_ms()) + int(_hw.get_rtc_offset())) * 1000000
    time.localtime = lambda secs=None: raw_localtime(now() if secs is None else secs)
    time.gmtime = lambda secs=None: raw_gmtime(now() if secs is None else secs)


def _input(prompt=""):
    sys.stdout.write(prompt)
    line = []
    while True:
        c = sys.stdin.read(1)
        if c in ("\r", "\n", ""):
            sys.stdout.write("\r\n")
            return "".join(line)
        if c == "\x03":
            raise KeyboardInterrupt
        if c in ("\x7f", "\x08"):
            if line:
                line.pop()
                sys.stdout.write("\x08 \x08")
            continue
        line.append(c)
        sys.stdout.write(c)


# ---- asyncio: what boards have and the WebAssembly port lacks --------------------------------------------
class AppStarted(BaseException):
    """asyncio.run() called below module level: the host keeps the app running as a task."""


_main_task = None


class ThreadSafeFlag:
    """asyncio.ThreadSafeFlag: set() from an IRQ or callback, one waiter wakes and the flag clears."""

    def __init__(self):
        import asyncio

        self._ev = asyncio.Event()

    def set(self):
        self._ev.set()

    def clear(self):
        self._ev.clear()

    async def wait(self):
        await self._ev.wait()
        self._ev.clear()


class Stream:
    """asyncio.StreamReader / StreamWriter over a machine.UART (or anything with read/write/any)."""

    def __init__(self, s, e=None):
        self.s = s
        self.e = e or {}
        self.out_buf = b""

    def get_extra_info(self, v):
        return self.e[v]

    async def _wait(self):
        import asyncio

        flag = getattr(self.s, "_rx_flag", None)
        if flag is not None:
            await flag.wait()
        else:
            await asyncio.sleep_ms(5)

    def _read_now(self, n):
        data = self.s.read(n) if n is not None and n >= 0 else self.s.read()
        return data

    async def read(self, n=-1):
        while True:
            data = self._read_now(n)
            if data:
                return data
            await self._wait()

    async def readinto(self, buf):
        while True:
            n = self.s.readinto(buf)
            if n:
                return n
            await self._wait()

    async def readexactly(self, n):
        r = b""
        while n:
            data = await self.read(n)
            r += data
            n -= len(data)
        return r

    async def readline(self):
        line = b""
        while True:
            part = self.s.readline()
            if part:
                line += part
                if line.endswith(b"\n"):
                    return line
            else:
                await self._wait()

    def write(self, buf):
        self.out_buf += bytes(buf)

    async def drain(self):
        buf, self.out_buf = self.out_buf, b""
        if buf:
            self.s.write(buf)

    async def awrite(self, buf, off=0, sz=-1):
        if off or sz != -1:
            buf = memoryview(buf)[off : (off + sz) if sz != -1 else None]
        self.write(buf)
        await self.drain()

    async def awritestr(self, s):
        await self.awrite(s.encode())

    def close(self):
        pass

    async def wait_closed(self):
        pass

    async def aclose(self):
        pass

    async def __aenter__(self):
        return self

    async def __aexit__(self, *a):
        pass


async def _emu_main(coro):
    """A module-level ``asyncio.run(coro)`` in main.py or a raw-REPL program: run it to completion."""
    import asyncio

    global _main_task
    _main_task = asyncio.create_task(coro)
    return await _main_task


def _run(coro):
    """``asyncio.run`` called below module level: start the app as a task and let the host keep it alive."""
    import asyncio

    global _main_task
    _main_task = asyncio.create_task(coro)
    raise AppStarted


def stop_tasks():
    """Ctrl-C: every task stops, as when KeyboardInterrupt ends a board's event loop."""
    import asyncio

    asyncio.core._task_queue = asyncio.core.TaskQueue()
    asyncio.core.cur_task = None


def kick_loop():
    """After a raw-REPL program: tasks it left queued run in the background (a board keeps no loop at the REPL;
    the emulator does, for tests). The port's loop runs from a JS timer that create_task() does not arm while
    ``cur_task`` looks set, and a Ctrl-C that escaped the loop can leave it set: between two runs no task is
    current, so clear it and arm the timer again (rescheduling a pending timer only replaces it)."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None or asyncio.core._task_queue.peek() is None:
        return
    asyncio.core.cur_task = None
    asyncio.core._schedule_run_iter(0)


def _patch_asyncio():
    import asyncio

    asyncio.run = _run
    asyncio._emu_main = _emu_main
    asyncio.ThreadSafeFlag = ThreadSafeFlag
    asyncio.Stream = Stream
    asyncio.StreamReader = Stream
    asyncio.StreamWriter = Stream


def _uname():
    from collections import namedtuple

    u = namedtuple("uname_result", ("sysname", "nodename", "release", "version", "machine"))
    ver = sys.implementation.version
    rel = f"{ver[0]}.{ver[1]}.{ver[2]}"
    return u("esp32", "esp32", rel, "v" + rel + " (cityedge emulated board)", "ESP32 module (emulated) with ESP32")


class _VfsShim:
    """The ``vfs`` module as firmware sees it (``sys.modules["vfs"]``): the VM's own, with ``rom_ioctl``
    writes that reach the ROM partition on the host (the port's returns -22 for them). A board without a
    ROMFS partition (``rom_kb=0``) gets a ``vfs`` without ``rom_ioctl`` and ``VfsRom``, as stock firmware."""

    def __init__(self, real):
        self.__name__ = "vfs"
        self.mount = real.mount
        self.umount = real.umount
        self.VfsPosix = real.VfsPosix
        if _hw.rom_size:
            self.VfsRom = real.VfsRom
            self._rom = real.rom_ioctl
            self.rom_ioctl = self._ioctl

    def _ioctl(self, op, rom_id=0, *args):
        # ops as the ESP32/RP2 ports: 1 count, 2 segment (a memoryview of the partition), 3 prepare (erase),
        # 4 write, 5 complete, 6 block size; errors are -EINVAL
        if op == 1:
            return 1
        if rom_id != 0:
            return -22
        if op == 2:
            return self._rom(2, 0)
        if op == 3 and len(args) in (1, 2):
            off, n = (0, args[0]) if len(args) == 1 else args
            err = _hw.rom_erase(off, n)
            return err if err else 4  # the smallest write the partition takes
        if op == 4 and len(args) == 2:
            import binascii

            return _hw.rom_write(args[0], binascii.hexlify(args[1]).decode())
        if op == 5:
            return 0
        if op == 6:
            return _hw.rom_block
        return -22


def setup():
    import builtins

    import _emu_micropython
    import vfs

    _patch_time()
    _patch_asyncio()
    builtins.input = _input
    sys.modules["micropython"] = _emu_micropython
    import machine  # noqa: F401  (registered in sys.modules before /_emu disappears from view)

    vfs.umount("/")
    vfs.mount(FlashVfs(vfs.VfsPosix("/flash")), "/")
    sys.modules["vfs"] = _VfsShim(vfs)
    import os

    os.uname = _uname  # the port has none; tools identify a board by it
    os.chdir("/")
    # MicroPython put /rom and /rom/lib on sys.path when it mounted a ROMFS image: keep them, as a board does
    rom = [p for p in sys.path if p.startswith("/rom")] if _hw.rom_size else []
    sys.path.clear()
    sys.path.extend(("", ".frozen"))
    sys.path.extend(rom)  # MicroPython has no * in list displays
    sys.path.append("/lib")
