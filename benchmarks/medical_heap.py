"""MicroPython heap and code size of the medical node app: the medical part of benchmarks/firmware_heap.py
(run that; this module holds the scenario).

The app's own objects (``medical.app.MedicalNode`` with its PPG processor, alarm system, annunciator, and the
real ``node.link.Link`` + flash ``node.outbox.Outbox``) run on the MicroPython VM on a virtual clock through a
stretch with alarms: SpO2 low (escalating), desaturation (latched, then acknowledged), probe off, pulse rate
high with an audio pause, and a 2-minute gateway outage with a vitals backlog. The sensor is a stand-in that
serves the emulated probe's PPG (hil_tests/emulator/js/devices/ppg.mjs) from a preloaded buffer, measured with
the rest of the harness before the app is imported. The gateway is ``HostGateway`` on the host
(benchmarks/vm_node_harness.py: one cumulative ACK per simulated second's frames, as the gateway's ingest
acknowledges a batch), behind an in-memory port whose bytes are not the node's. The app runs
in either node layout (``romfs`` for the headline keys, ``files`` for ``medical_files_*``; see
benchmarks/vm_node_harness.py).

Why not the emulated board: its ``machine`` glue hands Python ``bytes`` to JavaScript on every I2C and UART
transfer, and the WebAssembly port keeps a proxy for each (about 45 bytes per call that the GC never frees),
which a real board does not do; on the emulated board the heap therefore grows with every transfer.

Figures:
  medical_heap_boot_kb       live heap of the imported and built app (after gc.collect())
  medical_heap_peak_kb       highest gc.mem_alloc() at the 1 s tick (live + that second's garbage; the app
                             collects every second)
  medical_heap_live_peak_kb  highest live heap right after those collections
  medical_heap_p50_kb / _p99_kb   the same per-second figure, median and 99th percentile (the peak is the second
                             the link flushes its backlog after the outage)
  medical_code_kb            of the live heap, what importing the modules (cewire, node, drivers, medical,
                             asyncio) left there: qstrs, function objects, module dictionaries; with the
                             ``files`` layout also the bytecode
  medical_files_*            the same figures for the ``files`` layout
  medical_mpy_kb             .mpy size of the app package and its two drivers (mpy-cross)
  medical_wall_ms_per_simulated_s  host time per simulated second of the whole app (100 Hz PPG, alarms, link)
  medical_simulated_s        virtual seconds run (3600 in the full run, 600 with --quick)
Target: medical_heap_peak_kb <= 64.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.vm_node_harness import GATEWAY, HostGateway, deploy, mpy_kb, write_harness
from cityedge.paths import FIRMWARE
from hil_tests.emulator.ppg_signal import synth
from hil_tests.emulator.runner import MicroPythonSession
from tools.flash.inline_consts import module_consts

MPY_SOURCES = [*sorted((FIRMWARE / "apps" / "medical").glob("*.py")),
               FIRMWARE / "lib" / "drivers" / "max30102.py", FIRMWARE / "lib" / "drivers" / "max30205.py"]

# one 10-minute cycle of the patient's signal (seconds, PPG model changes)
CYCLE_S = 600
EVENTS: list[tuple[float, dict[str, Any]]] = [
    (60.0, {"spo2": 86}),  # spo2_low after 10 s, escalates to high after 60 s
    (150.0, {"spo2": 74}),  # desaturation (latched)
    (180.0, {"spo2": 97}),
    (200.0, {"probe_on": False}),
    (230.0, {"probe_on": True, "hr_bpm": 140}),  # pr_high
    (290.0, {"hr_bpm": 75}),
]
ACK_AT, PAUSE_AT, CUT = 195, 240, (330, 450)

HARNESS = """
import gc, sys, time
sys.path.insert(1, '/stub')  # before the VM's frozen modules: the harness's binascii is the node's
from array import array
gc.collect()
with open('/data/sig.bin', 'rb') as f:
    SIG = array('i', f.read())
N = len(SIG) // 2
SECOND = array('i', [0] * 3600)  # every second's heap at its tick (preallocated: harness, not app)

class Clock:
    now = 0

def ticks():
    return Clock.now

class Sensor:
    k = 0
    def start(self):
        pass
    last_lost = 0
    def read_into(self, red, ir, off=0):
        k = self.k
        for i in range(10):  # 100 ms at 100 Hz
            j = ((k + i) % N) * 2
            red[i] = SIG[j]
            ir[i] = SIG[j + 1]
        self.k = k + 10
        return 10

class Thermo:
    def read_centi(self):
        return 3680

class Out:
    def value(self, v):
        pass
    def freq(self, f):
        pass
    def duty_u16(self, d):
        pass

""" + GATEWAY + """"""

# (the VM frees what a run allocated only once that run returned to JavaScript: measure in separate runs)
BASELINE = "gc.collect()\nBASE = gc.mem_alloc()\n"

IMPORT = """
import bootmgr  # as main.py does on the board: the boot manager imports the app, then leaves the heap
from medical.app import SETTINGS, MedicalNode
from medical.annunciator import Annunciator
from node import config
from node.link import Link
from node.outbox import Outbox
import sys
del sys.modules['bootmgr'], bootmgr
"""
CODE = "gc.collect()\nCODE = gc.mem_alloc() - BASE\n"

APP = """
settings = config.validate('/medical.json', {}, SETTINGS)
node = MedicalNode(settings, Sensor(), Thermo(), lambda: 3900, Annunciator(Out(), Out()), None, ticks=ticks)
outbox = Outbox('/outbox', quotas=(settings['outbox_events'], settings['outbox_vitals']))
node.link = Link(node_port, 7, (KEY, 1), outbox, on_cmd=node.on_cmd, on_link=node.on_link, ticks=ticks,
                 lost_ms=settings['link_lost_s'] * 1000, pace_ms=%d)
