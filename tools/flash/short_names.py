"""Build-time pass over a node app's sources: a module's own names become short names shared by modules.

Every name a module's bytecode uses -- an attribute (``self._last_rx``), a function (``def _on_cmd``), a
global, a parameter (kept for keyword calls) -- is interned when the board imports the module: an entry in
MicroPython's string pool, which grows in doubling blocks on the heap (the sixth, opened at the 620th name on
the VM, holds 640 entries: 4.5 KB). A private name (one leading underscore) is, by convention, used by its own
module only, and so is a parameter that no other file spells, so two modules may give two such names the same
spelling without meeting. This pass spells each module's own names ``_a``, ``_b``, ... from the start, so the
whole image needs as many of them as its busiest module has (the streetlight image: 173 names become 30).

A name keeps its spelling when it is not certainly the module's own:

* another module of the image, or a file outside it (``outside``: boot.py, main.py, the boot manager), or
  ``keep`` (names the host reaches on a board) spells it anywhere, even in a comment;
* this module spells it in a string (``getattr(self, "_x")``; docstrings do not count);
* this module reads it from something other than ``self``, ``cls`` or one of its own classes
  (``port._rx``: that object's class may be another module's);
* it is imported, or it is only a local variable or a private ``const()`` (which intern nothing anyway);
* a parameter that is also an attribute, a function, a module- or class-level name, or the keyword of a call
  in this module (the callee may be a built-in: ``machine.Pin(n, value=0)``).

A module whose classes derive from another module's class is left alone: the subclass and its base would
share one object's attributes. Only names change, never lines, so a traceback's file and line still point at
the source; ``name_map()`` gives each module's short names back (``python -m tools.flash.short_names
streetlight`` prints them). The gateway, the tools and ``--source`` deploys run the sources as they are.
"""

from __future__ import annotations

import ast
import builtins
import io
import itertools
import re
import sys
import tokenize
from collections.abc import Iterable, Iterator, Mapping

from tools.flash.inline_consts import _PARSING, _WORD, _docstrings, _int_const, module_name

_PRIVATE = re.compile(r"_[A-Za-z0-9]\w*")
_BUILTIN = set(dir(builtins))


def _shorts(taken: set[str]) -> Iterator[str]:
    """``_a`` … ``_z``, ``_aa`` … : names no file of the image spells."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    for size in itertools.count(1):
        for combo in itertools.product(letters, repeat=size):
            name = "_" + "".join(combo)
            if name not in taken:
                yield name


def _outer_statements(tree: ast.Module) -> Iterator[ast.stmt]:
    """The statements of the module's body and of its classes' bodies: where a name is a global or a class
    attribute, not a local."""
    yield from tree.body
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            yield from node.body


def _interned(tree: ast.Module) -> set[str]:
    """The names a module's bytecode interns: attributes, functions and classes, arguments, and the names
    bound at module or class level (but private ``const()`` definitions, which MicroPython does not store)."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            out.add(node.attr)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, (ast.arg, ast.keyword)) and node.arg:
            out.add(node.arg)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            out.update(node.names)
    for stmt in _outer_statements(tree):
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and _int_const(stmt.value) is not None:
            continue  # NAME = const(...): folded into the bytecode
        targets = stmt.targets if isinstance(stmt, ast.Assign) else (
            [stmt.target] if isinstance(stmt, (ast.AnnAssign, ast.AugAssign)) else [])
        for target in targets:
            out.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return out


def _parameters(tree: ast.Module) -> set[str]:
    """Parameter names that the module uses for nothing else than parameters and local variables: no
    attribute, function, class, import, module- or class-level name, built-in, and no keyword of a call
    (which may be another module's function, or a built-in one's)."""
    params = {n.arg for n in ast.walk(tree) if isinstance(n, ast.arg)}
    other: set[str] = {"self", "cls"} | _BUILTIN  # ``def f(len=1)`` must not respell ``len(x)`` elsewhere
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            other.add(node.attr)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            other.add(node.name)
        elif isinstance(node, ast.alias):
            other.update((node.asname or node.name).split("."))
        elif isinstance(node, ast.keyword) and node.arg:
            other.add(node.arg)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            other.update(node.names)
    for stmt in _outer_statements(tree):
        if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            other.update(n.id for n in ast.walk(stmt) if isinstance(n, ast.Name))
    return params - other


