"""Uplink payloads: batches of events in compact CBOR (default) or JSON, and the gateway state message.

The format is specified in docs/uplink.md; this module is its reference implementation (the gateway
encodes, :mod:`gateway.ops` decodes). Both encodings decode to the same :class:`UplinkEvent` values.

Compact CBOR, in short: one map per batch with small integer keys; events are 5-element arrays
``[source index, lane seq, ts − base ms, kind, body]``; body keys that are SenML-style measurement names of
the node protocol (``cewire.payloads.FIELDS``: ``lux``, ``power``, ``spo2`` …) travel as their integer label
with the value as an integer scaled by the field's power of ten, other well-known keys as small negative
integers (:data:`KEYS`), anything else as text. Values that a scaled integer cannot carry exactly keep
their text key and their own value, so the encoding is lossless. A record time ``t`` (integer unix seconds)
travels as label 6, relative to its event's second.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cbor2
from cewire.payloads import FIELDS, L_T

from gateway.events import KINDS, Priority, StoredEvent

FORMAT_VERSION = 1
CBOR = "cbor"
JSON = "json"
CONTENT_TYPES = {CBOR: "application/cbor", JSON: "application/json"}

# batch map keys (CBOR)
B_VERSION, B_GATEWAY, B_EPOCH, B_PRIO, B_BASE_MS, B_SOURCES, B_EVENTS = range(7)

# SenML-style measurement names → (label, decimal scale), from the node protocol (docs/protocol.md §6.2)
MEASURES: dict[str, tuple[int, int]] = {name: (label, scale) for label, (name, _unit, scale) in FIELDS.items()}
MEASURE_BY_LABEL: dict[int, tuple[str, int]] = {label: (name, scale) for name, (label, scale) in MEASURES.items()}
T_LABEL = L_T  # a record's time "t" (unix s, int), sent relative to its event's second: ts_ms // 1000

# other well-known body keys → negative labels (1 byte in CBOR from −1 to −24, 2 bytes to −256)
KEYS: tuple[str, ...] = (
    "seq", "records", "code", "name", "state", "prio", "value", "limit", "unit", "text", "id",  # −1 … −11
    "online", "reason", "link", "last_seen", "command_id", "node_id", "status", "attempts",  # −12 … −19
    "detail", "result", "latency_ms", "ts", "count", "counts", "zone", "camera", "class",  # −20 … −28
    "role", "fw", "boot", "reset", "caps", "board", "safe",  # −29 … −35
)
KEY_LABEL: dict[str, int] = {k: -(i + 1) for i, k in enumerate(KEYS)}
LABEL_KEY: dict[int, str] = {v: k for k, v in KEY_LABEL.items()}
KIND_CODE: dict[str, int] = {k: i for i, k in enumerate(KINDS)}
_POW = [10**k for k in range(19)]
_EXACT = 2**53  # integers beyond this are not exact as floats


class PayloadError(ValueError):
    """An uplink payload that does not follow docs/uplink.md."""


@dataclass(frozen=True, slots=True)
class UplinkEvent:
    """One event as the operations center sees it, whatever the encoding."""

    gateway: str
    epoch: str
    priority: Priority
    source: str
    seq: int
    ts_ms: int
    kind: str
    body: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """A plain dict (the JSON line ``cityedge ops tail`` prints)."""
        return {
            "gw": self.gateway,
            "epoch": self.epoch,
            "lane": self.priority.lane,
            "src": self.source,
            "seq": self.seq,
            "ts": self.ts_ms,
            "kind": self.kind,
            "body": self.body,
        }


# ---------------------------------------------------------------------------------------------- encoding
def encode_batch(gateway: str, epoch: str, batch: Sequence[StoredEvent], fmt: str = CBOR) -> bytes:
    """Encode events of one priority into one MQTT payload (``fmt``: ``cbor`` or ``json``)."""
    if not batch:
        raise ValueError("empty batch")
    prio = batch[0].priority
    if any(s.priority is not prio for s in batch):
        raise ValueError("a batch holds events of one priority")
    if fmt == JSON:
        return json_batch(gateway, epoch, batch)
    if fmt != CBOR:
        raise ValueError(f"unknown uplink format {fmt!r} (cbor or json)")
    base = min(s.event.ts_ms for s in batch)
    sources: dict[str, int] = {}
    parts: list[bytes] = []
    for s in batch:
        ev = s.event
        idx = sources.setdefault(ev.source, len(sources))
        kind: int | str = KIND_CODE.get(ev.kind, ev.kind)
        body = ev.body
        packed = body.packed if type(body) is PackedBody else pack_body(body, ev.ts_ms)
        # [idx, seq, dt, kind, body]: a 5-array (0x85) of four unsigned integers (or a text kind) and the body
        parts.append(b"".join((b"\x85", cbor_uint(idx), cbor_uint(s.seq), cbor_uint(ev.ts_ms - base),
                               cbor_uint(kind) if type(kind) is int else cbor2.dumps(kind), packed)))
    head = cbor2.dumps(
        {
            B_VERSION: FORMAT_VERSION,
            B_GATEWAY: gateway,
            B_EPOCH: epoch,
            B_PRIO: int(prio),
            B_BASE_MS: base,
            B_SOURCES: list(sources),
        }
    )
    # the same map with a 7th entry (B_EVENTS: array of the pre-encoded events), built without re-encoding
    return b"".join([bytes([head[0] + 1]), head[1:], b"\x06", _array_head(len(parts)), *parts])


_SMALL = [bytes((v,)) for v in range(24)]


def cbor_uint(v: int) -> bytes:
    """CBOR unsigned integer, shortest form (what cbor2 writes)."""
    if v < 24:
        return _SMALL[v]
    if v < 0x100:
        return bytes((0x18, v))
    if v < 0x10000:
        return b"\x19" + v.to_bytes(2, "big")
    if v < 0x100000000:
        return b"\x1a" + v.to_bytes(4, "big")
    return b"\x1b" + v.to_bytes(8, "big")


def _array_head(n: int) -> bytes:
    if n < 24:
        return bytes([0x80 + n])
    if n < 256:
        return bytes([0x98, n])
    if n < 65536:
        return bytes([0x99]) + n.to_bytes(2, "big")
    return bytes([0x9A]) + n.to_bytes(4, "big")


def pack_body(body: Mapping[str, Any], ts_ms: int) -> bytes:
    """The compact CBOR form of an event body (record times ``t`` relative to the event's second)."""
    return cbor2.dumps(_compact(body, ts_ms // 1000))


def unpack_body(packed: bytes, ts_ms: int) -> dict[str, Any]:
    """Inverse of :func:`pack_body`."""
    return _expand(cbor2.loads(packed), ts_ms // 1000)


class PackedBody(Mapping[str, Any]):
    """An event body kept in its compact form and decoded only when someone reads it.

    The outbox stores bodies packed (4-5 times smaller than JSON, so the disk quota holds more) and the
    CBOR uplink copies the packed bytes into its batches without decoding them.
    """

    __slots__ = ("_dict", "packed", "ts_ms")

    def __init__(self, packed: bytes, ts_ms: int) -> None:
        self.packed = packed
        self.ts_ms = ts_ms
        self._dict: dict[str, Any] | None = None

    def _data(self) -> dict[str, Any]:
        if self._dict is None:
            self._dict = unpack_body(self.packed, self.ts_ms)
        return self._dict

    def __getitem__(self, key: str) -> Any:
        return self._data()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())

    def __repr__(self) -> str:
        return f"PackedBody({self._data()!r})"


def json_batch(gateway: str, epoch: str, batch: Sequence[StoredEvent]) -> bytes:
    """The JSON encoding of a batch (readable; for integration and debugging)."""
    doc = {
        "v": FORMAT_VERSION,
        "gw": gateway,
        "epoch": epoch,
        "lane": batch[0].priority.lane,
        "events": [
            {"src": s.event.source, "seq": s.seq, "ts": s.event.ts_ms, "kind": s.event.kind,
             "body": dict(s.event.body)}
            for s in batch
        ],
    }
    return json.dumps(doc, separators=(",", ":"), default=_json_default).encode()


def plain_json_event(gateway: str, s: StoredEvent) -> bytes:
    """One event as a naive integration would send it: a self-describing JSON object per MQTT message.

    This is the baseline that benchmarks/uplink_size.py compares the compact encoding against.
    """
    doc = {
        "gw": gateway,
        "src": s.event.source,
        "seq": s.seq,
        "ts": s.event.ts_ms,
        "priority": s.priority.lane,
        "kind": s.event.kind,
        "body": dict(s.event.body),
    }
    return json.dumps(doc, separators=(",", ":"), default=_json_default).encode()


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return value.hex()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__} in JSON")


def _compact(body: Mapping[str, Any], base_s: int, depth: int = 0) -> dict[Any, Any]:
    # hot path of the uplink: plain lookups and type checks, no helper calls for the common cases
    out: dict[Any, Any] = {}
    for key, value in body.items():
        vt = type(value)
        measure = MEASURES.get(key)
        if measure is not None:
            label, scale = measure
            if vt is int and scale <= 0 and abs(value) < _EXACT:
                out[label] = value * _POW[-scale]
                continue
            if vt is float and scale <= 0:
                factor = _POW[-scale]
                i = round(value * factor) if math.isfinite(value) else None
                if i is not None and abs(i) < _EXACT and (i / factor if scale else i) == value:
                    out[label] = i
                    continue
            out[key] = value  # not representable as a scaled integer: keep it exactly as it is
            continue
        if key == "t" and vt is int:
            out[T_LABEL] = value - base_s
            continue
        if type(key) is not str:
            raise ValueError(f"event body keys must be text, got {key!r}")
        key_label: int | str = KEY_LABEL.get(key) or key
        if vt is list and key == "records" and depth == 0:
            out[key_label] = [_compact(r, base_s, 1) if type(r) is dict else r for r in value]
        elif vt is dict and depth < 4:
            out[key_label] = _compact(value, base_s, depth + 1)
        else:
            out[key_label] = value
    return out


# ---------------------------------------------------------------------------------------------- decoding
def decode_batch(payload: bytes) -> list[UplinkEvent]:
    """Decode one uplink payload (CBOR or JSON, told apart by the first byte) into events."""
    if not payload:
        raise PayloadError("empty payload")
    if payload[:1] == b"{":
        return _decode_json(payload)
    try:
        doc = cbor2.loads(payload)
    except Exception as exc:  # cbor2 raises several types for garbage
        raise PayloadError(f"not CBOR: {exc}") from exc
    if not isinstance(doc, dict):
        raise PayloadError("a CBOR batch is a map")
    try:
        if doc[B_VERSION] != FORMAT_VERSION:
            raise PayloadError(f"unsupported batch version {doc[B_VERSION]!r}")
        gw, epoch, prio = str(doc[B_GATEWAY]), str(doc[B_EPOCH]), Priority(doc[B_PRIO])
        base, sources, events = int(doc[B_BASE_MS]), doc[B_SOURCES], doc[B_EVENTS]
        out = []
        for idx, seq, dt, kind, body in events:
            name = KINDS[kind] if isinstance(kind, int) else str(kind)
            ts = base + int(dt)
            out.append(UplinkEvent(gw, epoch, prio, str(sources[idx]), int(seq), ts, name, _expand(body, ts // 1000)))
        return out
    except PayloadError:
        raise
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise PayloadError(f"malformed CBOR batch: {exc!r}") from exc


def _expand(body: Mapping[Any, Any], base_s: int, depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in body.items():
        if type(key) is str:
            out[key] = _plain(value)
            continue
        if key >= 0:
            if key == T_LABEL:
                out["t"] = base_s + value
                continue
            measure = MEASURE_BY_LABEL.get(key)
            if measure is None:
                out[f"l{key}"] = value
            else:
                name, scale = measure
                out[name] = value / _POW[-scale] if scale else value
            continue
        name = LABEL_KEY.get(key) or f"k{key}"
        vt = type(value)
        if vt is list and depth == 0 and name == "records":
            out[name] = [_expand(r, base_s, 1) if type(r) is dict else r for r in value]
        elif vt is dict and depth < 4:
            out[name] = _expand(value, base_s, depth + 1)
        else:
            out[name] = value
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _decode_json(payload: bytes) -> list[UplinkEvent]:
    try:
        doc = json.loads(payload)
        if doc["v"] != FORMAT_VERSION:
            raise PayloadError(f"unsupported batch version {doc['v']!r}")
        prio = Priority.from_lane(doc["lane"])
        return [
            UplinkEvent(str(doc["gw"]), str(doc["epoch"]), prio, str(e["src"]), int(e["seq"]), int(e["ts"]),
                        str(e["kind"]), dict(e["body"]))
            for e in doc["events"]
        ]
    except PayloadError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise PayloadError(f"malformed JSON batch: {exc!r}") from exc


# ---------------------------------------------------------------------------------------------- state
def encode_state(doc: Mapping[str, Any]) -> bytes:
    """The retained gateway state (birth and death) is always JSON: rare, small, readable with any tool."""
    return json.dumps(doc, separators=(",", ":"), default=_json_default).encode()


def decode_state(payload: bytes) -> dict[str, Any]:
    """Parse a state message; raises :class:`PayloadError`."""
    try:
        doc = json.loads(payload)
    except ValueError as exc:
        raise PayloadError(f"state is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or "online" not in doc or "bdSeq" not in doc:
        raise PayloadError("state must be a JSON object with 'online' and 'bdSeq'")
    return doc


def decode_command(payload: bytes) -> dict[str, Any]:
    """A command payload (JSON object or CBOR map with text keys); raises :class:`PayloadError`."""
    if not payload:
        return {}
    try:
        doc = json.loads(payload) if payload[:1] == b"{" else cbor2.loads(payload)
    except Exception as exc:
        raise PayloadError(f"command payload is neither a JSON object nor a CBOR map: {exc}") from exc
    if not isinstance(doc, dict) or not all(isinstance(k, str) for k in doc):
        raise PayloadError("a command payload is a map with text keys")
    return doc
