"""Event codes carried in EVENT frames (label E_CODE). Streetlight 1..63, medical 64..127, node 128..159.

The numbers are part of the protocol (docs/protocol.md, "Event codes"); apps may add codes in their own range
and must list them there.
"""

try:
    from micropython import const
except ImportError:  # CPython (an assignment, not a def: on a node that would load a function for nothing)
    const = int  # type: ignore[misc, assignment, unused-ignore]


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


class _Names:
    """``NAMES.get(code, default)``: an event code's name (``"lamp_failure"``) for logs and the uplink.

    Only ``get``: one string constant instead of a dict, which on a node would take about a kilobyte of heap.
    """

    def get(self, code: int, default=None):
        text = (
            " 1 lamp_failure 2 day_burner 3 cycling 4 over_voltage 5 under_voltage 6 over_current"
            " 7 under_current 8 driver_fault 9 light_sensor_failure 10 power_high 11 power_low 12 override"
            " 13 program_changed 14 meter_failure 64 spo2_low 65 desaturation 66 pr_low 67 pr_high"
            " 68 temp_high 69 temp_low 80 probe_off 81 no_pulse 82 poor_signal 83 low_battery"
            " 84 sensor_failure 85 alarm_system_failure 128 gateway_lost 129 safe_mode 130 config_invalid"
            " 131 outbox_dropped 132 clock_set "
        )
        if type(code) is not int:
            return default
        key = " %d " % code
        at = text.find(key)
        if at < 0:
            return default
        at += len(key)
        return text[at : text.find(" ", at)]


NAMES = _Names()
