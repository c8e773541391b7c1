"""Payload builders and parsers for every frame type, so apps never hand-build CBOR maps.

Builders return CBOR bytes for ``encode_frame``/``Encoder``; parsers take ``frame.body`` (already decoded)
and return plain values, raising WireError(E_PAYLOAD) when a required field is missing or mistyped.
Labels, units and scales are listed in docs/protocol.md ("Payloads").
"""

import sys

from cewire import cbor
from cewire.errors import E_PAYLOAD, WireError

try:
    from micropython import const
except ImportError:  # CPython

    def const(x: int) -> int:  # type: ignore[misc, no-redef, unused-ignore]
        return x


# --- HELLO labels
H_ROLE = const(0)
H_FW = const(1)
H_BOOT = const(2)
H_RESET = const(3)
H_CAPS = const(4)
H_BOARD = const(5)
H_SAFE = const(6)
H_RX = const(7)
# reset causes (HELLO H_RESET)
RESET_UNKNOWN = const(0)
RESET_POWER_ON = const(1)
RESET_HARD = const(2)
RESET_WDT = const(3)
RESET_DEEPSLEEP = const(4)
RESET_SOFT = const(5)
RESET_BROWNOUT = const(6)

# --- DATA labels (SenML-style: integer label, fixed unit, value = integer × 10^scale)
L_T = const(6)  # time of a batched record, seconds relative to the header ts (≤ 0)
L_LEVEL = const(16)  # dim level, 0.1 %
L_POWER = const(17)  # active power, 0.1 W
L_VOLTAGE = const(18)  # mains voltage, 0.1 V
L_CURRENT = const(19)  # current, mA
L_ENERGY = const(20)  # energy since commissioning, Wh
L_LUX = const(21)  # ambient light, 0.1 lx
L_BURN = const(22)  # burn time since commissioning, s
L_SWITCHES = const(23)  # lamp switch-on count
L_TEMP = const(24)  # temperature, 0.01 °C
L_HR = const(25)  # pulse rate, 0.1 /min
L_SPO2 = const(26)  # oxygen saturation, 0.1 %
L_PI = const(27)  # perfusion index, 0.01 %
L_SQI = const(28)  # signal quality index, %
L_BAT_MV = const(29)  # battery voltage, mV
L_BAT_PCT = const(30)  # battery charge, %
L_QUALITY = const(31)  # measurement quality bits (Q_*)
L_PF = const(32)  # power factor, 0.01
L_DRV_TEMP = const(33)  # driver temperature, 0.01 °C
L_HEAP = const(34)  # free heap, bytes
L_UPTIME = const(35)  # uptime, s
L_DROPPED = const(36)  # records dropped from a full outbox since boot
# quality bits (L_QUALITY), after the Bluetooth PLX measurement status
Q_EARLY = const(1)
Q_VALIDATED = const(2)
Q_QUESTIONABLE = const(4)
Q_INVALID = const(8)
Q_UNAVAILABLE = const(16)

# label: (SenML name, SenML unit, decimal scale) — the gateway turns a scaled int v into v * 10**scale.
# Gateway-side table: not built on a node, where it would only take heap.
if sys.implementation.name != "micropython":
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


# --- EVENT labels
E_CODE = const(0)
E_STATE = const(1)
E_VALUE = const(3)
E_TEXT = const(4)
E_LABEL = const(5)
E_LIMIT = const(6)
E_ID = const(7)
# event states
EV_CLEARED = const(0)
EV_RAISED = const(1)
EV_ESCALATED = const(2)
EV_ACKED = const(3)
EV_PAUSED = const(4)
EV_INFO = const(5)

# --- CMD / CMD_ACK labels
C_ID = const(0)
C_OP = const(1)
C_ARGS = const(2)
C_EXP = const(3)
A_ID = const(0)
A_STATUS = const(1)
A_TEXT = const(2)
# CMD_ACK status
CS_OK = const(0)
CS_INVALID = const(1)  # arguments refused (out of range, wrong type)
CS_UNKNOWN = const(2)  # op not supported by this node
CS_FAILED = const(3)  # accepted but could not be carried out
CS_EXPIRED = const(4)  # arrived after its expiry time
CS_BUSY = const(5)  # refused for now (e.g. safe mode), retry later

# --- TIME labels
TM_S = const(0)
TM_MS = const(1)
TM_TZ = const(2)