def _not_own(tree: ast.Module) -> set[str] | None:
    """Private names this module cannot rename (see the module doc), or None when it must keep them all."""
    classes = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    out: set[str] = set()
    docs = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                if not (isinstance(base, ast.Name) and (base.id in classes or base.id in _BUILTIN)):
                    return None  # a base from elsewhere: its attributes and ours meet on one object
        elif isinstance(node, ast.Attribute):
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls", *classes)):
                out.add(node.attr)
        elif isinstance(node, ast.alias):
            out.update(node.name.split("."))
            if node.asname:
                out.add(node.asname)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            out.update(_WORD.findall(node.value))
        elif isinstance(node, ast.JoinedStr):  # f-strings: their names stay in the string's text
            out.update(n.id for n in ast.walk(node) if isinstance(n, ast.Name))
    return out


def _renamed(text: str, names: Mapping[str, str]) -> str:
    """``text`` with every NAME token in ``names`` respelt; lines, and what is not a name, unchanged."""
    lines = text.splitlines(keepends=True)
    edits: list[tuple[int, int, int, str]] = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.NAME and tok.string in names:
            edits.append((tok.start[0], tok.start[1], tok.end[1], names[tok.string]))
    for row, start, end, new in reversed(edits):
        line = lines[row - 1]
        lines[row - 1] = line[:start] + new + line[end:]
    return "".join(lines)


def shorten_private_names(
    sources: Mapping[str, str], outside: Mapping[str, str] | None = None, keep: Iterable[str] = ()
) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Respell the image's modules' private names as the module doc says. ``sources``: slot-relative path
    (``lib/node/link.py``) → source; ``outside``: the board's other files, by path. Returns every path of
    ``sources`` (files that are not modules under ``lib/`` as they are) and, per changed path, the map from
    each short name back to the name in the source."""
    with _PARSING:
        return _shorten(sources, outside or {}, set(keep))


def _shorten(
    sources: Mapping[str, str], outside: Mapping[str, str], keep: set[str]
) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    words = {rel: set(_WORD.findall(text)) for rel, text in sources.items()}
    elsewhere: dict[str, int] = {}  # a word -> in how many files of the image it appears
    for ws in words.values():
        for w in ws:
            elsewhere[w] = elsewhere.get(w, 0) + 1
    fixed = keep.union(*(set(_WORD.findall(t)) for t in outside.values()))
    taken = fixed.union(*words.values())

    out = dict(sources)
    maps: dict[str, dict[str, str]] = {}
    for rel, text in sorted(sources.items()):
        if module_name(rel) is None:
            continue
        tree = ast.parse(text, filename=rel)
        not_own = _not_own(tree)
        if not_own is None:
            continue
        private = {n for n in _interned(tree) if _PRIVATE.fullmatch(n) and not n.startswith("__")}
        names = sorted(
            n for n in private | _parameters(tree)
            if elsewhere.get(n) == 1 and n not in fixed and n not in not_own
        )
        if not names:
            continue
        respelt = dict(zip(names, _shorts(taken)))
        out[rel] = _renamed(text, respelt)
        maps[rel] = {short: name for name, short in respelt.items()}
    return out, maps


def name_map(role: str) -> dict[str, dict[str, str]]:
    """Per module of ``role``'s image, each short name and the source name it stands for (for reading a
    board's traceback, whose file and line point at the source anyway)."""
    from cityedge.firmware_files import DEFAULT_BOARD, app_files, fixed_files
    from tools.flash.inline_consts import inline_consts

    outside = {p: src.read_text() for p, src in fixed_files(role, DEFAULT_BOARD).items() if p.endswith(".py")}
    sources = {rel: p.read_text() for rel, p in app_files(role).items() if rel.endswith(".py")}
    return shorten_private_names(inline_consts(sources, outside), outside)[1]


if __name__ == "__main__":
    for path, names in name_map(sys.argv[1] if len(sys.argv) > 1 else "streetlight").items():
        print(path)
        for short, name in names.items():
            print(f"  {short:6} {name}")
