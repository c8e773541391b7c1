"""Payload builders and parsers, so apps never hand-build CBOR maps; labels, units and scales are listed in
docs/protocol.md ("Payloads").

Builders return CBOR bytes for ``Encoder``/``encode_frame``; parsers take the decoded body and return plain
values, raising WireError(E_PAYLOAD) when a required field is missing or mistyped.

This module is the node's half: the constants apps use (L_*, RESET_*, EV_*, CS_*), the builders of what a node
sends (hello, data, data_batch, event, cmd_ack) and the parsers of what it receives (parse_ack, parse_cmd,
parse_time) and of its own command acks (parse_cmd_ack, read back from its outbox). The host half, the builders
of gateway frames (ack, cmd, time_sync), the parsers of node frames (parse_hello, parse_data, parse_event),
FIELDS, the label names H_* E_* C_* A_* TM_* and the quality bits Q_*, is cewire.host_payloads: its names are
looked up there on first use (module ``__getattr__``, on CPython and MicroPython alike), so a node that never
uses them never loads it -- on a node every name costs heap.
"""

from cewire import cbor
from cewire.errors import E_PAYLOAD, WireError

try:
    from micropython import const
except ImportError:  # CPython (an assignment, not a def: on a node that would load a function for nothing)
    const = int  # type: ignore[misc, assignment, unused-ignore]


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

# event states
EV_CLEARED = const(0)
EV_RAISED = const(1)
EV_ESCALATED = const(2)
EV_ACKED = const(3)
EV_PAUSED = const(4)
EV_INFO = const(5)

# CMD_ACK status
CS_OK = const(0)
CS_INVALID = const(1)  # arguments refused (out of range, wrong type)
CS_UNKNOWN = const(2)  # op not supported by this node
CS_FAILED = const(3)  # accepted but could not be carried out
CS_EXPIRED = const(4)  # arrived after its expiry time
CS_BUSY = const(5)  # refused for now (e.g. safe mode), retry later

# labels of the maps built and parsed here: folded into the code on a node (no names in RAM); the public names
# are in cewire.host_payloads (H_*, E_*, C_*, A_*, TM_*), and tests/test_wire.py checks that both agree
_H_ROLE = const(0)
_H_FW = const(1)
_H_BOOT = const(2)
_H_RESET = const(3)
_H_CAPS = const(4)
_H_BOARD = const(5)
_H_SAFE = const(6)
_H_RX = const(7)
_E_CODE = const(0)
_E_STATE = const(1)
_E_VALUE = const(3)
_E_TEXT = const(4)
_E_LABEL = const(5)
_E_LIMIT = const(6)
_E_ID = const(7)
_C_ID = const(0)
_C_OP = const(1)
_C_ARGS = const(2)
_C_EXP = const(3)
_A_ID = const(0)
_A_STATUS = const(1)
_A_TEXT = const(2)
_TM_S = const(0)
_TM_MS = const(1)
_TM_TZ = const(2)


def _req(body, label: int, kind):
    v = body.get(label) if isinstance(body, dict) else None
    if not isinstance(v, kind) or isinstance(v, bool) and kind is int:
        raise WireError(E_PAYLOAD, "field %d" % label)
    return v


def _opt(body: dict, label: int, kind, default):
    v = body.get(label, default)
    if v is not default and (not isinstance(v, kind) or isinstance(v, bool) and kind is int):
        raise WireError(E_PAYLOAD, "field %d" % label)
    return v


def hello(
    role: str, fw: str, boot: int, reset: int, caps=(), board: str = "", safe: bool = False, rx: int = 0
) -> bytes:
    """HELLO payload: role, firmware version, boot count, reset cause (RESET_*), capabilities, board."""
    body = {_H_ROLE: role, _H_FW: fw, _H_BOOT: boot, _H_RESET: reset, _H_CAPS: list(caps)}  # type: dict
    if board:
        body[_H_BOARD] = board
    if safe:
        body[_H_SAFE] = True
    if rx:
        body[_H_RX] = rx
    return cbor.dumps(body)


def data(values: dict) -> bytes:
    """DATA payload from ``{L_*: scaled int}`` (one record at the header's ts)."""
    return cbor.dumps(values)


def data_batch(records: list) -> bytes:
    """DATA payload for several records; each dict should carry ``L_T`` (seconds relative to ts, ≤ 0)."""
    return cbor.dumps(records)


def event(
    code: int, state: int = EV_RAISED, value=None, label: int = 0, limit=None, text: str = "", eid: int = 0
) -> bytes:
    """EVENT payload: event code (cewire.codes), state (EV_*), optional value/limit (scaled as ``label``)."""
    body = {_E_CODE: code, _E_STATE: state}  # type: dict
    if value is not None:
        body[_E_VALUE] = value
    if label:
        body[_E_LABEL] = label
    if limit is not None:
        body[_E_LIMIT] = limit
    if text:
        body[_E_TEXT] = text
    if eid:
        body[_E_ID] = eid
    return cbor.dumps(body)


def parse_ack(body) -> dict:
    """ACK body → {channel: cum}; channels and sequence numbers must be non-negative ints."""
    if not isinstance(body, dict):
        raise WireError(E_PAYLOAD, "ACK not a map")
    for k, v in body.items():
        if not isinstance(k, int) or not isinstance(v, int) or k < 0 or v < 0 or isinstance(v, bool):
            raise WireError(E_PAYLOAD, "ACK entry")
    return body


def parse_cmd(body) -> tuple:
    """CMD body → (id, op, args dict, exp)."""
    return (
        _req(body, _C_ID, int),
        _req(body, _C_OP, str),
        _opt(body, _C_ARGS, dict, {}),
        _opt(body, _C_EXP, int, 0),
    )


def cmd_ack(cmd_id: int, status: int = CS_OK, text: str = "") -> bytes:
    """CMD_ACK payload: the command's id, a status (CS_*), an optional short reason."""
    body = {_A_ID: cmd_id, _A_STATUS: status}  # type: dict
    if text:
        body[_A_TEXT] = text
    return cbor.dumps(body)


def parse_cmd_ack(body) -> tuple:
    """CMD_ACK body → (id, status, text)."""
    return (_req(body, _A_ID, int), _req(body, _A_STATUS, int), _opt(body, _A_TEXT, str, ""))


def parse_time(body) -> tuple:
    """TIME body → (unix_s, ms, tz_min)."""
    ms = _opt(body, _TM_MS, int, 0)
    if not 0 <= ms <= 999:
        raise WireError(E_PAYLOAD, "field %d" % _TM_MS)
    return (_req(body, _TM_S, int), ms, _opt(body, _TM_TZ, int, 0))


def __getattr__(name):  # type: ignore[no-untyped-def, unused-ignore]
    # the host half (cewire.host_payloads) on first use of one of its names; a node never asks for it, and
    # its image does not hold it (cityedge.firmware_files.HOST_ONLY)
    if name.startswith("__"):
        raise AttributeError(name)
    try:
        import cewire.host_payloads
    except ImportError:
        raise AttributeError(name) from None
    return getattr(cewire.host_payloads, name)
