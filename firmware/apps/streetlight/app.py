"""The streetlight controller: hardware, control loop, reporting and commands (``streetlight.main()``).

Tasks (asyncio), each with one job:

* control -- every ``control_ms``: read the light sensor and the meter, decide the level (program, clock,
  sensor policy, overrides), drive the fade on the PWM, integrate energy, judge faults; faster (50 ms)
  while a fade runs so the ramp is smooth;
* link -- serve the gateway link (node.link.Link: outbox, retransmission, ACK/TIME/CMD);
* report -- telemetry every ``telemetry_s``, energy counters to flash every ``energy_save_s``;
* watchdog -- feeds the hardware WDT only while control and link keep beating (node.supervisor).

Without a gateway the node keeps following its program and clock, and the outbox keeps its reports.
Without a valid clock (never got TIME, RTC lost) it switches by the light sensor; without both it keeps the
lamp on at the program's first level (a lit street is the safe failure).
"""

import asyncio
import gc
import time

import board  # type: ignore[import-not-found]  # /lib/board.py, the pin map deployed per board
import machine
from cewire import codes
from cewire import payloads as P
from cewire.frame import PRIO_LOW, PRIO_MEDIUM, PRIO_NONE
from drivers.bh1750 import BH1750
from drivers.ina219 import INA219
from micropython import const
from node import config, supervisor
from node.link import Link
from node.outbox import Outbox

from streetlight import curves, faults, overrides, schedule, settings

VERSION = "1.0.0"
_UNIX_2000 = const(946684800)
_CLOCK_VALID = const(1600000000)  # a Unix time before this means the RTC was never set
_FAST_MS = const(50)
_SETTLE_MS = const(3000)  # after a fade, before power readings are judged
_LINK_IDLE_MS = const(10000)  # link task wake-up when nothing is in flight (RX wakes it at once)
_LINK_ALONE_MS = const(20000)  # ... while the gateway is lost (retransmissions are 60 s apart then)
# a telemetry backlog (after an outage) goes out one frame per _LINK_PACE_MS, so the garbage of reading,
# signing and acknowledging frames between two collections stays small; events are never paced (node.link)
_LINK_PACE_MS = const(200)
_WD_CONTROL = const(0)
_WD_LINK = const(1)
_RESETS = {"power_on": P.RESET_POWER_ON, "hard": P.RESET_HARD, "watchdog": P.RESET_WDT,
           "deepsleep": P.RESET_DEEPSLEEP, "soft": P.RESET_SOFT, "command": P.RESET_SOFT}
_KINDS = {"boost": overrides.BOOST, "manual": overrides.MANUAL, "maintenance": overrides.MAINTENANCE}
_EPOCH = _UNIX_2000 if time.gmtime(0)[0] == 2000 else 0


def log(msg):
    print("streetlight: " + msg)


def unix_now():
    """Unix seconds from the RTC, or 0 while the clock is not set."""
    t = int(time.time()) + _EPOCH
    return t if t > _CLOCK_VALID else 0


class RxPort:
    """The link UART as node.link.Link sees it: writes go straight out; reads return what :meth:`Streetlight.
    link_task` received while it slept on the UART, so the link costs no wake-ups while nothing arrives."""

    def __init__(self, uart, size=256):
        self.uart = uart
        self.buf = bytearray(size)
        self.n = 0

    def write(self, data):
        return self.uart.write(data)

    def readinto(self, buf):
        n = self.n
        if not n:
            return None
        m = n if n < len(buf) else len(buf)
        buf[:m] = memoryview(self.buf)[:m]
        if m < n:
            self.buf[: n - m] = memoryview(self.buf)[m:n]
        self.n = n - m
        return m


