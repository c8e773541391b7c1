"""MicroPython heap and code size of the node apps, on the real MicroPython VM.

    .venv/bin/python benchmarks/firmware_heap.py [--quick] [--app streetlight --app medical]

One function per app (``APPS`` below) returns that app's ``<app>_*`` figures; adding an app is one entry.
The medical app's scenario lives in benchmarks/medical_heap.py.

Each app runs twice, once per node layout (benchmarks/vm_node_harness.py, docs/flashing.md): ``romfs``, the
production layout (cewire, node, drivers and the app as .mpy in the board's ROM partition, run in place as
frozen modules are), gives the headline keys ``<app>_heap_*``; ``files`` (the same .mpy files on the
filesystem, bytecode copied onto the heap) gives ``<app>_files_heap_*``. Every module the node imports is
counted: the harness (stand-in hardware and gateway) uses its own copies, loaded before the baseline.

Streetlight: the app's own objects (``streetlight.app.Streetlight`` with its schedule, light switch, faults,
energy, and the real ``node.link.Link`` + flash ``node.outbox.Outbox``) run on the MicroPython VM through a
simulated day on a virtual clock: dusk and dawn by the light sensor, program steps, a boost, a program change
by command, a lamp failure raised and cleared, a 2-hour gateway outage with its backlog, telemetry every
15 minutes. The hardware is a stand-in ``machine`` module (PWM, pins, I2C registers of the BH1750 and INA219
following the lamp, an in-memory UART), and so is ``binascii`` (a board's is C; the VM's pure-Python one
interns 45 names that no board has: benchmarks/vm_node_harness.py); the gateway runs on the host, and the
node's serial line ends in an in-memory port whose bytes cross over between steps. (Not the emulated board:
its ``machine`` glue keeps a JavaScript proxy per I2C/UART transfer that the GC never frees, which a real board
does not do -- see benchmarks/medical_heap.py.)

The WebAssembly port frees garbage only when a run returns to JavaScript (a gc.collect() inside a run frees
nothing), so the day is run one control step (the app's sample period: 1 s, 60 s with --quick) per VM run,
with a collection between runs; the gateway answers between two runs.

  streetlight_heap_boot_kb       live heap of the imported, built and booted app (after gc.collect())
  streetlight_heap_peak_kb       the day's peak: over all steps, the highest live heap at the start of a step plus
                                 all that step allocates (its garbage counted as if never freed: nothing is freed
                                 within a VM run, so this bounds the step's true peak from above); the same
                                 method as medical_heap_peak_kb
  streetlight_heap_live_peak_kb  highest live heap over the day (collections between steps)
  streetlight_step_alloc_max_kb  most bytes allocated by one control step
  streetlight_heap_sum_bound_kb  live peak + largest step allocation, even when they fall in different steps: a
                                 looser bound (the headline figure until 2026-11-21)
  streetlight_code_kb            of the live heap, what importing the modules left there (qstrs, function
                                 objects, module dictionaries; with ``files`` also the bytecode)
  streetlight_heap_data_peak_kb  the peak without that: the app's data at its worst
  streetlight_files_*            the same figures for the ``files`` layout
  streetlight_interned_names     names in MicroPython's string pool at the end of the day (the harness's 65
                                 included); the pool grows in doubling blocks on the heap, and the sixth
                                 (640 entries, 4.5 KB) opens at the 620th name
  streetlight_name_pool_blocks   how many blocks the pool has then
  streetlight_mpy_kb             .mpy size of the app package and its two drivers (mpy-cross)
  streetlight_image_kb           size of the ROMFS image (cewire, node, drivers, app)
  streetlight_wall_ms_per_simulated_h   host time per simulated hour (the whole app at its sample period)

The last line of stdout is one JSON object. Target: streetlight_heap_peak_kb <= 48 (an ESP32 with WiFi).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.vm_node_harness import GATEWAY, LAYOUTS, HostGateway, deploy, mpy_kb, write_harness
from cityedge.paths import FIRMWARE
from hil_tests.emulator.runner import MicroPythonSession

SL_MPY_SOURCES = [*sorted((FIRMWARE / "apps" / "streetlight").glob("*.py")),
                  FIRMWARE / "lib" / "drivers" / "bh1750.py", FIRMWARE / "lib" / "drivers" / "ina219.py"]
DAY_S = 86400
START = 1795003200  # 2026-11-18 12:00 UTC, Berlin

# the board's hardware as seen by the app (harness): lamp draw follows PWM duty and relay
MACHINE = '''
PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
SOFT_RESET = 5
class HW:
    duty = 0
    relay = 0
    lux_x10 = 50000
    health = 1
    volts_mv = 24000
class Pin:
    OUT = 3
    IN = 1
    IRQ_RISING = 1
    def __init__(self, n, mode=-1, value=None):
        self.n = n
        if value is not None:
            self.value(value)
    def value(self, v=None):
        if v is None:
            return HW.relay if self.n == 26 else 0
        if self.n == 26:
            HW.relay = 1 if v else 0
    def irq(self, *a):
        pass
class PWM:
    def __init__(self, pin, freq=1000, duty_u16=0):
        HW.duty = duty_u16
    def duty_u16(self, d):
        HW.duty = d
class I2C:
    def __init__(self, *a, **k):
        self.reg = bytearray(2)
    def writeto(self, addr, buf):
        return len(buf)
    def writeto_mem(self, addr, reg, buf):
        pass
    def readfrom_into(self, addr, buf):
        c = HW.lux_x10 * 12 // 100
        buf[0] = c >> 8
        buf[1] = c & 255
    def readfrom_mem_into(self, addr, reg, buf):
        # 40000 * duty // 65535 as duty * 625 // 1024 (within 1): 40000 * duty is a big int (heap) on MicroPython,
        # while reading the real chip's register allocates nothing, so neither may its stand-in
        ma = (600 + HW.duty * 625 // 1024) * HW.health * 1000 // HW.volts_mv if HW.relay else 0
        if reg == 2:
            v = (HW.volts_mv // 4) << 3
        elif reg == 4:
            v = ma * 10
        elif reg == 3:
            v = ma * 10 * (HW.volts_mv // 4) // 5000
        elif reg == 5:
            v = 4096
        else:
            v = 0
        buf[0] = (v >> 8) & 255
        buf[1] = v & 255
class UART:
    port = None
    def __init__(self, *a, **k):
        pass
    def write(self, b):
        return UART.port.write(b)
    def readinto(self, b):
        return UART.port.readinto(b)
class RTC:
    def datetime(self, t=None):
        pass
class WDT:
    def __init__(self, timeout=0):
        pass
    def feed(self):
        pass
def reset_cause():
    return PWRON_RESET
def reset():
    pass
'''

HARNESS = '''
import sys, gc
sys.path.insert(1, '/stub')  # before the VM's frozen modules: the harness's binascii is the node's
import machine
from machine import HW
''' + GATEWAY + '''machine.UART.port = node_port
class Clock:
    now = 0
def ticks():
    return Clock.now
for name in ('/streetlight.json', '/streetlight_energy.json', '/boot_state.json'):
    try:
        import os
        os.remove(name)
    except OSError:
        pass
'''

BASELINE = "gc.collect()\nBASE = gc.mem_alloc()\n"

# as main.py does on the board: the boot manager imports the app, then leaves the heap
IMPORT = "import bootmgr\nimport streetlight.app as A\nimport sys\ndel sys.modules['bootmgr'], bootmgr\n"
CODE = "gc.collect()\nCODE = gc.mem_alloc() - BASE\n"

APP = '''
import streetlight.app as A
A.unix_now = lambda: START + Clock.now // 1000
with open('/streetlight.json', 'w') as f:
    f.write('{"control_ms": %d, "clock": {"tz_min": 60}}')
node = {'node_id': 7, 'role': 'streetlight', 'lat': 52.52, 'lon': 13.4, 'key_id': 1, 'key': KEY.hex(),
        'link': {}, 'site': ''}
app = A.Streetlight(node, ticks=ticks)
app.control_step()
app.link.hello('streetlight', A.VERSION, 1, 1, ['meter', 'als'])
app.link.poll()
'''

BOOT = "gc.collect()\nBOOT = gc.mem_alloc() - BASE\n"
BOOT_OUT = "gw_out()\n"  # the HELLO and the first frames, to the gateway

# one simulated step per VM run (see the module doc); the scenario is keyed to the hour of the day (UTC)
STEP = '''
# highest live heap + own allocation of a step, highest live heap, largest allocation of one step; then when
# the step allocation maxima were
PEAK = [0, 0, 0]
def step(s, down):
    gw_in(down)  # the gateway's answer to the previous step (harness: before the node's share is counted)
    start = gc.mem_alloc()
    Clock.now = s * 1000
    h = (s // 3600 + 12) % 24  # UTC hour (the day starts at noon)
    HW.lux_x10 = 20 if (h >= 15 or h < 6) else 50000
    HW.health = 0 if (h == 19) else 1  # lamp failure for an hour
    gw_port.connected = node_port.connected = not (h == 22 or h == 23)  # 2 h outage
    # in the order of the board's tasks: link_task (frames in: ACKs, commands; then the gateway check),
    # control_task, report_task
    n = app.uart.readinto(memoryview(app.rx.buf)[app.rx.n:])
    app.rx.n += n or 0
    app.link.poll()
    app.check_gateway()
    app.control_step(True)
    if s % 900 == 0:
        app.telemetry()
    app.link.poll()
    burst = gc.mem_alloc() - start
    m = gc_base - BASE + burst  # live at the step's start + all it allocated (not the gateway's bytes)
    if m > PEAK[0]:
        PEAK[0] = m
    if burst > PEAK[2]:
        PEAK[2] = burst
        PEAK.append(s)  # when (for a look at what allocated most)
    gw_out()
'''

RUN = "gc.collect()\ngc_base = gc.mem_alloc()\nPEAK[1] = max(PEAK[1], gc_base - BASE)\nstep(%d, %r)\n"
REPORT = ("gc.collect()\nLIVE = max(PEAK[1], gc.mem_alloc() - BASE)\n"
          "print(BOOT, PEAK[2], LIVE, PEAK[0], CODE, A.__file__, app.faults.codes(), PEAK[3:])")
# MicroPython's string pool: how many names the VM interned (harness included) and in how many blocks
NAMES = "import micropython\nmicropython.qstr_info()\n"
# gateway commands during the day: simulated second -> (id, op, args)
COMMANDS: dict[int, tuple[int, str, dict[str, object]]] = {
    6 * 3600: (1, "boost", {"level": 1000, "duration": 600}),
    8 * 3600: (2, "program", {"programs": {"default": [["sunset", 90], ["23:00", 50], ["05:00", 90]]}}),
}


def measure_streetlight(quick: bool, layout: str = "romfs") -> dict[str, float | int]:
    """Run the streetlight app on the VM through a simulated day; return the streetlight_* figures."""
    period_ms = 60000 if quick else 1000  # the app's sample period (control_ms); 1 s is its default
    with tempfile.TemporaryDirectory() as d:
        stub = Path(d) / "stub"
        stub.mkdir()
        (stub / "machine.py").write_text(MACHINE)
        (stub / "board.py").write_text((FIRMWARE / "boards" / "esp32_devkit.py").read_text())
        write_harness(stub)
        mounts, image = deploy("streetlight", layout, Path(d))
        mounts[stub] = "/stub"
        image_kb = round(image.stat().st_size / 1024, 1) if image else 0.0
        with MicroPythonSession(mounts=mounts, timeout=600, romfs=image) as mp:
            mp.run(f"START = {START}\n" + HARNESS).check()
            mp.run(BASELINE).check()
            mp.run(IMPORT).check()
            mp.run(CODE).check()
            mp.run(APP % period_ms).check()
            mp.run(BOOT).check()
            mp.run(STEP).check()
            gw = HostGateway()
            down = gw.feed(mp.run(BOOT_OUT).check().stdout)
            t0 = time.monotonic()
            for s in range(period_ms // 1000, DAY_S + 1, period_ms // 1000):
                if s in COMMANDS:
                    down += gw.cmd(*COMMANDS[s])
                down = gw.feed(mp.run(RUN % (s, down)).check().stdout)
            wall = time.monotonic() - t0
            out = mp.run(REPORT).check().stdout.strip()
            pool = mp.run(NAMES).check().stdout
    fields = out.split(" ", 6)
    boot, burst, live, peak, code = (int(x) for x in fields[:5])
    frames = gw.frames
    where = fields[5]
    if frames < DAY_S // 900 or not where.startswith("/rom/" if image else "/lib/"):
        raise RuntimeError(f"the scenario did not run as planned: {frames} frames delivered, app from {where}")
    p = "streetlight_" if layout == "romfs" else "streetlight_files_"
    res: dict[str, float | int] = {
        p + "heap_boot_kb": round(boot / 1024, 1),
        p + "heap_peak_kb": round(peak / 1024, 1),
        p + "heap_live_peak_kb": round(live / 1024, 1),
        p + "step_alloc_max_kb": round(burst / 1024, 1),
        p + "heap_sum_bound_kb": round((live + burst) / 1024, 1),
        p + "code_kb": round(code / 1024, 1),
        p + "heap_data_peak_kb": round((peak - code) / 1024, 1),
    }
    if layout == "romfs":
        res.update({
            "streetlight_interned_names": int(pool.split("n_qstr=")[1].split(",")[0]),
            "streetlight_name_pool_blocks": int(pool.split("n_pool=")[1].split(",")[0]),
            "streetlight_image_kb": image_kb,
            "streetlight_mpy_kb": mpy_kb(SL_MPY_SOURCES),
            "streetlight_sample_period_ms": period_ms,
            "streetlight_frames_delivered": frames,
            "streetlight_wall_ms_per_simulated_h": round(1000 * wall / (DAY_S / 3600), 1),
        })
    return res


def measure_medical(quick: bool, layout: str = "romfs") -> dict[str, float | int]:
    from benchmarks.medical_heap import measure

    return measure(quick, layout)


# app name -> function(quick, layout) returning its "<app>_*" figures
APPS: dict[str, Callable[[bool, str], dict[str, float | int]]] = {
    "streetlight": measure_streetlight,
    "medical": measure_medical,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="coarser sampling / shorter scenarios (< 1 minute)")
    ap.add_argument("--app", action="append", choices=sorted(APPS), help="only this app (default: all)")
    args = ap.parse_args()
    t = time.monotonic()
    res: dict[str, object] = {"benchmark": "firmware_heap", "quick": args.quick}
    for name in args.app or list(APPS):
        for layout in LAYOUTS:
            res.update(APPS[name](args.quick, layout))
    res["target_streetlight_heap_peak_kb"] = 48
    res["target_medical_heap_peak_kb"] = 64
    res["wall_s"] = round(time.monotonic() - t, 1)
    res["cores"] = os.cpu_count()
    print(json.dumps(res))


if __name__ == "__main__":
    main()
