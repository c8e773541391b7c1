"""The node heap benchmarks' stand-in ``binascii`` (benchmarks/vm_node_harness.py), on the MicroPython VM."""

from __future__ import annotations

import binascii
import json
import random
from pathlib import Path

from benchmarks.vm_node_harness import BINASCII
from hil_tests.emulator.runner import MicroPythonSession

PROBE = """
import sys, gc, json
sys.path.insert(1, '/stub')  # as the benchmarks do: before the VM's frozen modules
import binascii as B
crcs = [B.crc32(bytes(d), c) for d, c in CASES]
b = bytes(range(100))
B.crc32(b)
a = big = used = used_chained = 0  # bound before measuring: a new global could grow the module's dict
a = gc.mem_alloc(); big = B.crc32(b); used = gc.mem_alloc() - a
a = gc.mem_alloc(); B.crc32(b, big); used_chained = gc.mem_alloc() - a
print(json.dumps([B.__file__, crcs, big, used, used_chained]))
"""


def _run(tmp_path: Path, stub: bool) -> tuple[list, int]:
    """The probe's results on a fresh VM, with the stand-in or the VM's own binascii, and the names interned."""
    rng = random.Random(5)
    cases = [([rng.randrange(256) for _ in range(n)], rng.choice([0, 1, 0xFFFFFFFF, rng.getrandbits(32)]))
             for n in (0, 1, 7, 64, 300)]
    (tmp_path / "stub").mkdir(parents=True)
    if stub:
        (tmp_path / "stub" / "binascii.py").write_text(BINASCII)
    with MicroPythonSession(mounts={tmp_path / "stub": "/stub"}) as mp:
        out = json.loads(mp.run(f"CASES = {cases!r}\n" + PROBE).check().stdout)
        info = mp.run("import micropython\nmicropython.qstr_info()\n").check().stdout
    assert out[1] == [binascii.crc32(bytes(d), c) for d, c in cases]
    assert out[2] == binascii.crc32(bytes(range(100)))
    return out, int(info.split("n_qstr=")[1].split(",")[0])


def test_stand_in_crc32_matches_zlib_and_allocates_only_its_result(tmp_path: Path) -> None:
    out = _run(tmp_path, stub=True)[0]
    assert out[0] == "/stub/binascii.py"
    assert out[2] >= 1 << 30 and out[3] <= 32  # one big integer, as from the C function
    assert out[4] <= 32  # a big integer passed in costs nothing more


def test_stand_in_interns_far_fewer_names_than_the_vms_own(tmp_path: Path) -> None:
    own = _run(tmp_path / "own", stub=False)[1]
    stand_in = _run(tmp_path / "stand_in", stub=True)[1]
    # the VM's micropython-lib binascii interns 45 one-character names for its base64 tables
    assert own - stand_in >= 30, (own, stand_in)