node.start_sensor()
node.link.hello('medical', '1.0.0', 1, 1)
"""

BOOT = "gc.collect()\nBOOT = gc.mem_alloc() - BASE\n"

# One simulated second per VM run: the WebAssembly port frees garbage only once a run has returned to
# JavaScript (and leaks a little on every asyncio sleep), so each run is one collection period of the app
# (it collects every second): mem_alloc() at the end of a run is the heap peak of that second, a collection at
# the start of the next run gives the live heap.
STEP = """
PEAK = [0, 0]  # highest mem_alloc() - BASE at a 1 s tick, highest live heap

def step(s, down):
    link = node.link
    gw_in(down)  # the gateway's answer to the previous second (harness: before the node's share is counted)
    a = gc.mem_alloc()
    c = s % CYCLE
    node_port.connected = not (CUT[0] <= c < CUT[1])
    if c == ACK_AT:
        node.on_cmd(1, 'ack', {})
    if c == PAUSE_AT:
        node.on_cmd(2, 'pause_audio', {'s': 60})
    for k in range(20):  # 50 ms steps: annunciator every step, FIFO and link every other
        Clock.now += 50
        if k & 1:
            node.acquire()
            link.poll()
        node.annunciate()
    node.second()
    m = gc.mem_alloc() - BASE - (a - gc_base)  # without the run's own code and the gateway's bytes
    SECOND[s] = m
    if m > PEAK[0]:
        PEAK[0] = m
    gw_out()
"""

RUN = "gc.collect()\ngc_base = gc.mem_alloc()\nPEAK[1] = max(PEAK[1], gc_base - BASE)\nstep(%d, %r)\n"
REPORT = ("gc.collect()\nLIVE = max(PEAK[1], gc.mem_alloc() - BASE)\nS = sorted(SECOND[:N_S])\n"
          "print(BOOT, PEAK[0], LIVE, node.sent_events, outbox.dropped[1], CODE,\n"
          "      S[N_S // 2], S[N_S * 99 // 100], sys.modules['medical.app'].__file__)")


def measure(quick: bool, layout: str = "romfs") -> dict[str, float | int]:
    """Run the app, laid out as ``layout``, on the VM through the alarm scenario; return the medical_* figures
    (``medical_files_*`` for the ``files`` layout)."""
    seconds = CYCLE_S if quick else 6 * CYCLE_S
    sig = synth(CYCLE_S, 100, events=EVENTS, seed=3)
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "sig.bin").write_bytes(sig.raw)
        stub = Path(d) / "stub"
        write_harness(stub)
        mounts, image = deploy("medical", layout, Path(d))
        mounts.update({d: "/data", stub: "/stub"})
        image_kb = round(image.stat().st_size / 1024, 1) if image else 0.0
        with MicroPythonSession(mounts=mounts, timeout=600, romfs=image) as mp:
            # the app's main() paces the link by its LINK_PACE_MS, a constant the build inlines (it is no name
            # on the board): the harness reads it from the source
            pace_ms = module_consts((FIRMWARE / "apps" / "medical" / "app.py").read_text())["LINK_PACE_MS"]
            for part in (HARNESS, BASELINE, IMPORT, CODE, APP % pace_ms, BOOT):
                mp.run(part).check()
            mp.run(f"CYCLE = {CYCLE_S}\nACK_AT = {ACK_AT}\nPAUSE_AT = {PAUSE_AT}\nCUT = {CUT!r}\n" + STEP).check()
            gw = HostGateway()
            down = gw.feed(mp.run("gw_out()").check().stdout)
            t0 = time.monotonic()
            for s in range(seconds):
                down = gw.feed(mp.run(RUN % (s, down)).check().stdout)
            wall = time.monotonic() - t0
            out = mp.run(f"N_S = {seconds}\n" + REPORT).check().stdout.split()
    boot, peak, live, events, dropped, code, p50, p99 = (int(x) for x in out[:8])
    frames = gw.frames
    where = out[8]
    if frames < seconds // 8 or events < 6 or not where.startswith("/rom/" if image else "/lib/"):
        raise RuntimeError(f"the scenario did not run as planned: {frames} frames, {events} events, app {where}")
    p = "medical_" if layout == "romfs" else "medical_files_"
    res: dict[str, float | int] = {
        p + "heap_boot_kb": round(boot / 1024, 1),
        p + "heap_peak_kb": round(peak / 1024, 1),
        p + "heap_live_peak_kb": round(live / 1024, 1),
        p + "heap_p50_kb": round(p50 / 1024, 1),
        p + "heap_p99_kb": round(p99 / 1024, 1),
        p + "code_kb": round(code / 1024, 1),
    }
    if layout == "romfs":
        res.update({
            "medical_image_kb": image_kb,
            "medical_mpy_kb": mpy_kb(MPY_SOURCES),
            "medical_wall_ms_per_simulated_s": round(1000 * wall / seconds, 1),
            "medical_simulated_s": seconds,
            "medical_frames_delivered": frames,
            "medical_alarm_events": events,
            "medical_vitals_dropped": dropped,
        })
    return res
