# The medical vital-signs node: acquisition (MAX30102 FIFO at 100 Hz), PPG processing, alarms with local
# LED/buzzer signals, vitals and alarm events to the gateway through the reliable link and its flash outbox,
# authenticated commands (profile, limits, acknowledge, audio pause), watchdog supervision.
#
# Tasks (asyncio, each owns its part of the state):
#   acquire    every 100 ms: drain the sensor FIFO into the PPG processor (32-sample FIFO = 320 ms headroom)
#   second     every 1 s: summary, temperature, battery, alarm conditions, alarm events, vitals record
#   annunciate every 50 ms: LED/buzzer pattern of the highest active alarm
#   link       polls the cewire link (node.link.Link) every poll_ms
#   watchdog   feeds the hardware WDT while the four tasks above keep beating
import asyncio
import gc
import time

from cewire import codes, payloads
from cewire.frame import CH_BULK, PRIO_HIGH, PRIO_LOW, PRIO_MEDIUM
from micropython import const
from node import config, supervisor

from medical import alarms as A
from medical import profiles
from medical.annunciator import Annunciator
from medical.ppg import PpgProcessor

FW_VERSION = "1.0.0"
NODE = None  # the running MedicalNode (set by run())
SETTINGS_PATH = "/medical.json"
CAPS = ("spo2", "pr", "temp", "battery", "alarms", "iec60601-1-8")
# a vitals backlog (after an outage) goes out one frame per LINK_PACE_MS: the garbage of signing and
# acknowledging frames stays within the 1 s collection period; alarms are never paced (node.link)
LINK_PACE_MS = const(500)

_S_ACQ = const(0)
_S_SEC = const(1)
_S_ANN = const(2)
_S_LINK = const(3)
_CONFIRM_MS = const(30_000)
_TEMP_EVERY = const(5)  # seconds between thermometer reads (and temperature in vitals)
_BATT_EVERY = const(10)
_SENSOR_RETRY_MS = const(5_000)
_KEEPING_UP = const(2)  # DATA records awaiting an ACK below which vitals go out one per second
_GC_EVERY = const(1)  # seconds between explicit collections (keeps the heap peak at live + 1 s of garbage)

# alarm condition -> protocol event code, DATA label of its value, limit key
_CODES = (
    (codes.SPO2_LOW, payloads.L_SPO2, "spo2_low"),
    (codes.DESATURATION, payloads.L_SPO2, "spo2_desat"),
    (codes.PR_LOW, payloads.L_HR, "pr_low"),
    (codes.PR_HIGH, payloads.L_HR, "pr_high"),
    (codes.TEMP_HIGH, payloads.L_TEMP, "temp_high"),
    (codes.TEMP_LOW, payloads.L_TEMP, "temp_low"),
    (codes.PROBE_OFF, 0, None),
    (codes.NO_PULSE, 0, None),
    (codes.POOR_SIGNAL, payloads.L_SQI, None),
    (codes.LOW_BATTERY, payloads.L_BAT_MV, None),
    (codes.SENSOR_FAILURE, 0, None),
    (codes.GATEWAY_LOST, 0, None),
)
_PRIO = (0, PRIO_LOW, PRIO_MEDIUM, PRIO_HIGH)
_STATES = (0, payloads.EV_RAISED, payloads.EV_ESCALATED, payloads.EV_ACKED, payloads.EV_CLEARED,
           payloads.EV_PAUSED, payloads.EV_INFO)
_RESET = {"power_on": payloads.RESET_POWER_ON, "hard": payloads.RESET_HARD, "watchdog": payloads.RESET_WDT,
          "deepsleep": payloads.RESET_DEEPSLEEP, "soft": payloads.RESET_SOFT, "brownout": payloads.RESET_BROWNOUT}


def _fs(v):
    if v not in (50, 100):
        raise ValueError("must be 50 or 100")
    return v


