"""cewire on the real MicroPython VM: the same vectors as on CPython, a bounded fuzz run, allocation budget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hil_tests.emulator.runner import FIRMWARE_LIB, MicroPythonSession, run_micropython

VECTORS = Path(__file__).parent / "vectors"

CHECK = r"""
import json, cewire as w
from cewire import cbor
d = json.load(open('/vectors/frames.json'))
ring = w.Keyring()
for k in d['keys']:
    ring.add(k['node'], bytes.fromhex(k['key_hex']), k['key_id'])
def intkeys(o):
    if isinstance(o, dict):
        return {(int(k) if k.lstrip('-').isdigit() else k): intkeys(v) for k, v in o.items()}
    if isinstance(o, list):
        return [intkeys(v) for v in o]
    return o
out = {'valid': {}, 'invalid': {}, 'replay': [], 'cobs': []}
for v in d['valid']:
    f = w.decode_frame(bytes.fromhex(v['hex']), ring, v['direction'])
    again = w.encode_frame(f.ftype, f.node_id, f.seq, f.ts, f.flags, cbor.dumps(f.body),
                           ring.lookup(f.node_id, f.key_id), back=f.back)
    out['valid'][v['name']] = [f.ftype, f.node_id, f.seq, f.ts, f.flags, f.key_id, f.back,
                               f.body == intkeys(v['body']), again.hex() == v['hex']]
for v in d['invalid']:
    try:
        w.decode_frame(bytes.fromhex(v['hex']), ring, v['direction'])
        out['invalid'][v['name']] = 'accepted'
    except w.WireError as e:
        out['invalid'][v['name']] = e.code
rx = w.Receiver(ring)
for s in d['replay']:
    try:
        f = rx.verify(bytes.fromhex(s['hex']))
        cum = rx.commit(f)
        err = 0
    except w.WireError as e:
        err = e.code
        cum = rx.acks(0x42)[0]
    out['replay'].append([err, cum])
for c in d['cobs']:
    raw = bytes.fromhex(c['raw'])
    out['cobs'].append(w.cobs_encode(raw).hex() == c['enc'] and w.cobs_decode(bytes.fromhex(c['enc'])) == raw)
print(json.dumps(out))
"""

FUZZ = r"""
import random, time, json, cewire as w
from cewire import cbor
d = json.load(open('/vectors/frames.json'))
ring = w.Keyring()
for k in d['keys']:
    ring.add(k['node'], bytes.fromhex(k['key_hex']), k['key_id'])
seeds = [bytes.fromhex(v['hex']) for v in d['valid']]
dec = w.StreamDecoder()
other = []
n = 0
t0 = time.ticks_ms()
while time.ticks_diff(time.ticks_ms(), t0) < 1500:
    if random.getrandbits(1):
        data = bytes(random.getrandbits(8) for _ in range(random.getrandbits(8)))
    else:
        b = bytearray(random.choice(seeds))
        b[random.getrandbits(8) % len(b)] ^= random.getrandbits(8) | 1
        data = bytes(b)
    for fn in (lambda: w.decode_frame(data, ring), lambda: cbor.loads(data), lambda: w.cobs_decode(data)):
        try:
            fn()
        except w.WireError:
            pass
        except Exception as e:
            other.append(repr(e))
    dec.feed(data)
    n += 1
print(json.dumps({'n': n, 'other': other[:5]}))
"""

ALLOC = r"""
import gc, cewire as w
from cewire import payloads as p
key = w.Key(bytes(range(32)), 0)
ring = w.Keyring()
ring.add(7, key)
enc = w.Encoder(7, key)
pl = p.data({p.L_LEVEL: 505, p.L_POWER: 423, p.L_VOLTAGE: 2301})
frame = bytes(enc.frame(w.T_DATA, 1, 1763700000, pl))
gc.collect()
gc.disable()
a = gc.mem_alloc()
for i in range(200):
    enc.stream(w.T_DATA, i + 1, 1763700000, pl)
