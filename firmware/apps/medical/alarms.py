# Alarm system in the style of IEC 60601-1-8: alarm conditions with priorities, condition delays, latching,
# escalation, acknowledgement and audio pause with time limits. Pure logic (no I/O): the app evaluates the
# conditions once per second, calls update(), drains the events into EVENT frames and drives the
# annunciator from visual_priority()/audio_priority(). Specified in docs/alarms.md.
try:
    from micropython import const
except ImportError:  # CPython (unit tests)

    def const(x):  # type: ignore[misc, no-redef]
        return x


from medical import ppg

# priorities
LOW = const(1)
MEDIUM = const(2)
HIGH = const(3)
PRIORITY_NAMES = ("none", "low", "medium", "high")

# alarm conditions (bit numbers in the condition mask)
SPO2_LOW = const(0)
SPO2_DESAT = const(1)
PR_LOW = const(2)
PR_HIGH = const(3)
TEMP_HIGH = const(4)
TEMP_LOW = const(5)
PROBE_OFF = const(6)
NO_PULSE = const(7)
POOR_SIGNAL = const(8)
BATTERY_LOW = const(9)
SENSOR_FAIL = const(10)
LINK_LOST = const(11)
N_COND = const(12)

# events
EV_START = const(1)
EV_ESCALATE = const(2)
EV_ACK = const(3)
EV_END = const(4)
EV_PAUSE = const(5)  # audio paused (condition -1: all)
EV_RESUME = const(6)  # audio pause ended / acknowledgement expired
EVENT_NAMES = ("", "start", "escalate", "ack", "end", "pause", "resume")

AUDIO_PAUSE_MS = const(120_000)  # audio pause limit (2 min)
ACK_LIMIT_MS = const(300_000)  # an acknowledged alarm sounds again after 5 min if still present
BATTERY_LOW_MV = const(3500)

# name, technical, priority, condition delay ms, latching, escalate after ms (0: never), escalated priority
CONDITIONS = (
    ("spo2_low", False, MEDIUM, 10_000, False, 60_000, HIGH),
    ("spo2_desat", False, HIGH, 0, True, 0, HIGH),
    ("pr_low", False, MEDIUM, 5_000, False, 60_000, HIGH),
    ("pr_high", False, MEDIUM, 5_000, False, 0, MEDIUM),
    ("temp_high", False, LOW, 30_000, False, 600_000, MEDIUM),
    ("temp_low", False, LOW, 30_000, False, 600_000, MEDIUM),
    ("probe_off", True, MEDIUM, 2_000, False, 0, MEDIUM),
    ("no_pulse", True, MEDIUM, 5_000, False, 15_000, HIGH),
    ("poor_signal", True, LOW, 10_000, False, 0, LOW),
    ("battery_low", True, LOW, 5_000, False, 600_000, MEDIUM),
    ("sensor_fail", True, MEDIUM, 0, True, 0, MEDIUM),
    ("link_lost", True, LOW, 10_000, False, 0, LOW),
)


def evaluate(limits, hr_x10, spo2_x10, status, temp_x100, batt_mv, link_up, sensor_fault):
    """The alarm-condition mask for one second of measurements.

    Physiological SpO2 / pulse-rate conditions are evaluated only on values that are neither invalid nor
    questionable (poor signal raises its own technical alarm instead of false physiological ones).
    ``temp_x100`` (0.01 degC; limits are in 0.1 degC) / ``batt_mv`` are None when unavailable.
    """
    m = 0
    usable = not status & (ppg.ST_INVALID | ppg.ST_QUESTIONABLE)
    if usable and spo2_x10 >= 0:
        if spo2_x10 < limits["spo2_low"] * 10:
            m |= 1 << SPO2_LOW
        if spo2_x10 < limits["spo2_desat"] * 10:
            m |= 1 << SPO2_DESAT
    if usable and hr_x10 >= 0:
        if hr_x10 < limits["pr_low"] * 10:
            m |= 1 << PR_LOW
        if hr_x10 > limits["pr_high"] * 10:
            m |= 1 << PR_HIGH
    if temp_x100 is not None:
        if temp_x100 > limits["temp_high"] * 10:
            m |= 1 << TEMP_HIGH
        if temp_x100 < limits["temp_low"] * 10:
            m |= 1 << TEMP_LOW
    if status & ppg.ST_PROBE_OFF:
        m |= 1 << PROBE_OFF
    if status & ppg.ST_NO_PULSE:
        m |= 1 << NO_PULSE
    if status & ppg.ST_QUESTIONABLE and not status & ppg.ST_INVALID:
        m |= 1 << POOR_SIGNAL
    if batt_mv is not None and batt_mv < BATTERY_LOW_MV:
        m |= 1 << BATTERY_LOW
    if sensor_fault or status & ppg.ST_SENSOR_FAULT:
        m |= 1 << SENSOR_FAIL
    if not link_up:
        m |= 1 << LINK_LOST
    return m