def _req(body, label: int, kind):
    v = body.get(label) if isinstance(body, dict) else None
    if not isinstance(v, kind) or isinstance(v, bool) and kind is int:
        raise WireError(E_PAYLOAD, "field %d missing or not %s" % (label, kind.__name__))
    return v


def _opt(body: dict, label: int, kind, default):
    v = body.get(label, default)
    if v is not default and (not isinstance(v, kind) or isinstance(v, bool) and kind is int):
        raise WireError(E_PAYLOAD, "field %d not %s" % (label, kind.__name__))
    return v


def hello(role: str, fw: str, boot: int, reset: int, caps=(), board: str = "", safe: bool = False,
          rx: int = 0) -> bytes:
    """HELLO payload: role, firmware version, boot count, reset cause (RESET_*), capabilities, board."""
    body = {H_ROLE: role, H_FW: fw, H_BOOT: boot, H_RESET: reset, H_CAPS: list(caps)}  # type: dict
    if board:
        body[H_BOARD] = board
    if safe:
        body[H_SAFE] = True
    if rx:
        body[H_RX] = rx
    return cbor.dumps(body)


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


def data(values: dict) -> bytes:
    """DATA payload from ``{L_*: scaled int}`` (one record at the header's ts)."""
    return cbor.dumps(values)


def data_batch(records: list) -> bytes:
    """DATA payload for several records; each dict should carry ``L_T`` (seconds relative to ts, ≤ 0)."""
    return cbor.dumps(records)


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


def event(code: int, state: int = EV_RAISED, value=None, label: int = 0, limit=None, text: str = "",
          eid: int = 0) -> bytes:
    """EVENT payload: event code (EVENT_CODES), state (EV_*), optional value/limit (scaled as ``label``)."""
    body = {E_CODE: code, E_STATE: state}  # type: dict
    if value is not None:
        body[E_VALUE] = value
    if label:
        body[E_LABEL] = label
    if limit is not None:
        body[E_LIMIT] = limit
    if text:
        body[E_TEXT] = text
    if eid:
        body[E_ID] = eid
    return cbor.dumps(body)


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


def parse_ack(body) -> dict:
    """ACK body → {channel: cum}; channels and sequence numbers must be non-negative ints."""
    if not isinstance(body, dict):
        raise WireError(E_PAYLOAD, "ACK body is not a map")
    for k, v in body.items():
        if not isinstance(k, int) or not isinstance(v, int) or k < 0 or v < 0 or isinstance(v, bool):
            raise WireError(E_PAYLOAD, "ACK entries are channel: seq")
    return body


def cmd(cmd_id: int, op: str, args=None, exp: int = 0) -> bytes:
    """CMD payload: gateway-assigned id, operation name, argument map, optional expiry (Unix s)."""
    body = {C_ID: cmd_id, C_OP: op}  # type: dict
    if args:
        body[C_ARGS] = args
    if exp:
        body[C_EXP] = exp
    return cbor.dumps(body)


def parse_cmd(body) -> tuple:
    """CMD body → (id, op, args dict, exp)."""
    return (
        _req(body, C_ID, int),
        _req(body, C_OP, str),
        _opt(body, C_ARGS, dict, {}),
        _opt(body, C_EXP, int, 0),
    )


def cmd_ack(cmd_id: int, status: int = CS_OK, text: str = "") -> bytes:
    """CMD_ACK payload: the command's id, a status (CS_*), an optional short reason."""
    body = {A_ID: cmd_id, A_STATUS: status}  # type: dict
    if text:
        body[A_TEXT] = text
    return cbor.dumps(body)


def parse_cmd_ack(body) -> tuple:
    """CMD_ACK body → (id, status, text)."""
    return (_req(body, A_ID, int), _req(body, A_STATUS, int), _opt(body, A_TEXT, str, ""))


def time_sync(unix_s: int, ms: int = 0, tz_min: int = 0) -> bytes:
    """TIME payload: UTC Unix seconds, milliseconds, local offset from UTC in minutes."""
    body = {TM_S: unix_s}
    if ms:
        body[TM_MS] = ms
    if tz_min:
        body[TM_TZ] = tz_min
    return cbor.dumps(body)


def parse_time(body) -> tuple:
    """TIME body → (unix_s, ms, tz_min)."""
    ms = _opt(body, TM_MS, int, 0)
    if not 0 <= ms <= 999:
        raise WireError(E_PAYLOAD, "TIME ms out of range")
    return (_req(body, TM_S, int), ms, _opt(body, TM_TZ, int, 0))