b = gc.mem_alloc()
for i in range(200):
    w.decode_frame(frame, ring)
c = gc.mem_alloc()
gc.enable()
print((b - a) // 200, (c - b) // 200)
"""


# a node's check of each gateway frame once the window has filled: a 64-bit integer mask would be a big
# integer on a 32-bit port (small integers end at 2**30), and every shift of it a new one
WINDOW_ALLOC = r"""
import gc, cewire as w
win = w.ReplayWindow(100000, 0, 100000)
seq = 100001
win.seen(seq); win.mark(seq)
gc.collect()
gc.disable()
a = gc.mem_alloc()
for i in range(2, 202):
    if not win.seen(seq + i):
        win.mark(seq + i)
b = gc.mem_alloc()
gc.enable()
print(b - a, win.top - seq, win.cum - seq)
"""


# what a node imports (node.link, the apps' cewire imports), and what it finds there
NODE = r"""
import sys, json
import node.link
from cewire import codes, payloads
from cewire.frame import PRIO_HIGH, CH_BULK
import cewire
names = [payloads.L_LEVEL, payloads.CS_OK, payloads.EV_RAISED, payloads.RESET_WDT, codes.NAMES.get(codes.SPO2_LOW),
         cewire.T_DATA]
print(json.dumps([sorted(k for k in sys.modules if k.startswith('cewire') or k == 'hmac'), names]))
"""


@pytest.fixture(scope="module")
def mp() -> Any:
    with MicroPythonSession(mounts={FIRMWARE_LIB: "/lib", VECTORS: "/vectors"}) as session:
        yield session


def test_vectors_on_micropython(mp: MicroPythonSession) -> None:
    data = json.loads((VECTORS / "frames.json").read_text())
    got = json.loads(mp.run(CHECK).check().stdout)
    for v in data["valid"]:
        assert got["valid"][v["name"]] == [
            v["type"],
            v["node"],
            v["seq"],
            v["ts"],
            v["flags"],
            v["key_id"],
            v["back"],
            True,
            True,
        ], v["name"]
    assert got["invalid"] == {v["name"]: v["error"] for v in data["invalid"]}
    assert got["replay"] == [[s["error"], s["cum"]] for s in data["replay"]]
    assert got["cobs"] == [True] * len(data["cobs"])


def test_fuzz_on_micropython_raises_only_wire_errors(mp: MicroPythonSession) -> None:
    got = json.loads(mp.run(FUZZ).check().stdout)
    assert got["other"] == []
    assert got["n"] > 100  # the loop really ran (about 1,500 on an idle core)


def test_encoding_a_frame_allocates_less_than_512_bytes(mp: MicroPythonSession) -> None:
    enc_alloc, dec_alloc = map(int, mp.run(ALLOC).check().stdout.split())
    assert 0 < enc_alloc <= 512
    assert dec_alloc < 2048  # verify+decode builds the body dict and the Frame


def test_checking_and_marking_a_frame_allocates_nothing(mp: MicroPythonSession) -> None:
    alloc, top, cum = map(int, mp.run(WINDOW_ALLOC).check().stdout.split())
    assert (top, cum) == (201, 0)  # every other number skipped: cum stays, the window slides
    assert alloc <= 32, alloc  # 200 frames; the 64-bit integer mask left 18.6 KB of big integers here


def test_a_node_never_loads_the_host_half() -> None:
    """On a node every loaded module costs heap: what the node uses must not pull in the gateway's half."""
    loaded, names = json.loads(run_micropython(NODE, mounts={FIRMWARE_LIB: "/lib"}).check().stdout)
    assert loaded == ["cewire", "cewire.cbor", "cewire.codes", "cewire.errors", "cewire.frame", "cewire.payloads"]
    assert names == [16, 0, 1, 3, "spo2_low", 2]