class AlarmSystem:
    """State of every alarm condition; times are a non-wrapping millisecond clock supplied by the caller."""

    def __init__(self):
        self.since = [-1] * N_COND  # when the condition became present (-1: absent)
        self.prio = [0] * N_COND  # current priority of an active alarm (0: inactive)
        self.started = [0] * N_COND
        self.acked = [False] * N_COND
        self.ack_at = [0] * N_COND
        self.latched = [False] * N_COND  # condition gone, alarm held until acknowledged
        self.paused_until = -1
        self.events = []  # (event, condition, priority, time_ms); drained by the app

    def _emit(self, ev, c, p, now):
        self.events.append((ev, c, p, now))

    def update(self, now, mask):
        """Advance to ``now`` with the present conditions ``mask``; emits events."""
        for c in range(N_COND):
            spec = CONDITIONS[c]
            if mask >> c & 1:
                if self.since[c] < 0:
                    self.since[c] = now
                if not self.prio[c]:
                    if now - self.since[c] >= spec[3]:
                        self.prio[c] = spec[2]
                        self.started[c] = now
                        self.acked[c] = False
                        self.latched[c] = False
                        self._emit(EV_START, c, spec[2], now)
                        if spec[2] == HIGH:
                            self._end_pause(now)
                else:
                    self.latched[c] = False
                    if spec[5] and self.prio[c] < spec[6] and now - self.started[c] >= spec[5]:
                        self.prio[c] = spec[6]
                        self.acked[c] = False  # an escalated alarm sounds again
                        self._emit(EV_ESCALATE, c, spec[6], now)
                        if spec[6] == HIGH:
                            self._end_pause(now)
                    elif self.acked[c] and now - self.ack_at[c] >= ACK_LIMIT_MS:
                        self.acked[c] = False
                        self._emit(EV_RESUME, c, self.prio[c], now)
            else:
                self.since[c] = -1
                if self.prio[c] and not self.latched[c]:
                    if spec[4] and not self.acked[c]:
                        self.latched[c] = True  # held until the operator acknowledges it
                    else:
                        self._end(c, now)
        if self.paused_until >= 0 and now >= self.paused_until:
            self.paused_until = -1
            self._emit(EV_RESUME, -1, 0, now)

    def _end(self, c, now):
        p = self.prio[c]
        self.prio[c] = 0
        self.acked[c] = False
        self.latched[c] = False
        self._emit(EV_END, c, p, now)

    def _end_pause(self, now):
        if self.paused_until >= 0:
            self.paused_until = -1
            self._emit(EV_RESUME, -1, 0, now)

    def acknowledge(self, now, c=-1):
        """Acknowledge one alarm (or all with c=-1): its audio stops; a latched alarm is reset.

        Returns how many alarms were acknowledged.
        """
        n = 0
        for i in range(N_COND):
            if (c < 0 or c == i) and self.prio[i] and not self.acked[i]:
                n += 1
                if self.latched[i]:
                    self._emit(EV_ACK, i, self.prio[i], now)
                    self._end(i, now)
                else:
                    self.acked[i] = True
                    self.ack_at[i] = now
                    self._emit(EV_ACK, i, self.prio[i], now)
        return n

    def pause_audio(self, now, ms=AUDIO_PAUSE_MS):
        """Pause all alarm sounds for ``ms`` (at most AUDIO_PAUSE_MS); a new high-priority alarm ends it."""
        if ms > AUDIO_PAUSE_MS:
            ms = AUDIO_PAUSE_MS
        self.paused_until = now + ms
        self._emit(EV_PAUSE, -1, 0, now)

    def active(self, c):
        return self.prio[c]

    def visual_priority(self):
        """Highest priority among active alarms (acknowledged ones are still shown)."""
        p = 0
        for c in range(N_COND):
            if self.prio[c] > p:
                p = self.prio[c]
        return p

    def audio_priority(self, now):
        """Highest priority that must sound now (0 when silent: none, all acknowledged, or paused)."""
        if self.paused_until >= 0 and now < self.paused_until:
            return 0
        p = 0
        for c in range(N_COND):
            if self.prio[c] > p and not self.acked[c]:
                p = self.prio[c]
        return p

    def drain(self):
        """Take the pending events."""
        ev = self.events
        self.events = []
        return ev
