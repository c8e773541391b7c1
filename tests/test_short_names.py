"""The build-time private-name pass over a node image (tools/flash/short_names.py), on CPython and on the VM."""

from __future__ import annotations

from pathlib import Path

import pytest

from cityedge.firmware_files import app_files, fixed_files
from tests.source_trees import probe_each, write_tree
from tools.flash import compile as mpy
from tools.flash.inline_consts import inline_consts
from tools.flash.short_names import name_map, shorten_private_names

PORT = """\
from micropython import const

_LIMIT = const(3)


class Port:
    def __init__(self, depth=2):
        self._rx = []
        self._depth = depth
        self._shared = 0

    def _push(self, item, *, _front=False):
        if _front:
            self._rx.insert(0, item)
        else:
            self._rx.append(item)
        return len(self._rx) <= min(self._depth, _LIMIT)

    def push(self, item, front=False):
        return self._push(item, _front=front)

    def spoken(self):
        return getattr(self, "_depth")

    def head(self, min=1):  # a parameter spelt like a built-in this module calls: both stay
        return self._rx[:min]


def _helper(port):
    return port._rx[:]  # another object's attribute: its class may be another module's
"""
USER = """\
from pkg.port import Port


class User:
    def __init__(self, limit):
        self._port = Port(limit)
        self._seen = 0

    def feed(self, items):
        ok = [self._port.push(i) for i in items]
        self._seen += len(items)
        return ok, self._seen, self._port._shared
"""
CHILD = """\
from pkg.port import Port


class Child(Port):
    def __init__(self):
        super().__init__()
        self._own = 1
"""
BOOT = "import pkg.user\nprint(pkg.user.User(1)._kept_by_boot)\n"
PKG = {"lib/pkg/__init__.py": "", "lib/pkg/port.py": PORT, "lib/pkg/user.py": USER, "lib/pkg/child.py": CHILD}


def test_private_names_become_short_and_shared_across_modules() -> None:
    out, maps = shorten_private_names(PKG, {"/boot.py": BOOT})
    port, user = maps["lib/pkg/port.py"], maps["lib/pkg/user.py"]
    # private names, and parameters nothing else in the image spells; each module from the start of the
    # alphabet, so the image needs as many names as its busiest module has
    assert sorted(port.values()) == ["_front", "_helper", "_push", "depth", "front", "item"]
    assert sorted(user.values()) == ["_port", "_seen", "items", "limit"]
    assert set(user) < set(port) == {"_a", "_b", "_c", "_d", "_e", "_f"}
    s = {v: k for k, v in port.items()}
    text = out["lib/pkg/port.py"]
    assert f"def {s['_push']}(self, {s['item']}, *, {s['_front']}=False):" in text
    assert f"return self.{s['_push']}({s['item']}, {s['_front']}={s['front']})" in text
    assert "def push(self, " in text  # a public name stays
    assert "def head(self, min=1):" in text and " <= min(self." in text
    # kept: a private const (interns nothing), one spelt in a string, one read from another object, one
    # another module reads, and ``self``
    for kept in ("_LIMIT = const(3)", 'getattr(self, "_depth")', "self._depth = ", "port._rx[:]", "self._shared = 0",
                 "def __init__(self,"):
        assert kept in text, kept
    # a subclass of another module's class shares one object with it: that module is left as it is
    assert out["lib/pkg/child.py"] == CHILD and "lib/pkg/child.py" not in maps
    assert "lib/pkg/__init__.py" not in maps
    for rel, text in out.items():
        assert len(text.splitlines()) == len(PKG[rel].splitlines()), rel
        compile(text, rel, "exec")


def test_names_outside_the_image_or_asked_to_keep_stay() -> None:
    out, maps = shorten_private_names(PKG, {"/boot.py": BOOT.replace("_kept_by_boot", "_seen")}, keep=["_port"])
    assert "self._seen += " in out["lib/pkg/user.py"] and "self._port = Port(" in out["lib/pkg/user.py"]
    assert sorted(maps["lib/pkg/user.py"].values()) == ["items", "limit"]


def test_respelt_package_gives_the_same_results_on_micropython(tmp_path: Path) -> None:
    # the probe below calls ``_helper`` by its name, as a host would: ``keep``
    respelt = shorten_private_names(PKG, {"/boot.py": BOOT}, keep=["_helper"])[0]
    probe = (
        "import json, pkg.user as U, pkg.port as P, pkg.child as C\n"
        "u = U.User(2)\n"
        "p = P.Port(3)\n"
        "print(json.dumps([u.feed([1, 2, 3]), p.push(1), p.push(2, True), P._helper(p), p.spoken(),"
        " C.Child()._own, p.head()]))"
    )
    results = probe_each({tmp_path / "before": PKG, tmp_path / "after": respelt}, probe)
    assert results[0] == results[1] == [[[True, True, False], 3, 0], True, True, [2, 1], 3, 1, [2]]


@pytest.mark.parametrize("role", ["streetlight", "medical"])
def test_node_images_keep_their_lines_and_share_short_names(role: str) -> None:
    outside = {p: src.read_text() for p, src in fixed_files(role).items() if p.endswith(".py")}
    sources = inline_consts({rel: p.read_text() for rel, p in app_files(role).items()}, outside)
    out, maps = shorten_private_names(sources, outside)
    assert maps == name_map(role)
    renamed = sum(map(len, maps.values()))
    shared = {short for names in maps.values() for short in names}
    assert renamed > 100 and len(shared) <= {"streetlight": 32, "medical": 60}[role], (renamed, len(shared))
    for rel, text in out.items():
        assert len(text.splitlines()) == len(sources[rel].splitlines()), rel
        compile(text, rel, "exec")
    # what the boot manager, boot.py or main.py name keeps its spelling (``_state``: the boot manager has one)
    assert "_state" not in {name for names in maps.values() for name in names.values()}


def test_build_runs_the_pass_for_an_image_only(tmp_path: Path) -> None:
    src = write_tree(tmp_path, PKG)
    boot = tmp_path / "boot.py"
    boot.write_text(BOOT)
    plain = mpy.build(src, 6)
    image = mpy.build(src, 6, outside={"/boot.py": boot})
    assert b"_seen" in plain["/lib/pkg/user.mpy"] and b"_seen" not in image["/lib/pkg/user.mpy"]
    assert mpy.build(src, 6, source=True, outside={"/boot.py": boot})["/lib/pkg/user.py"] == USER.encode()