class Streetlight:
    def __init__(self, node, settings_path=settings.PATH, outbox_root="/outbox", ticks=None):
        self.node = node
        self._ticks = ticks or time.ticks_ms  # benchmarks pass a virtual clock
        self.settings_path = settings_path
        self.problems = []  # type: list
        self.s, self.raw = settings.load(settings_path, log, self.problems)
        self.tz_from_gateway = 0
        self._t0 = self._ticks()
        self.uptime_ms = 0
        # hardware
        self.pwm = machine.PWM(machine.Pin(board.PIN_LAMP_PWM), freq=1000, duty_u16=0)
        self.relay = machine.Pin(board.PIN_LAMP_RELAY, machine.Pin.OUT, value=0)
        self.i2c = machine.I2C(board.I2C_ID, scl=machine.Pin(board.I2C_SCL), sda=machine.Pin(board.I2C_SDA),
                               freq=board.I2C_FREQ)
        self.als = BH1750(self.i2c, board.ADDR_BH1750)
        self.meter = INA219(self.i2c, board.ADDR_INA219, self.s["meter.shunt_mohm"], self.s["meter.max_ma"])
        self._als_started = self._meter_started = False
        self.pir = None
        # logic
        self.ov = overrides.Overrides()
        self.sample = faults.Sample()
        self.sample.sensor_ok = True  # until a reading says otherwise
        self.energy = faults.Energy()
        self.energy.load()
        self.fader = curves.Fader()
        self.duty = -1
        self.level = 0
        self.lux_x10 = -1
        self._settled_at = 0
        self._last_energy_ms = 0
        self._apply_settings()
        # link
        link_cfg = node.get("link") or {}
        self.outbox = Outbox(outbox_root, quotas=(128, 256))
        self.uart = machine.UART(link_cfg.get("uart", board.LINK_UART_ID), link_cfg.get("baud", board.LINK_BAUD),
                                 tx=machine.Pin(board.LINK_TX), rx=machine.Pin(board.LINK_RX), timeout=0)
        self.rx = RxPort(self.uart)
        self.link = Link(self.rx, node["node_id"], (bytes.fromhex(node["key"]), node["key_id"]),
                         self.outbox, on_cmd=self.on_cmd, on_time=self.on_time, on_link=self.check_gateway,
                         clock=unix_now, poll_ms=link_cfg.get("poll_ms", 100), ticks=self._ticks,
                         lost_ms=link_cfg.get("lost_s", 90) * 1000, pace_ms=link_cfg.get("pace_ms", _LINK_PACE_MS))
        stale = max(_LINK_IDLE_MS + 15000, 3 * self.s["control_ms"])
        self.wd = supervisor.Watchdog(2, timeout_ms=stale + 5000, stale_ms=stale)
        self._wdt_test = False
        self._errors = [0, 0]
        self._lost_raised = False
        self._waiting = 0
        self._progress_ms = 0
        self._last_save_s = 0

    # --- setup
    def _apply_settings(self, faults_changed=True):
        """(Re)build everything that depends on the settings; called at boot and after a change."""
        s = self.s
        self.curve = curves.CURVE_NAMES.index(s["dimming.curve"])
        self.min_out = int(s["dimming.min_pct"] * 10)
        self.fader.fade_ms = int(s["dimming.fade_s"] * 1000)
        self.policy = schedule.POLICY_NAMES.index(s["policy"])
        self.switch = schedule.LightSwitch(s["sensor.on_lux"], s["sensor.off_lux"], s["sensor.dwell_s"])
        old = getattr(self, "faults", None)
        if old is None or faults_changed:
            thresholds = {}
            for key in s:
                if key.startswith("faults."):
                    thresholds[key[7:]] = s[key]
            self.faults = faults.Faults(**thresholds)
            if old is not None:
                self.faults.active[:] = old.active  # keep what is raised: no second raise, a clear still comes
        self._rebuild_schedule()
        if s["pir.enabled"] and self.pir is None:
            self.pir = machine.Pin(board.PIN_PIR, machine.Pin.IN)
            self.pir.irq(self._on_motion, machine.Pin.IRQ_RISING)

    def _rebuild_schedule(self):
        s = self.s
        lat, lon = self.node.get("lat"), self.node.get("lon")
        tz = s["clock.tz_min"]
        dst = s["clock.dst"]
        if tz is None:
            tz, dst = self.tz_from_gateway, "none"
        if lat is None or lon is None:
            self.sched = None
            return
        args = (s["programs"], s["calendar"], s["holidays"], s["clock.on"], s["clock.off"], tz, dst)
        sched = getattr(self, "sched", None)
        if sched is None:
            self.sched = schedule.Schedule(lat, lon, *args)
        else:
            sched.set(*args)  # same place: the schedule keeps the sun times it computed

    # --- events from the link
    def on_time(self, unix_s, ms, tz):
        first = unix_now() == 0
        tm = time.gmtime(unix_s - _EPOCH)
        machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6], tm[3], tm[4], tm[5], ms * 1000))
        if tz is not None and tz != self.tz_from_gateway:
            self.tz_from_gateway = tz
            if self.s["clock.tz_min"] is None:
                self._rebuild_schedule()
        if first:
            self.event(codes.CLOCK_SET, P.EV_INFO)

    def check_gateway(self, up=True):
        """gateway_lost: reports wait and no ACK has released any of them for ``lost_s`` (a quiet link with
        nothing to send is not lost); cleared when ACKs flow again. Also the link's ``on_link`` callback
        (``up``: the link came up; going down is judged here by the ACKs, not by that news)."""
        if not up:
            return
        waiting = self.link.backlog()
        waiting = waiting[0] + waiting[1]
        now = self.uptime_ms
        if waiting == 0 or waiting < self._waiting:
            self._progress_ms = now  # nothing owed, or the gateway acknowledged something
        self._waiting = waiting
        stuck = waiting and now - self._progress_ms >= self.link.lost_ms
        if stuck and not self._lost_raised:
            self._lost_raised = True
            log("gateway lost: running alone, %d reports kept" % waiting)
            self.event(codes.GATEWAY_LOST, P.EV_RAISED, PRIO_LOW)
        elif not stuck and self._lost_raised:
            self._lost_raised = False
            log("gateway back")
            self.event(codes.GATEWAY_LOST, P.EV_CLEARED)

    def _on_motion(self, pin):
        if self.s["pir.enabled"]:
            self.ov.set(overrides.BOOST, int(self.s["pir.level_pct"] * 10), self.s["pir.hold_s"],
                        self.uptime_ms // 1000)

    def event(self, code, state, priority=PRIO_NONE, value=None, label=0, text=""):
        try:
            self.link.event(code, state, priority, value, label, text=text)
            self.link.poll()  # events go out at once, not when the link task next wakes
        except Exception as e:  # a full event quota must not stop the lights
            log("event %d not stored: %s" % (code, e))

    # --- commands
    def on_cmd(self, cmd_id, op, args):
        args = args or {}
        now_s = self.uptime_ms // 1000
        if op == "ping":
            return P.CS_OK
        if op in ("override", "boost", "test"):
            kind = _KINDS.get(args.get("kind", "manual" if op == "override" else "maintenance" if op == "test" else op))
            if kind is None:
                return (P.CS_INVALID, "kind")
            level = args.get("level", 1000)
            duration = args.get("duration", 300 if op == "test" else 3600)
            try:
                self.ov.set(kind, level, duration, now_s)
            except (ValueError, TypeError) as e:
                return (P.CS_INVALID, str(e)[:40])
            self.event(codes.OVERRIDE, P.EV_RAISED, value=level, label=P.L_LEVEL,
                       text=overrides.KIND_NAMES[kind])
            self.control_step()
            return P.CS_OK
        if op == "override_end":
            kind = _KINDS.get(args.get("kind", "manual"))
            if kind is None:
                return (P.CS_INVALID, "kind")
            if self.ov.clear(kind):
                self.event(codes.OVERRIDE, P.EV_CLEARED, text=overrides.KIND_NAMES[kind])
            self.control_step()
            return P.CS_OK
        if op in ("program", "config"):
            changes = args if op == "config" else {k: args[k] for k in ("programs", "calendar", "holidays")
                                                   if k in args}
            if not changes:
                return (P.CS_INVALID, "nothing to change")
            try:
                # values that loaded with a problem are validated again in full (the command may fix them)
                values, raw = settings.merge(self.raw, changes, self.settings_path, None if self.problems else self.s)
            except config.ConfigError as e:
                return (P.CS_INVALID, ("%s: %s" % (e.key, e.problem))[:40])
            # saved first: a failed flash write leaves the settings in force untouched
            config.save_json(self.settings_path, raw)
            # the fault detector (and its timers) is rebuilt only when a threshold changed
            s = self.s
            faults_changed = False
            for key in values:
                if key.startswith("faults.") and values[key] != s[key]:
                    faults_changed = True
            s.update(values)  # in place: ``values`` holds the changed keys (or all of them), not a copy
            self.raw = raw
            self._apply_settings(faults_changed)
            if op == "program" or "programs" in changes or "calendar" in changes:
                self.event(codes.PROGRAM_CHANGED, P.EV_INFO)
            self.control_step()
            return P.CS_OK
        if op == "reboot":
            asyncio.create_task(self._reboot())
            return P.CS_OK
        if op == "wdt_test":
            # maintenance self-test: stop beating; the watchdog must reset the board within its timeout
            self._wdt_test = True
            return P.CS_OK
        return (P.CS_UNKNOWN, op[:40])

    async def _reboot(self):
        self.energy.save()
        supervisor.note_reset("command")
        for _ in range(40):  # let the CMD_ACK go out (it is in the outbox either way)
            self.link.poll()
            await asyncio.sleep_ms(50)
        machine.reset()

    # --- control
    def control_step(self, full=True):
        """One control period (``full``: sensors, program, policy, overrides, energy, faults) or, between
        two of them while a fade runs, only the next PWM value of the fade."""
        now_ms = self._ticks()
        self.uptime_ms += time.ticks_diff(now_ms, self._t0)
        self._t0 = now_ms
        now_s = self.uptime_ms // 1000
        s = self.sample
        if full:
            # light sensor and meter into the sample; a failing device is judged by the fault rules, the lamp
            # keeps following its program
            try:
                if not self._als_started:
                    self.als.start()
                    self._als_started = True
                lux = self.als.read()
                if lux is not None:  # None: the first conversion is not done yet
                    self.lux_x10 = lux
                s.sensor_ok = True
            except Exception:  # OSError from the bus, or anything a driver raises: the sensor is failing
                self._als_started = False
                self.lux_x10 = -1
                s.sensor_ok = False
            m = self.meter
            try:
                if not self._meter_started:
                    m.start()
                    self._meter_started = True
                m.read()
                s.meter_ok = True
            except Exception:  # as above: a meter failure
                self._meter_started = False
                s.meter_ok = False
            s.power_mw = m.power_mw if s.meter_ok else 0
            s.voltage_mv = m.bus_mv if s.meter_ok else 0
            s.current_ma = m.current_ma if s.meter_ok else 0
            s.lux = self.lux_x10 // 10 if s.sensor_ok else 0
            ended = self.ov.expire(now_s)
            if ended != overrides.NONE:
                self.event(codes.OVERRIDE, P.EV_CLEARED, text=overrides.KIND_NAMES[ended])
            # the target: program level, and lit or not by the clock and the light sensor (policy)
            unix = unix_now()
            clock_on = None
            prog = 1000
            sched = self.sched
            if sched is not None and unix:
                day, minute = sched.local(unix)
                sched.night(day)  # resolved once per night
                clock_on = sched.on <= minute < sched.off
                prog = sched.level(minute)
                sched.prefetch(day + 1)  # the next night's sun times, one per step
            elif sched is not None:
                prog = self.s["programs"]["default"][0][2]
            sensor_ok = s.sensor_ok and self.lux_x10 >= 0
            dark = self.switch.update(self.lux_x10 // 10 if sensor_ok else None, now_s)
            if clock_on is None:
                lit = dark if (sensor_ok and dark is not None) else True
            else:
                lit = schedule.decide(self.policy, clock_on, dark, self.switch.valid)
            self.fader.go(self.ov.resolve(lit, prog), now_ms)
            s.clock_day = clock_on is not None and not clock_on
        self.level = self.fader.level(now_ms)
        duty = curves.duty(self.level, self.curve, self.min_out)
        if duty != self.duty:
            if duty and not self.relay.value():
                self.relay.value(1)
            self.pwm.duty_u16(duty)
            if not duty:
                self.relay.value(0)
            self.duty = duty
            self._settled_at = self.uptime_ms
        if not full:
            return
        s.now_s = now_s
        s.duty = duty
        s.relay = bool(self.relay.value())
        s.settled = not self.fader.moving and self.uptime_ms - self._settled_at >= _SETTLE_MS
        s.forced = self.ov.active() in (overrides.MANUAL, overrides.MAINTENANCE)
        dt = self.uptime_ms - self._last_energy_ms
        self._last_energy_ms = self.uptime_ms
        self.energy.add(s.power_mw if s.meter_ok else 0, dt, s.relay and duty > 0)
        self.faults.update(s)
        ev = self.faults.events
        while ev:
            code, up = ev.pop(0)
            log("fault %s %s" % (codes.NAMES.get(code, code), "raised" if up else "cleared"))
            self.event(code, P.EV_RAISED if up else P.EV_CLEARED, PRIO_MEDIUM if up else PRIO_LOW,
                       value=s.power_mw // 100, label=P.L_POWER)
        if now_s - self._last_save_s >= self.s["energy_save_s"]:
            self._last_save_s = now_s
            try:
                self.energy.save()
            except OSError as e:
                log("energy not saved: %s" % e)

    def telemetry(self):
        s = self.sample
        e = self.energy
        values = {P.L_LEVEL: self.level, P.L_ENERGY: e.mwh // 1000, P.L_BURN: e.burn_s,
                  P.L_SWITCHES: e.switches, P.L_UPTIME: self.uptime_ms // 1000, P.L_HEAP: gc.mem_free()}
        if s.meter_ok:
            values[P.L_POWER] = s.power_mw // 100
            values[P.L_VOLTAGE] = s.voltage_mv // 100
            values[P.L_CURRENT] = s.current_ma
        if s.sensor_ok:
            values[P.L_LUX] = self.lux_x10
        dropped = self.outbox.dropped[1]
        if dropped:
            values[P.L_DROPPED] = dropped
        self.link.data(values)
        self.link.poll()

    # --- tasks
    async def control_task(self):
        next_full = time.ticks_ms()
        while True:
            period = self.s["control_ms"]
            full = time.ticks_diff(time.ticks_ms(), next_full) >= 0
            if full:
                next_full = time.ticks_add(time.ticks_ms(), period)
            if self._guard(_WD_CONTROL, self.control_step, full) and not self._wdt_test:
                self.wd.beat(_WD_CONTROL)
            self.wd.feed_if_healthy()
            await asyncio.sleep_ms(_FAST_MS if self.fader.moving else period)

    def _guard(self, slot, fn, *args):
        """Run one step of a task; an unexpected error is logged and the step skipped. A task that keeps
        failing stops beating (the caller only beats on success), so the watchdog resets the board."""
        try:
            fn(*args)
            self._errors[slot] = 0
            return True
        except Exception as e:
            self._errors[slot] += 1
            if self._errors[slot] <= 3:
                log("task %d error: %s: %s" % (slot, type(e).__name__, e))
            return False

    async def link_task(self):
        """Serve the link; sleep on the UART between frames instead of polling it."""
        reader = asyncio.StreamReader(self.uart)
        rx = self.rx
        mv = memoryview(rx.buf)
        while True:
            if self._guard(_WD_LINK, self.link.poll) and self._guard(_WD_LINK, self.check_gateway):
                self.wd.beat(_WD_LINK)
            # reports waiting: retransmissions are due (slower while the gateway is lost); else only RX wakes it
            wait = (_LINK_ALONE_MS if self._lost_raised else self.link.poll_ms) if self._waiting else _LINK_IDLE_MS
            try:
                n = await asyncio.wait_for_ms(reader.readinto(mv[rx.n:]), wait)  # type: int
                rx.n += n or 0
            except asyncio.TimeoutError:
                pass

    async def report_task(self):
        while True:
            await asyncio.sleep(self.s["telemetry_s"])
            try:
                self.telemetry()
            except Exception as e:
                log("telemetry not stored: %s" % e)
            self.check_gateway()

    async def run(self):
        state = supervisor.boot_begin()
        cause = state["reset_cause"]
        log("v%s node %s boot %d reset %s" % (VERSION, self.node["node_id"], state["boots"], cause))
        self.control_step()
        caps = ["meter", "als"] + (["pir"] if self.s["pir.enabled"] else [])
        self.link.hello("streetlight", VERSION, state["boots"], _RESETS.get(cause, P.RESET_UNKNOWN), caps)
        if self.problems:
            self.event(codes.CONFIG_INVALID, P.EV_INFO, PRIO_LOW, text=self.problems[0][:40])
        asyncio.create_task(self.link_task())
        asyncio.create_task(self.report_task())
        self.wd.start()
        asyncio.create_task(self._confirm_boot())
        await self.control_task()

    async def _confirm_boot(self):
        # the boot manager stops counting this boot as failed once control and link ran healthy a while
        await asyncio.sleep(60)
        if self.wd.healthy():
            supervisor.boot_confirmed()


async def main(node_path=config.PROVISIONING_PATH, settings_path=settings.PATH):
    """The app: load and validate the config, then run until reset."""
    node = config.load_provisioning(node_path)
    if node["lat"] is None or node["lon"] is None:
        log("config: %s: lat/lon: missing; switching by the light sensor only" % node_path)
    app = Streetlight(node, settings_path)
    await app.run()
