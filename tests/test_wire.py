"""cewire on CPython: the shared vectors, property tests (hypothesis) and a bounded fuzz run of the decoders."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

import cbor2
import cewire as w
import pytest
from cewire import cbor
from cewire import payloads as p
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

VECTORS = json.loads((Path(__file__).parent / "vectors" / "frames.json").read_text())
KEY = bytes(range(32))


def ring() -> w.Keyring:
    r = w.Keyring()
    for k in VECTORS["keys"]:
        r.add(k["node"], bytes.fromhex(k["key_hex"]), k["key_id"])
    return r


def intkeys(obj: Any) -> Any:
    """JSON bodies have string keys; CBOR labels are ints."""
    if isinstance(obj, dict):
        return {(int(k) if k.lstrip("-").isdigit() else k): intkeys(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [intkeys(v) for v in obj]
    return obj


# --- vectors -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("vec", VECTORS["valid"], ids=lambda v: v["name"])
def test_valid_vector_decodes_and_reencodes(vec: dict[str, Any]) -> None:
    keys = ring()
    f = w.decode_frame(bytes.fromhex(vec["hex"]), keys, vec["direction"])
    assert (f.ftype, f.node_id, f.seq, f.ts, f.flags, f.key_id, f.back) == (
        vec["type"],
        vec["node"],
        vec["seq"],
        vec["ts"],
        vec["flags"],
        vec["key_id"],
        vec["back"],
    )
    assert (f.channel, f.priority) == (vec["channel"], vec["priority"])
    assert f.body == intkeys(vec["body"])
    assert f.payload.hex() == vec["payload_hex"]
    # our encoder produces the same bytes (deterministic CBOR, same MAC) from the decoded fields
    again = w.encode_frame(
        f.ftype, f.node_id, f.seq, f.ts, f.flags, cbor.dumps(f.body), keys.lookup(f.node_id, f.key_id), back=f.back
    )
    assert again.hex() == vec["hex"]


@pytest.mark.parametrize("vec", VECTORS["invalid"], ids=lambda v: v["name"])
def test_invalid_vector_is_refused_with_its_code(vec: dict[str, Any]) -> None:
    with pytest.raises(w.WireError) as exc:
        w.decode_frame(bytes.fromhex(vec["hex"]), ring(), vec["direction"])
    assert exc.value.code == vec["error"]
    assert exc.value.name == vec["error_name"]


def test_replay_scenario_vectors() -> None:
    rx = w.Receiver(ring())
    for step in VECTORS["replay"]:
        try:
            f = rx.verify(bytes.fromhex(step["hex"]))
            cum = rx.commit(f)
            err = 0
        except w.WireError as e:
            err = e.code
            cum = rx.acks(0x42)[0]
        assert (err, cum) == (step["error"], step["cum"]), step
    assert rx.counts == {"ok": 8, "replay": 2}


@pytest.mark.parametrize("vec", VECTORS["cobs"], ids=lambda v: str(len(v["raw"]) // 2))
def test_cobs_vectors(vec: dict[str, str]) -> None:
    raw, enc = bytes.fromhex(vec["raw"]), bytes.fromhex(vec["enc"])
    assert w.cobs_encode(raw) == enc
    assert w.cobs_decode(enc) == raw
    if raw:
        assert w.StreamDecoder(max_frame=300).feed(enc) == [raw]


def test_parsers_give_typed_fields() -> None:
    keys = ring()
    by = {v["name"]: w.decode_frame(bytes.fromhex(v["hex"]), keys) for v in VECTORS["valid"]}
    assert p.parse_hello(by["hello"].body)["caps"] == ["meter", "pir"]
    assert p.parse_event(by["event_alarm_high"].body)["limit"] == 800
    assert p.parse_ack(by["ack_both_channels"].body) == {0: 12, 1: 96}
    assert p.parse_cmd(by["cmd_override"].body)[1:3] == ("override", {"level": 1000, "duration": 600})
    assert p.parse_time(by["time"].body) == (1763700000, 250, 60)
    vitals = p.parse_data(by["data_vitals_batch"].body, by["data_vitals_batch"].ts)
    assert [t for t, _ in vitals] == [1763700000 - 2, 1763700000 - 1, 1763700000]
    assert vitals[0][1][p.L_SPO2] == 975
    with pytest.raises(w.WireError) as exc:
        p.parse_event({0: "x"})
    assert exc.value.code == w.E_PAYLOAD
    with pytest.raises(w.WireError):
        p.parse_data([{16: 1.5}])


def test_node_half_and_host_half_agree_on_the_labels() -> None:
    """payloads (the node's half) folds the map labels into its code; host_payloads names them: both must agree."""
    from cewire import host_payloads

    labels = [n for n in host_payloads.__all__ if n.split("_")[0] in ("H", "E", "C", "A", "TM")]
    assert len(labels) == 25
    assert {n: getattr(host_payloads, n) for n in labels} == {n: getattr(p, "_" + n) for n in labels}
    assert p.H_ROLE == 0 and p.ack is host_payloads.ack  # re-exported on CPython


def test_event_code_names_match_the_constants() -> None:
    consts = {n: v for n, v in vars(w.codes).items() if n.isupper() and isinstance(v, int)}
    assert len(consts) == 31
    assert {n: w.codes.NAMES.get(v) for n, v in consts.items()} == {n: n.lower() for n in consts}
    assert w.codes.NAMES.get(15) is None and w.codes.NAMES.get(200, "code200") == "code200"
    assert w.codes.NAMES.get(True) is None and w.codes.NAMES.get(-1) is None


def test_error_names_follow_the_spec() -> None:
    assert w.ERROR_NAMES == {
        1: "truncated", 2: "oversize", 3: "version", 4: "type", 5: "header", 6: "unknown_node", 7: "key_id",
        8: "mac", 9: "replay", 10: "payload", 11: "cobs", 12: "range",
    }  # fmt: skip
    e = w.WireError(w.E_MAC, "node 7 seq 3")
    assert (e.name, str(e)) == ("mac", "wire error 8 (mac): node 7 seq 3")
    assert w.WireError(99).name == "unknown"


def test_key_material_never_printed() -> None:
    k = w.Key(KEY, 3)
    assert KEY.hex() not in repr(k) and "3" in repr(k)
    with pytest.raises(w.WireError) as exc:
        w.Key(b"short")
    assert exc.value.code == w.E_RANGE


def test_stream_decoder_resyncs_after_garbage_and_cut_frames() -> None:
    frames = [w.encode_frame(w.T_DATA, 9, i, 0, w.flags_for(w.CH_BULK), p.data({16: i}), KEY) for i in range(1, 6)]
    wire = [w.cobs_encode(f) for f in frames]
    stream = b"\xff\xfe\x13garbage" + wire[0] + wire[1][:7] + b"\x00" + wire[2] + b"\x00\x00" + bytes(range(1, 200))
    stream += b"\x00" + wire[3] + b"\x01" * 400 + b"\x00" + wire[4]
    dec = w.StreamDecoder()
    got: list[bytes] = []
    for i in range(0, len(stream), 13):  # arbitrary chunking
        got += dec.feed(stream[i : i + 13])
    keys = w.Keyring()
    keys.add(9, KEY)
    ok = []
    for g in got:
        try:
            ok.append(w.decode_frame(g, keys).seq)
        except w.WireError:
            pass
    # frame 1 is glued to the garbage before it (no delimiter between), frame 2 was cut: each lost alone
    assert ok == [3, 4, 5]
    assert dec.error_codes.get(w.E_OVERSIZE) == 1  # the 400-byte run was dropped, memory stayed bounded


# --- properties --------------------------------------------------------------------------------------
cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.integers(-100, 100) | st.text(max_size=5), children, max_size=5)
    ),
    max_leaves=20,
)


