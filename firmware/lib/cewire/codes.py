"""Event codes carried in EVENT frames (label E_CODE). Streetlight 1..63, medical 64..127, node 128..159.

The numbers are part of the protocol (docs/protocol.md, "Event codes"); apps may add codes in their own range
and must list them there.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x: int) -> int:  # type: ignore[misc, no-redef, unused-ignore]
        return x


# streetlight faults and state changes
LAMP_FAILURE = const(1)
DAY_BURNER = const(2)
CYCLING = const(3)
OVER_VOLTAGE = const(4)
UNDER_VOLTAGE = const(5)
OVER_CURRENT = const(6)
UNDER_CURRENT = const(7)
DRIVER_FAULT = const(8)
LIGHT_SENSOR_FAILURE = const(9)
POWER_HIGH = const(10)
POWER_LOW = const(11)
OVERRIDE = const(12)  # raised when an override starts, cleared when it ends or expires
PROGRAM_CHANGED = const(13)
METER_FAILURE = const(14)
# medical alarms (IEC 60601-1-8: priority in the frame flags)
SPO2_LOW = const(64)
DESATURATION = const(65)
PR_LOW = const(66)
PR_HIGH = const(67)
TEMP_HIGH = const(68)
TEMP_LOW = const(69)
PROBE_OFF = const(80)
NO_PULSE = const(81)
POOR_SIGNAL = const(82)
LOW_BATTERY = const(83)
SENSOR_FAILURE = const(84)
ALARM_SYSTEM_FAILURE = const(85)
# any node
GATEWAY_LOST = const(128)  # raised when the link reports the gateway silent, cleared when it answers again
SAFE_MODE = const(129)
CONFIG_INVALID = const(130)
OUTBOX_DROPPED = const(131)  # telemetry dropped from a full outbox (value = records dropped)
CLOCK_SET = const(132)

NAMES = {
    LAMP_FAILURE: "lamp_failure", DAY_BURNER: "day_burner", CYCLING: "cycling",
    OVER_VOLTAGE: "over_voltage", UNDER_VOLTAGE: "under_voltage", OVER_CURRENT: "over_current",
    UNDER_CURRENT: "under_current", DRIVER_FAULT: "driver_fault", LIGHT_SENSOR_FAILURE: "light_sensor_failure",
    POWER_HIGH: "power_high", POWER_LOW: "power_low", OVERRIDE: "override", PROGRAM_CHANGED: "program_changed",
    METER_FAILURE: "meter_failure",
    SPO2_LOW: "spo2_low", DESATURATION: "desaturation", PR_LOW: "pr_low", PR_HIGH: "pr_high",
    TEMP_HIGH: "temp_high", TEMP_LOW: "temp_low", PROBE_OFF: "probe_off", NO_PULSE: "no_pulse",
    POOR_SIGNAL: "poor_signal", LOW_BATTERY: "low_battery", SENSOR_FAILURE: "sensor_failure",
    ALARM_SYSTEM_FAILURE: "alarm_system_failure",
    GATEWAY_LOST: "gateway_lost", SAFE_MODE: "safe_mode", CONFIG_INVALID: "config_invalid",
    OUTBOX_DROPPED: "outbox_dropped", CLOCK_SET: "clock_set",
}