SETTINGS = (  # type: tuple
    ("profile", str, "adult", profiles.PROFILES),
    ("limits", dict, {}, None),  # overrides of the profile's defaults, checked by profiles.apply_changes
    ("fs", int, 100, _fs),
    ("led_ma", float, 7.2, (0.0, 50.0)),
    ("batch", int, 8, (1, 8)),  # vitals per DATA record while the link has a backlog
    ("outbox_events", int, 512, (64, 4096)),
    ("outbox_vitals", int, 512, (16, 4096)),
    ("link_lost_s", int, 30, (5, 600)),
)


class MedicalNode:
    """All state of the app; hardware objects are passed in so tests can build one without a board."""

    def __init__(self, settings, sensor, thermo, battery, annunciator, link, ticks=None, log=print):
        self.log = log
        self.sensor = sensor  # drivers.max30102.MAX30102
        self.thermo = thermo  # drivers.max30205.MAX30205 or None
        self.battery = battery  # callable -> mV, or None
        self.ann = annunciator
        self.link = link  # node.link.Link or None
        self._ticks = ticks or time.ticks_ms
        self.fs = settings["fs"]
        self.batch_max = settings["batch"]
        self.profile = settings["profile"]
        try:
            self.limits = profiles.apply_changes(profiles.defaults(self.profile), settings["limits"])
        except profiles.LimitError as e:
            log("config: %s: limits.%s; using the %s defaults" % (SETTINGS_PATH, e, self.profile))
            self.limits = profiles.defaults(self.profile)
        self.ppg = PpgProcessor(self.fs)
        self.alarms = A.AlarmSystem()
        self.red = _buf(32)
        self.ir = _buf(32)
        self.sensor_ok = False
        self.sensor_errors = 0
        self.thermo_ok = True
        self._sensor_retry = 0
        self.link_up = True
        self.temp = None  # 0.01 degC
        self.batt_mv = None
        self.vitals = None  # last summary (hr_x10, spo2_x10, pi_x100, sqi, status)
        self.pending = []  # vitals records not yet in the outbox (batching)
        self.held_events = []  # events the outbox refused (full): retried every second, never dropped
        self.sent_events = 0
        self.seconds = 0
        self._last = self._ticks()
        self._ms = 0
        self.heap_peak = 0  # highest gc.mem_alloc() seen at the 1 s tick (live + garbage since the last collect)
        self.heap_live_peak = 0  # highest live heap right after a collection
        self.heap_boot = 0  # live heap once the node is built
        self.wdt_test = False

    # -- clock ------------------------------------------------------------------------------------------
    def now_ms(self):
        """Milliseconds since start, never wrapping (ticks_ms wraps)."""
        t = self._ticks()
        self._ms += time.ticks_diff(t, self._last)
        self._last = t
        return self._ms

    # -- acquisition ------------------------------------------------------------------------------------
    def start_sensor(self):
        try:
            self.sensor.start()
            self.sensor_ok = True
            self.sensor_errors = 0
            self.ppg.fault = False
        except OSError as e:
            self.sensor_ok = False
            self.ppg.fault = True
            self.log("medical: pulse-oximeter sensor failed: %s" % e)

    def acquire(self):
        """Drain the FIFO into the processor; on bus errors mark the sensor failed and retry later."""
        if not self.sensor_ok:
            now = self.now_ms()
            if now - self._sensor_retry >= _SENSOR_RETRY_MS:
                self._sensor_retry = now
                self.start_sensor()
            return 0
        try:
            n = self.sensor.read_into(self.red, self.ir)
        except OSError:
            self.sensor_errors += 1
            if self.sensor_errors >= 3:
                self.sensor_ok = False
                self.ppg.fault = True
                self._sensor_retry = self.now_ms()
            return 0
        self.sensor_errors = 0
        lost = self.sensor.last_lost
        if lost:
            self.ppg.lost += lost
        add = self.ppg.add
        red = self.red
        ir = self.ir
        for k in range(n):
            add(red[k], ir[k])
        return n

    # -- once per second --------------------------------------------------------------------------------
    def second(self):
        now = self.now_ms()
        s = self.seconds
        self.seconds = s + 1
        v = self.ppg.summary()
        self.vitals = v
        if self.thermo is not None and s % _TEMP_EVERY == 0:
            try:
                self.temp = self.thermo.read_centi()
                self.thermo_ok = True
            except OSError:
                self.temp = None
                self.thermo_ok = False
        if self.battery is not None and s % _BATT_EVERY == 0:
            try:
                self.batt_mv = self.battery()
            except OSError:
                self.batt_mv = None
        mask = A.evaluate(self.limits, v[0], v[1], v[4], self.temp, self.batt_mv, self.link_up,
                          not self.sensor_ok or not self.thermo_ok)
        self.alarms.update(now, mask)
        self.report_events(self.alarms.drain())
        self.record_vitals(v, s)
        m = gc.mem_alloc()
        if m > self.heap_peak:
            self.heap_peak = m
        if s % _GC_EVERY == 0:
            # collect on a fixed cadence so the heap high-water mark stays predictable (and measurable)
            gc.collect()
            m = gc.mem_alloc()
            if m > self.heap_live_peak:
                self.heap_live_peak = m

    def _value(self, c):
        v = self.vitals
        if c <= A.SPO2_DESAT:
            return v[1] if v and v[1] >= 0 else None
        if c <= A.PR_HIGH:
            return v[0] if v and v[0] >= 0 else None
        if c <= A.TEMP_LOW:
            return self.temp
        if c == A.POOR_SIGNAL:
            return v[3] if v else None
        if c == A.BATTERY_LOW:
            return self.batt_mv
        return None

    def report_events(self, events):
        """Alarm events -> EVENT records (channel 0: they overtake every queued vitals record)."""
        for ev, c, p, t in events:
            if c < 0:
                # audio pause / resume concerns every active alarm
                for i in range(A.N_COND):
                    if self.alarms.prio[i]:
                        self._event(i, ev, self.alarms.prio[i])
            else:
                self._event(c, ev, p)
        self._flush_held()

    def _event(self, c, ev, p):
        code, label, key = _CODES[c]
        # limits are in %, /min and 0.1 degC; the labels' units are 0.1 %, 0.1 /min and 0.01 degC
        limit = self.limits[key] * 10 if key is not None else None
        text = "audio on" if ev == A.EV_RESUME else ""
        self.held_events.append((code, _STATES[ev], _PRIO[p], self._value(c) if label else None, label, limit, text))

    def _flush_held(self):
        if self.link is None:
            self.sent_events += len(self.held_events)
            self.held_events = []
            return
        while self.held_events:
            code, state, prio, value, label, limit, text = self.held_events[0]
            try:
                self.link.event(code, state, priority=prio, value=value, label=label, limit=limit, text=text)
            except Exception as e:  # OutboxFull: keep it in RAM and retry; the alarm still sounds locally
                self.log("medical: event held (%s)" % e)
                return
            self.held_events.pop(0)
            self.sent_events += 1

    def record_vitals(self, v, s):
        """One vitals record per second: sent alone when the link is idle, batched when it has a backlog."""
        rec = {}
        if v[0] >= 0:
            rec[payloads.L_HR] = v[0]
            rec[payloads.L_SPO2] = v[1]
            rec[payloads.L_PI] = v[2]
            rec[payloads.L_SQI] = v[3]
        rec[payloads.L_QUALITY] = v[4]
        if s % _TEMP_EVERY == 0 and self.temp is not None:
            rec[payloads.L_TEMP] = self.temp
        if s % _BATT_EVERY == 0 and self.batt_mv is not None:
            rec[payloads.L_BAT_MV] = self.batt_mv
        link = self.link
        if link is None:
            return
        # keeping up: the gateway answers and at most a couple of records await their ACK (a slow radio link
        # may take over a second to acknowledge); otherwise collect a batch so an outage or a slow link costs
        # one frame header, one MAC and one outbox record per ``batch`` seconds instead of per second
        keeping_up = self.link_up and link.outbox.pending(CH_BULK) <= _KEEPING_UP
        if keeping_up and not self.pending:
            link.data(rec)
            return
        rec[payloads.L_T] = s
        self.pending.append(rec)
        if keeping_up or len(self.pending) >= self.batch_max:
            self.flush_vitals(s)

    def flush_vitals(self, s):
        if not self.pending:
            return
        for r in self.pending:
            r[payloads.L_T] -= s  # relative to the record's ts (<= 0)
        recs = self.pending
        self.pending = []
        self.link.data(recs)

    # -- commands ---------------------------------------------------------------------------------------
    def on_cmd(self, cmd_id, op, args):
        """Authenticated command from the gateway -> (status, text) for the CMD_ACK."""
        now = self.now_ms()
        if op == "set_profile":
            p = args.get("profile") if isinstance(args, dict) else None
            try:
                lim = profiles.defaults(p)
            except profiles.LimitError as e:
                return payloads.CS_INVALID, str(e)
            self.profile = p
            self.limits = lim
            self._save()
            return payloads.CS_OK, p
        if op == "set_limits":
            try:
                self.limits = profiles.apply_changes(self.limits, args)
            except profiles.LimitError as e:
                return payloads.CS_INVALID, str(e)
            self._save()
            return payloads.CS_OK, ""
        if op == "ack":
            c = _cond_index(args.get("alarm")) if isinstance(args, dict) and "alarm" in args else -1
            if c == -2:
                return payloads.CS_INVALID, "alarm: unknown"
            n = self.alarms.acknowledge(now, c)
            self.report_events(self.alarms.drain())
            return payloads.CS_OK, "%d" % n
        if op == "pause_audio":
            s = args.get("s", A.AUDIO_PAUSE_MS // 1000) if isinstance(args, dict) else 0
            if not isinstance(s, int) or not 1 <= s <= A.AUDIO_PAUSE_MS // 1000:
                return payloads.CS_INVALID, "s: 1..%d" % (A.AUDIO_PAUSE_MS // 1000)
            self.alarms.pause_audio(now, s * 1000)
            self.report_events(self.alarms.drain())
            return payloads.CS_OK, ""
        if op == "wdt_test":
            # maintenance self-test: the acquisition task stops reporting; the watchdog must reset the board
            self.wdt_test = True
            return payloads.CS_OK, ""
        return payloads.CS_UNKNOWN, op

    def _save(self):
        base = profiles.defaults(self.profile)
        diff = {}
        for k in self.limits:
            if self.limits[k] != base[k]:
                diff[k] = self.limits[k]
        data = config.read_json(SETTINGS_PATH) or {}
        data["profile"] = self.profile
        data["limits"] = diff
        try:
            config.save_json(SETTINGS_PATH, data)
        except OSError as e:
            self.log("medical: could not save %s: %s" % (SETTINGS_PATH, e))

    def on_link(self, up):
        self.link_up = up

    def annunciate(self):
        now = self.now_ms()
        return self.ann.tick(now, self.alarms.visual_priority(), self.alarms.audio_priority(now))


def _buf(n):
    from array import array

    return array("i", [0] * n)


def _cond_index(name):
    for i in range(A.N_COND):
        if A.CONDITIONS[i][0] == name:
            return i
    return -2


# -- tasks ------------------------------------------------------------------------------------------------
async def _acquire_task(node, wd):
    while True:
        node.acquire()
        if not node.wdt_test:
            wd.beat(_S_ACQ)
        await asyncio.sleep_ms(100)


async def _second_task(node, wd):
    t0 = time.ticks_ms()
    k = 0
    confirmed = False
    while True:
        node.second()
        wd.beat(_S_SEC)
        if not confirmed and node.seconds * 1000 >= _CONFIRM_MS:
            supervisor.boot_confirmed()
            confirmed = True
        k += 1
        # keep the 1 s grid (no drift): sleep until t0 + k seconds
        d = time.ticks_diff(time.ticks_add(t0, k * 1000), time.ticks_ms())
        await asyncio.sleep_ms(d if d > 0 else 0)


async def _link_task(node, wd):
    link = node.link
    while True:
        link.poll()
        wd.beat(_S_LINK)
        await asyncio.sleep_ms(link.poll_ms)


async def _annunciate_task(node, wd):
    while True:
        node.annunciate()
        wd.beat(_S_ANN)
        await asyncio.sleep_ms(50)


def build(log=print):
    """Create the node from the board: pins, sensors, settings, provisioning, outbox and link."""
    import board  # type: ignore[import-not-found]
    from drivers.max30102 import MAX30102
    from drivers.max30205 import MAX30205
    from machine import ADC, I2C, PWM, UART, Pin
    from node.link import Link
    from node.outbox import Outbox

    prov = config.load_provisioning(log=log)
    problems = []  # type: list
    settings = config.load(SETTINGS_PATH, SETTINGS, log=log, problems=problems)
    i2c = I2C(board.I2C_ID, scl=Pin(board.I2C_SCL), sda=Pin(board.I2C_SDA), freq=board.I2C_FREQ)
    sensor = MAX30102(i2c, board.ADDR_MAX30102, fs=settings["fs"], red_ma=settings["led_ma"],
                      ir_ma=settings["led_ma"])
    thermo = MAX30205(i2c, board.ADDR_MAX30205)
    adc = ADC(Pin(board.PIN_BATTERY_ADC))
    try:
        adc.atten(ADC.ATTN_11DB)
    except (AttributeError, ValueError):
        pass

    read_uv = getattr(adc, "read_uv", None)  # calibrated on the ESP32; rp2 has only read_u16 (3.3 V ref)

    def battery_mv():
        uv = read_uv() if read_uv is not None else adc.read_u16() * 3_300_000 // 65535
        return uv * board.BATTERY_DIVIDER // 1000

    led = Pin(board.PIN_STATUS_LED, Pin.OUT, value=0)
    buzzer = PWM(Pin(board.PIN_BUZZER), freq=988, duty_u16=0)
    ann = Annunciator(led, buzzer)
    link_cfg = prov.get("link") or {}
    uart = UART(link_cfg.get("uart", board.LINK_UART_ID), baudrate=link_cfg.get("baud", board.LINK_BAUD),
                tx=board.LINK_TX, rx=board.LINK_RX, timeout=0)
    outbox = Outbox("/outbox", quotas=(settings["outbox_events"], settings["outbox_vitals"]))
    node = MedicalNode(settings, sensor, thermo, battery_mv, ann, None, log=log)
    link = Link(uart, prov["node_id"], (bytes.fromhex(prov["key"]), prov["key_id"]), outbox,
                on_cmd=node.on_cmd, on_link=node.on_link, poll_ms=link_cfg.get("poll_ms", 50),
                lost_ms=link_cfg.get("lost_s", settings["link_lost_s"]) * 1000,
                pace_ms=link_cfg.get("pace_ms", LINK_PACE_MS))
    node.link = link
    try:
        thermo.start()
    except OSError:
        node.thermo_ok = False
    node.start_sensor()
    try:
        # besides the app's collection every second, collect whenever 8 KB were allocated since the last one
        # (the link's backlog flush after an outage allocates in bursts)
        gc.threshold(8192)
    except AttributeError:
        pass
    st = supervisor.boot_begin()
    link.hello("medical", FW_VERSION, st.get("boots", 0), _RESET.get(st.get("reset_cause"), 0), caps=CAPS,
               board=getattr(board, "NAME", "esp32_devkit"))
    if problems:
        link.event(codes.CONFIG_INVALID, payloads.EV_INFO, priority=PRIO_LOW, text="; ".join(problems)[:60])
    return node


async def run():
    """The app: build the node and run its tasks until reset."""
    global NODE
    node = build()
    gc.collect()
    node.heap_boot = gc.mem_alloc()
    NODE = node  # for the REPL and benchmarks/medical_heap.py after an interrupt
    wd = supervisor.Watchdog(4)
    asyncio.create_task(_link_task(node, wd))
    asyncio.create_task(_acquire_task(node, wd))
    asyncio.create_task(_annunciate_task(node, wd))
    asyncio.create_task(wd.run())
    await _second_task(node, wd)