@given(cbor_values)
@settings(max_examples=300, deadline=None)
def test_cbor_round_trip_and_interop_with_cbor2(value: Any) -> None:
    enc = cbor.dumps(value)
    assert cbor.loads(enc) == value
    assert cbor2.loads(enc) == value
    assert cbor.loads(cbor2.dumps(value)) == value

    # the decoder also reads from a memoryview (a node decodes in its receive buffer) and from an offset
    assert cbor.loads(memoryview(b"\x00\x00" + enc), 2) == value


def test_cbor_text_must_be_utf8() -> None:
    with pytest.raises(w.WireError) as e:
        cbor.loads(memoryview(b"\x62\xff\xfe"))
    assert e.value.code == w.E_PAYLOAD
    assert cbor.loads(memoryview(b"\x82\x66sunset\x62\xc3\xa9")) == ["sunset", "\u00e9"]


frame_fields = st.tuples(
    st.sampled_from(sorted(w.TYPE_NAMES)),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 3),
    st.dictionaries(st.integers(0, 40), st.integers(-(2**31), 2**31), max_size=12),
    st.integers(0, 70000),
)


@given(frame_fields)
@settings(max_examples=300, deadline=None)
def test_frame_round_trip_plain_and_streamed(fields: tuple) -> None:
    ftype, node, seq, ts, prio, body, back = fields
    key = w.Key(KEY, 5)
    keys = w.Keyring()
    keys.add(node, key)
    raw = w.encode_frame(ftype, node, seq, ts, w.flags_for(w.channel_of(ftype), prio), body, key, back=back)
    for buf in (raw, *w.StreamDecoder().feed(b"\x00junk\x00" + w.cobs_encode(raw))[1:]):
        f = w.decode_frame(buf, keys)
        assert (f.ftype, f.node_id, f.seq, f.ts, f.priority, f.body) == (ftype, node, seq, ts, prio, body)
        assert f.back == min(back, 0xFFFF)


