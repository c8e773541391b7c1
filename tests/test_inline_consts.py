"""The build-time constant pass over a node image (tools/flash/inline_consts.py), on CPython and on the VM."""

from __future__ import annotations

from pathlib import Path

import pytest

from cityedge.firmware_files import HOST_ONLY, app_files, fixed_files
from tests.source_trees import probe_each, write_tree
from tools.flash import compile as mpy
from tools.flash.inline_consts import inline_consts, module_name

CODES = """\
from micropython import const

RED = const(1)
GREEN = const(2)
NEG = const(-3)
SPOKEN = const(4)  # some code asks for it by its name in a string
FSTR = const(5)
OUTSIDE = const(6)  # boot code outside the image uses it
BITS = const(0x10)
"""
USER = """\
from pkg.codes import (
    RED,
    GREEN as G,
)
from pkg import codes as C
import pkg.codes
from pkg.codes import FSTR
from pkg.codes import BITS as B


def colours():
    return [RED, G, C.NEG, pkg.codes.BITS, list(C.BITS.to_bytes(1, "big")), B]


def spoken():
    return getattr(C, "SPOKEN")


def fstr():
    return f"{FSTR}"
"""
SHADOW = """\
from pkg.codes import RED


def red():
    RED = 9  # a local of the same name: this module keeps the import
    return RED
"""
BOOT = "import pkg.codes\nprint(pkg.codes.OUTSIDE)\n"
PKG = {"lib/pkg/__init__.py": "", "lib/pkg/codes.py": CODES, "lib/pkg/user.py": USER, "lib/pkg/shadow.py": SHADOW}


def test_module_names_follow_the_board_path() -> None:
    assert module_name("lib/cewire/codes.py") == "cewire.codes"
    assert module_name("lib/cewire/__init__.py") == "cewire"
    assert module_name("app.json") is None and module_name("lib/x.mpy") is None


def test_constants_used_across_modules_become_their_values() -> None:
    out = inline_consts(PKG, {"/boot.py": BOOT})
    user, codes, shadow = out["lib/pkg/user.py"], out["lib/pkg/codes.py"], out["lib/pkg/shadow.py"]
    # every reference resolved: a from-import, its alias, a module alias, a dotted path, an attribute of one
    assert 'return [1, 2, (-3), 16, list((16).to_bytes(1, "big")), 16]' in user
    # a from-import loses the names nothing names any more (RED: shadow.py has a local of that name), over the
    # same lines; one left empty becomes ``pass``; the module imports stay
    assert user.splitlines()[:4] == ["from pkg.codes import RED", "", "", ""]
    assert user.splitlines()[7] == "pass"
    assert "from pkg import codes as C" in user and "import pkg.codes" in user
    # kept by name: in a string, in an f-string (its import stays), outside the image, in a local rebinding
    assert 'getattr(C, "SPOKEN")' in user and 'f"{FSTR}"' in user and "from pkg.codes import FSTR" in user
    assert shadow == SHADOW
    assert "\nSPOKEN = const(4)" in codes and "\nFSTR = const(5)" in codes and "\nOUTSIDE = const(6)" in codes
    assert "\nRED = const(1)" in codes  # shadow.py still imports it by name
    # nothing names these any more: private, so MicroPython does not store them
    for name in ("GREEN", "NEG", "BITS"):
        assert f"\n_{name} = const(" in codes, name
    for rel, text in out.items():
        assert len(text.splitlines()) == len(PKG[rel].splitlines()), rel
        compile(text, rel, "exec")


def test_rewritten_package_gives_the_same_results_on_micropython(tmp_path: Path) -> None:
    probe = (
        "import json, pkg.user as U, pkg.shadow as S, pkg.codes as K\n"
        "print(json.dumps([U.colours(), U.spoken(), U.fstr(), S.red(), sorted(k for k in dir(K) if k.isupper())]))"
    )
    trees = {tmp_path / "before": PKG, tmp_path / "after": inline_consts(PKG, {"/boot.py": BOOT})}
    results = probe_each(trees, probe)
    assert results[0][:4] == results[1][:4] == [[1, 2, -3, 16, [16], 16], 4, "5", 9]
    assert results[0][4] == ["BITS", "FSTR", "GREEN", "NEG", "OUTSIDE", "RED", "SPOKEN"]
    assert results[1][4] == ["FSTR", "OUTSIDE", "RED", "SPOKEN"]  # the others cost the board nothing now


@pytest.mark.parametrize("role", ["streetlight", "medical"])
def test_node_images_keep_their_lines_and_lose_the_code_names(role: str) -> None:
    sources = {rel: path.read_text() for rel, path in app_files(role).items()}
    assert not {f"lib/{rel}" for rel in HOST_ONLY} & set(sources)  # the gateway's half is not on a node
    out = inline_consts(sources, {p: src.read_text() for p, src in fixed_files(role).items()})
    for rel, text in out.items():
        assert len(text.splitlines()) == len(sources[rel].splitlines()), rel
        compile(text, rel, "exec")
    codes = out["lib/cewire/codes.py"]
    assert "\n_LAMP_FAILURE = const(1)" in codes and "\n_SPO2_LOW = const(64)" in codes
    assert "\nT_HELLO = const(" not in out["lib/cewire/frame.py"]
    if role == "streetlight":
        assert "from cewire.codes import" not in out["lib/streetlight/faults.py"]
        app = out["lib/streetlight/app.py"]
        assert "\nimport board" not in app and "board.PIN_" not in app  # the pin map is built in


def test_the_pin_map_is_built_into_the_image() -> None:
    pins = "from micropython import const\nPIN_LED = const(2)\nNAME = 'devkit'\n"
    lamp = "import board\n\n\ndef led():\n    return board.PIN_LED\n"
    named = "import board\n\n\ndef name():\n    return board.NAME, board.PIN_LED\n"
    image = {"lib/pkg/__init__.py": "", "lib/pkg/lamp.py": lamp, "lib/pkg/named.py": named}
    out = inline_consts(image, {"/lib/board.py": pins, "/boot.py": "import board\n"})
    assert out["lib/pkg/lamp.py"] == "pass\n\n\ndef led():\n    return 2\n"
    # a module that still needs the file keeps its import; the file itself is not the image's to change
    assert out["lib/pkg/named.py"] == named.replace("board.PIN_LED", "2")
    assert "lib/board.py" not in out
    assert inline_consts(image, {"/boot.py": "pass\n"}) == image  # no pin map outside: nothing to inline


def test_build_runs_the_pass_for_an_image_and_names_rom_files_by_their_path(tmp_path: Path) -> None:
    src = write_tree(tmp_path, PKG)
    boot = tmp_path / "boot.py"
    boot.write_text(BOOT)
    plain = mpy.build(src, 6)
    image = mpy.build(src, 6, outside={"/boot.py": boot}, source_name=lambda p: f"/rom{p[:-3]}.mpy")
    assert b"GREEN" in plain["/lib/pkg/codes.mpy"] and b"GREEN" not in image["/lib/pkg/codes.mpy"]
    assert b"lib/pkg/user.py" in plain["/lib/pkg/user.mpy"]
    assert b"/rom/lib/pkg/user.mpy" in image["/lib/pkg/user.mpy"]  # one interned name with the module's __file__

