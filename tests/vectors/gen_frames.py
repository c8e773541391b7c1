"""Generate tests/vectors/frames.json independently of cewire: stdlib hmac + struct + cbor2 (canonical).

Run ``python tests/vectors/gen_frames.py`` after a deliberate protocol change; the committed JSON is what
both implementations (CPython and the MicroPython VM) are checked against.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from pathlib import Path
from typing import Any

import cbor2

OUT = Path(__file__).with_name("frames.json")
KEY_A = hashlib.sha256(b"cityedge test vector key A").digest()
KEY_A2 = hashlib.sha256(b"cityedge test vector key A, rotated").digest()
KEY_B = hashlib.sha256(b"cityedge test vector key B").digest()
NODE_A = 0x00C0FFEE
NODE_B = 0x42
TS = 1_763_700_000  # 2025-11-21T04:40:00Z


def cbor(obj: Any) -> bytes:
    return cbor2.dumps(obj, canonical=True)


def frame(ftype: int, node: int, seq: int, ts: int, flags: int, payload: bytes, key: bytes, key_id: int,
          back: int = 0, version: int = 1) -> bytes:
    hdr = struct.pack(">BBBBIIIH", version, ftype, flags, key_id, node, seq, ts, back)
    return hdr + payload + hmac.digest(key, hdr + payload, "sha256")[:8]


def jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [jsonable(v) for v in obj]
    return obj


def valid(name: str, direction: int, ftype: int, node: int, seq: int, ts: int, prio: int, body: Any,
          key: bytes, key_id: int, back: int = 0) -> dict:
    ch = 1 if ftype == 2 else 0
    flags = (ch << 4) | prio
    payload = cbor(body)
    return {
        "name": name, "direction": direction, "type": ftype, "node": node, "seq": seq, "ts": ts,
        "flags": flags, "channel": ch, "priority": prio, "key_id": key_id, "back": back,
        "payload_hex": payload.hex(), "body": jsonable(body),
        "hex": frame(ftype, node, seq, ts, flags, payload, key, key_id, back).hex(),
    }


def main() -> None:
    good = [
        valid("hello", 1, 1, NODE_A, 1, 0, 0,
              {0: "streetlight", 1: "1.0.0", 2: 17, 3: 3, 4: ["meter", "pir"], 5: "esp32_devkit"}, KEY_A, 1),
        valid("data_streetlight", 1, 2, NODE_A, 96, TS, 0,
              {16: 505, 17: 423, 18: 2301, 19: 184, 20: 123456, 21: 35, 22: 3600000, 23: 812}, KEY_A, 1, 3),
        valid("data_vitals_batch", 1, 2, NODE_B, 7, TS, 0,
              [{6: -2, 25: 725, 26: 975, 27: 312, 28: 96, 31: 2},
               {6: -1, 25: 731, 26: 974, 27: 305, 28: 95, 31: 2},
               {6: 0, 25: 729, 26: 976, 27: 308, 28: 97, 31: 2}], KEY_B, 0),
        valid("event_alarm_high", 1, 3, NODE_B, 3, TS, 3,
              {0: 65, 1: 1, 3: 780, 5: 26, 6: 800, 7: 4}, KEY_B, 0),
        valid("event_fault_text", 1, 3, NODE_A, 12, TS, 2,
              {0: 1, 1: 1, 3: 12, 5: 17, 4: "lampe défaillante"}, KEY_A, 1),
        valid("ack_both_channels", 2, 4, NODE_A, 5, TS, 0, {0: 12, 1: 96}, KEY_A, 1),
        valid("cmd_override", 2, 5, NODE_A, 6, TS, 0,
              {0: 9001, 1: "override", 2: {"level": 1000, "duration": 600}, 3: TS + 300}, KEY_A, 1),
        valid("cmd_ack_ok", 1, 6, NODE_A, 13, TS, 0, {0: 9001, 1: 0}, KEY_A, 1),
        valid("time", 2, 7, NODE_B, 1, TS, 0, {0: TS, 1: 250, 2: 60}, KEY_B, 0),
        valid("hello_rotated_key", 1, 1, NODE_A, 40, TS, 0,
              {0: "streetlight", 1: "1.0.1", 2: 18, 3: 1, 4: [], 7: 6}, KEY_A2, 2),
    ]
    base = bytes.fromhex(good[3]["hex"])  # the alarm frame
    payload = bytes.fromhex(good[3]["payload_hex"])

    def bad(name: str, data: bytes, code: int, err: str, direction: int = 0) -> dict:
        return {"name": name, "hex": data.hex(), "error": code, "error_name": err, "direction": direction}

    flipped_mac = bytearray(base)
    flipped_mac[-1] ^= 1
    flipped_body = bytearray(base)
    flipped_body[20] ^= 0x40
    seq_changed = bytearray(base)
    seq_changed[11] ^= 1
    big_payload = cbor({0: 1, 1: 1, 4: "x" * 220})
    bad_frames = [
        bad("bad_mac", bytes(flipped_mac), 8, "mac"),
        bad("bad_mac_payload_changed", bytes(flipped_body), 8, "mac"),
        bad("bad_mac_seq_changed", bytes(seq_changed), 8, "mac"),
        bad("bad_mac_wrong_key", frame(3, NODE_B, 3, TS, 3, payload, KEY_A, 0), 8, "mac"),
        bad("truncated_empty", b"", 1, "truncated"),
        bad("truncated_header", base[:17], 1, "truncated"),
        bad("truncated_mac", base[:25], 1, "truncated"),
        bad("truncated_cut_tail", base[:-3], 8, "mac"),
        bad("oversized", frame(3, NODE_B, 3, TS, 3, big_payload + b"\x00" * (257 - 26 - len(big_payload)),
                               KEY_B, 0), 2, "oversize"),
        bad("unknown_version", frame(3, NODE_B, 3, TS, 3, payload, KEY_B, 0, version=2), 3, "version"),
        bad("unknown_type", frame(9, NODE_B, 3, TS, 0, payload, KEY_B, 0), 4, "type"),
        bad("wrong_direction_ack_from_node", bytes.fromhex(good[5]["hex"]), 4, "type", direction=1),
        bad("wrong_direction_event_to_node", base, 4, "type", direction=2),
        bad("reserved_flag_bits", frame(3, NODE_B, 3, TS, 0x83, payload, KEY_B, 0), 5, "header"),
        bad("data_on_event_channel", frame(2, NODE_B, 3, TS, 0x00, cbor({16: 1}), KEY_B, 0), 5, "header"),
        bad("unknown_node", frame(3, 0xDEAD, 3, TS, 3, payload, KEY_B, 0), 6, "unknown_node"),
        bad("unknown_key_id", frame(3, NODE_B, 3, TS, 3, payload, KEY_B, 7), 7, "key_id"),
        bad("payload_not_cbor", frame(3, NODE_B, 3, TS, 3, b"\xff\x00", KEY_B, 0), 10, "payload"),
        bad("payload_trailing_bytes", frame(3, NODE_B, 3, TS, 3, payload + b"\x01", KEY_B, 0), 10, "payload"),
        bad("payload_not_a_map", frame(3, NODE_B, 3, TS, 3, cbor(5), KEY_B, 0), 10, "payload"),
        bad("payload_tagged", frame(3, NODE_B, 3, TS, 3, b"\xc1\x1a\x00\x00\x00\x01", KEY_B, 0), 10, "payload"),
        bad("payload_indefinite_map", frame(3, NODE_B, 3, TS, 3, b"\xbf\x00\x01\xff", KEY_B, 0), 10, "payload"),
        bad("payload_cbor_cut", frame(3, NODE_B, 3, TS, 3, payload[:-1], KEY_B, 0), 1, "truncated"),
    ]
    # replay / acknowledgement scenario for one node's event channel, fed in order to a Receiver
    def ev(seq: int, back: int = 0) -> str:
        return frame(3, NODE_B, seq, TS, 2, cbor({0: 80, 1: 1}), KEY_B, 0, back).hex()

    replay = [
        {"hex": ev(1), "error": 0, "cum": 1},
        {"hex": ev(2, 1), "error": 0, "cum": 2},
        {"hex": ev(2, 1), "error": 9, "cum": 2, "why": "duplicate (ACK lost)"},
        {"hex": ev(4, 2), "error": 0, "cum": 2, "why": "3 missing: cum waits"},
        {"hex": ev(3, 1), "error": 0, "cum": 4, "why": "3 arrives late: cum jumps"},
        {"hex": ev(40, 0), "error": 0, "cum": 40, "why": "after a reboot: back=0 makes 5..39 final"},
        {"hex": ev(1), "error": 9, "cum": 40, "why": "old frame replayed"},
        {"hex": ev(45, 2), "error": 0, "cum": 42, "why": "back=2: 41..42 dropped by the node"},
        {"hex": ev(43, 0), "error": 0, "cum": 43},
        {"hex": ev(44, 1), "error": 0, "cum": 45},
    ]
    cobs = [
        {"raw": "", "enc": "0100"},
        {"raw": "00", "enc": "010100"},
        {"raw": "0000", "enc": "01010100"},
        {"raw": "11220033", "enc": "0311220233" + "00"},
        {"raw": "1122330044", "enc": "041122330244" + "00"},
        {"raw": "01" * 254, "enc": "ff" + "01" * 254 + "01" + "00"},
        {"raw": "01" * 255, "enc": "ff" + "01" * 254 + "0201" + "00"},
        {"raw": "00" + "01" * 254, "enc": "01ff" + "01" * 254 + "01" + "00"},
    ]
    doc = {
        "about": "cewire v1 test vectors (docs/protocol.md); generated by gen_frames.py with stdlib hmac + cbor2",
        "keys": [
            {"node": NODE_A, "key_id": 1, "key_hex": KEY_A.hex()},
            {"node": NODE_A, "key_id": 2, "key_hex": KEY_A2.hex()},
            {"node": NODE_B, "key_id": 0, "key_hex": KEY_B.hex()},
        ],
        "valid": good,
        "invalid": bad_frames,
        "replay": replay,
        "cobs": cobs,
    }
    OUT.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