@given(st.binary(max_size=300))
@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_decoders_raise_only_wire_errors(data: bytes) -> None:
    keys = ring()
    for fn in (lambda: w.decode_frame(data, keys), lambda: cbor.loads(data), lambda: w.cobs_decode(data)):
        try:
            fn()
        except w.WireError as e:
            assert e.code in w.ERROR_NAMES
    w.StreamDecoder().feed(data)


@given(st.sampled_from(VECTORS["valid"]), st.integers(0, 255), st.integers(1, 255))
@settings(max_examples=500, deadline=None)
def test_any_single_byte_change_is_refused(vec: dict[str, Any], pos: int, xor: int) -> None:
    buf = bytearray.fromhex(vec["hex"])
    buf[pos % len(buf)] ^= xor
    with pytest.raises(w.WireError):
        w.decode_frame(bytes(buf), ring(), vec["direction"])


@given(st.lists(st.integers(1, 60), min_size=1, max_size=200))
@settings(max_examples=300, deadline=None)
def test_replay_window_accepts_each_seq_once(arrivals: list[int]) -> None:
    win = w.ReplayWindow()
    accepted = []
    for s in arrivals:
        if not win.seen(s):
            win.mark(s, base=1)
            accepted.append(s)
    assert sorted(accepted) == sorted(set(arrivals))
    # cum is the longest received prefix 1..cum
    cum = 0
    while cum + 1 in set(arrivals):
        cum += 1
    assert win.cum == cum


class _MaskWindow:
    """The window as one 64-bit integer mask (cewire until 2026-11-22): the model the bit ring must follow."""

    def __init__(self) -> None:
        self.top = self.mask = self.cum = 0

    def seen(self, seq: int) -> bool:
        if seq <= 0 or seq <= self.cum:
            return True
        if seq > self.top:
            return False
        off = self.top - seq
        return off >= 64 or bool((self.mask >> off) & 1)

    def mark(self, seq: int, base: int) -> int:
        if seq > self.top:
            shift = seq - self.top
            self.mask = ((self.mask << shift) | 1) & ((1 << 64) - 1) if shift < 64 else 1
            self.top = seq
        else:
            self.mask |= 1 << (self.top - seq)
        return self.advance(base)

    def advance(self, base: int) -> int:
        skipped = 0
        if base - 1 > self.cum:
            lo, self.cum = self.cum, min(base - 1, self.top)
            skipped = sum(1 for s in range(lo + 1, self.cum + 1) if not self._bit(s))
        while self.cum < self.top and self._bit(self.cum + 1):
            self.cum += 1
        return skipped

    def _bit(self, seq: int) -> bool:
        off = self.top - seq
        return 0 <= off < 64 and bool((self.mask >> off) & 1)


@given(st.lists(st.tuples(st.integers(1, 600), st.integers(0, 600)), min_size=1, max_size=300))
@settings(max_examples=300, deadline=None)
def test_replay_window_ring_follows_the_mask_model(arrivals: list[tuple[int, int]]) -> None:
    """Arrivals far apart (the ring wraps, numbers fall out of the window), bases that skip: same answers,
    same state, and an exported state restores to the same window."""
    win, model = w.ReplayWindow(), _MaskWindow()
    for seq, base in arrivals:
        assert win.seen(seq) == model.seen(seq)
        if model.seen(seq):
            assert win.advance(base) == model.advance(base)
        else:
            assert win.mark(seq, base) == model.mark(seq, base)
        assert (win.top, win.mask, win.cum) == (model.top, model.mask, model.cum)
    again = w.ReplayWindow(win.top, win.mask, win.cum)
    assert [again.seen(s) for s in range(1, 700)] == [win.seen(s) for s in range(1, 700)]


# --- bounded fuzz ------------------------------------------------------------------------------------
def test_fuzz_decoders_for_a_bounded_time() -> None:
    """Random and mutated inputs for ~3 s: every outcome is a frame or a WireError, and nothing hangs."""
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    keys = ring()
    seeds = [bytes.fromhex(v["hex"]) for v in VECTORS["valid"]]
    dec = w.StreamDecoder()
    deadline = time.monotonic() + 3.0
    n = accepted = 0
    while time.monotonic() < deadline:
        if rng.random() < 0.5:
            data = rng.randbytes(rng.randrange(0, 300))
        else:
            b = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(1, 4)):
                op = rng.randrange(3)
                if op == 0 and b:
                    b[rng.randrange(len(b))] = rng.randrange(256)
                elif op == 1:
                    b.insert(rng.randrange(len(b) + 1), rng.randrange(256))
                elif b:
                    del b[rng.randrange(len(b))]
            data = bytes(b)
        try:
            w.decode_frame(data, keys)
            accepted += 1
        except w.WireError:
            pass
        try:
            cbor.loads(data[18:])
        except w.WireError:
            pass
        t0 = time.monotonic()
        dec.feed(data)
        assert time.monotonic() - t0 < 0.5
        n += 1
    assert n > 1000  # the loop really ran (about 50k on an idle core)
    assert accepted < n  # mutated frames are overwhelmingly refused (cbor of a tail may parse)
