"""The host half of cewire.payloads: builders of the frames a gateway sends (ack, cmd, time_sync), parsers of
the frames nodes send (parse_hello, parse_data, parse_event), the DATA field table FIELDS, the public label
names H_* E_* C_* A_* TM_* and the quality bits Q_*.

Use it as ``cewire.payloads`` (which re-exports it on CPython and loads it on first use on MicroPython); a
node never loads it. The labels are also defined, as folded constants, in cewire.payloads, whose builders and
parsers use them; tests/test_wire.py checks that both agree.
"""

from cewire import cbor
from cewire.errors import E_PAYLOAD, WireError
from cewire.payloads import (
    L_BAT_MV,
    L_BAT_PCT,
    L_BURN,
    L_CURRENT,
    L_DROPPED,
    L_DRV_TEMP,
    L_ENERGY,
    L_HEAP,
    L_HR,
    L_LEVEL,
    L_LUX,
    L_PF,
    L_PI,
    L_POWER,
    L_QUALITY,
    L_SPO2,
    L_SQI,
    L_SWITCHES,
    L_T,
    L_TEMP,
    L_UPTIME,
    L_VOLTAGE,
    _opt,
    _req,
)

# --- HELLO labels
H_ROLE = 0
H_FW = 1
H_BOOT = 2
H_RESET = 3
H_CAPS = 4
H_BOARD = 5
H_SAFE = 6
H_RX = 7
# --- EVENT labels
E_CODE = 0
E_STATE = 1
E_VALUE = 3
E_TEXT = 4
E_LABEL = 5
E_LIMIT = 6
E_ID = 7
# --- CMD / CMD_ACK labels
C_ID = 0
C_OP = 1
C_ARGS = 2
C_EXP = 3
A_ID = 0
A_STATUS = 1
A_TEXT = 2
# --- TIME labels
TM_S = 0
TM_MS = 1
TM_TZ = 2
# quality bits (L_QUALITY), after the Bluetooth PLX measurement status
Q_EARLY = 1
Q_VALIDATED = 2
Q_QUESTIONABLE = 4
Q_INVALID = 8
Q_UNAVAILABLE = 16

# label: (SenML name, SenML unit, decimal scale) — the gateway turns a scaled int v into v * 10**scale.
FIELDS = {
    L_LEVEL: ("level", "%", -1),
    L_POWER: ("power", "W", -1),
    L_VOLTAGE: ("voltage", "V", -1),
    L_CURRENT: ("current", "A", -3),
    L_ENERGY: ("energy", "Wh", 0),
    L_LUX: ("lux", "lx", -1),
    L_BURN: ("burn", "s", 0),
    L_SWITCHES: ("switches", "count", 0),
    L_TEMP: ("temp", "Cel", -2),
    L_HR: ("hr", "beat/min", -1),
    L_SPO2: ("spo2", "%", -1),
    L_PI: ("pi", "%", -2),
    L_SQI: ("sqi", "%", 0),
    L_BAT_MV: ("battery", "V", -3),
    L_BAT_PCT: ("battery_charge", "%EL", 0),
    L_QUALITY: ("quality", "", 0),
    L_PF: ("pf", "/", -2),
    L_DRV_TEMP: ("driver_temp", "Cel", -2),
    L_HEAP: ("heap_free", "B", 0),
    L_UPTIME: ("uptime", "s", 0),
    L_DROPPED: ("dropped", "count", 0),
}


def parse_hello(body) -> dict:
    """HELLO body → {"role", "fw", "boot", "reset", "caps", "board", "safe", "rx"}."""
    caps = _opt(body, H_CAPS, list, [])
    return {
        "role": _req(body, H_ROLE, str),
        "fw": _req(body, H_FW, str),
        "boot": _req(body, H_BOOT, int),
        "reset": _req(body, H_RESET, int),
        "caps": [c for c in caps if isinstance(c, str)],
        "board": _opt(body, H_BOARD, str, ""),
        "safe": _opt(body, H_SAFE, bool, False),
        "rx": _opt(body, H_RX, int, 0),
    }


def parse_data(body, ts: int = 0) -> list:
    """DATA body → list of ``(time, {label: int})``; time = ts + L_T. Non-integer values are refused."""
    recs = body if isinstance(body, list) else [body]
    out = []
    for r in recs:
        if not isinstance(r, dict):
            raise WireError(E_PAYLOAD, "DATA record is not a map")
        vals = {}
        for k, v in r.items():
            if not isinstance(k, int) or not isinstance(v, int) or isinstance(v, bool):
                raise WireError(E_PAYLOAD, "DATA field %r must be an integer label with an integer value" % (k,))
            if k != L_T:
                vals[k] = v
        out.append((ts + r.get(L_T, 0), vals))
    return out


def parse_event(body) -> dict:
    """EVENT body → {"code", "state", "value", "label", "limit", "text", "id"} (absent → None / 0 / "")."""
    return {
        "code": _req(body, E_CODE, int),
        "state": _req(body, E_STATE, int),
        "value": _opt(body, E_VALUE, int, None),
        "label": _opt(body, E_LABEL, int, 0),
        "limit": _opt(body, E_LIMIT, int, None),
        "text": _opt(body, E_TEXT, str, ""),
        "id": _opt(body, E_ID, int, 0),
    }


def ack(cums: dict) -> bytes:
    """ACK payload ``{channel: cumulative seq}``."""
    return cbor.dumps(cums)


def cmd(cmd_id: int, op: str, args=None, exp: int = 0) -> bytes:
    """CMD payload: gateway-assigned id, operation name, argument map, optional expiry (Unix s)."""
    body = {C_ID: cmd_id, C_OP: op}  # type: dict
    if args:
        body[C_ARGS] = args
    if exp:
        body[C_EXP] = exp
    return cbor.dumps(body)


def time_sync(unix_s: int, ms: int = 0, tz_min: int = 0) -> bytes:
    """TIME payload: UTC Unix seconds, milliseconds, local offset from UTC in minutes."""
    body = {TM_S: unix_s}
    if ms:
        body[TM_MS] = ms
    if tz_min:
        body[TM_TZ] = tz_min
    return cbor.dumps(body)


__all__ = [
    "A_ID",
    "A_STATUS",
    "A_TEXT",
    "C_ARGS",
    "C_EXP",
    "C_ID",
    "C_OP",
    "E_CODE",
    "E_ID",
    "E_LABEL",
    "E_LIMIT",
    "E_STATE",
    "E_TEXT",
    "E_VALUE",
    "FIELDS",
    "H_BOARD",
    "H_BOOT",
    "H_CAPS",
    "H_FW",
    "H_RESET",
    "H_ROLE",
    "H_RX",
    "H_SAFE",
    "Q_EARLY",
    "Q_INVALID",
    "Q_QUESTIONABLE",
    "Q_UNAVAILABLE",
    "Q_VALIDATED",
    "TM_MS",
    "TM_S",
    "TM_TZ",
    "ack",
    "cmd",
    "parse_data",
    "parse_event",
    "parse_hello",
    "time_sync",
]
