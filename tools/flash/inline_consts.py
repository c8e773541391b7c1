"""Build-time pass over a node app's sources: a ``const()`` name used across modules becomes its value.

MicroPython folds a ``NAME = const(1)`` into the bytecode only inside the module that defines it. A public
name (no leading underscore) also stays in that module's globals, and every other module that uses it --
``from cewire.codes import LAMP_FAILURE``, ``codes.LAMP_FAILURE`` -- looks it up by name at run time. On a
board each such name costs an interned string, a slot in the defining module's dict and one in each
importer's dict: 124 names in the streetlight app.

``inline_consts`` rewrites the sources of one app image before mpy-cross compiles them:

* a reference to another module's public integer ``const()`` (through ``from M import NAME [as A]``, a module
  alias ``M.NAME`` or a dotted ``pkg.mod.NAME``) becomes the integer, and a module's own references too;
* an import left with no use loses that name (an import statement left empty becomes ``pass``, so a module
  whose only use was its constants is no longer loaded);
* a definition no module of the image and no file outside it (``outside``: boot.py, the boot manager, safe
  mode) still names becomes private (``_NAME = const(1)``), which MicroPython does not store at all;
* the constants of ``PIN_MAP`` (``lib/board.py``, outside the image) are inlined too, and a module that no
  longer names ``board`` loses its ``import board``: the pin map is built into the image (deploying with
  another ``--board`` builds another), and its file stays on the board for safe mode.

What is not a plain integer literal, a name bound more than once in a module, a name inside an f-string, and
any name some code spells out in a string (``getattr(codes, "LAMP_FAILURE")``) are left as they are. Every edit
stays on its own line, so a board's traceback line numbers still match the sources. The gateway and the tools
run the sources as they are, on CPython.
"""

from __future__ import annotations

import ast
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

_WORD = re.compile(r"[A-Za-z_]\w*")
# CPython 3.11's ast.parse fails now and then when threads call it at once ("AST constructor recursion depth
# mismatch"); a batch deploy builds each board's image in a thread of its own
_PARSING = threading.Lock()
PIN_MAP = "lib/board.py"  # slot-relative, as the image's modules; on the board /lib/board.py, outside the slots


def module_name(rel: str) -> str | None:
    """``lib/cewire/codes.py`` → ``cewire.codes``; ``lib/cewire/__init__.py`` → ``cewire``; others → None."""
    if not rel.startswith("lib/") or not rel.endswith(".py"):
        return None
    parts = rel[len("lib/"):-len(".py")].split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts) or None


def _int_const(value: ast.expr) -> int | None:
    """The integer of ``const(<int literal>)`` (a leading minus allowed), else None."""
    if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "const"
            and len(value.args) == 1 and not value.keywords):
        return None
    arg = value.args[0]
    sign = 1
    if isinstance(arg, ast.UnaryOp) and isinstance(arg.op, ast.USub):
        sign, arg = -1, arg.operand
    if isinstance(arg, ast.Constant) and type(arg.value) is int:
        return sign * arg.value
    return None


def module_consts(source: str) -> dict[str, int]:
    """The public integer ``const()`` names a module's source defines (what the build inlines), by name: for
    host code that needs one of them without running the module (a benchmark harness)."""
    with _PARSING:
        return _parse("", "", source).consts


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the docstring nodes (their words name things without using them)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def _identifiers(tree: ast.Module, skip: set[int]) -> Iterator[str]:
    """Every identifier the code names (variables, attributes, imports, the words of its strings), but in the
    nodes of ``skip``."""
    docs = _docstrings(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Name):
            yield node.id
        elif isinstance(node, ast.Attribute):
            yield node.attr
        elif isinstance(node, ast.alias):
            yield from node.name.split(".")
            if node.asname:
                yield node.asname
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield from _WORD.findall(node.value)


def _names_left(tree: ast.Module, replaced: set[int], leaving: ast.stmt) -> set[str]:
    """The names a module still uses once the ``replaced`` nodes (and all in them) and ``leaving`` are gone."""
    out: set[str] = set()
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if id(node) in replaced or node is leaving:
            continue
        if isinstance(node, ast.Name):
            out.add(node.id)
        stack.extend(ast.iter_child_nodes(node))
    return out


def _bindings(tree: ast.Module) -> dict[str, int]:
    """How many places bind each name anywhere in the module (assignments, defs, arguments, imports)."""
    count: dict[str, int] = {}

    def bind(name: str) -> None:
        count[name] = count.get(name, 0) + 1

    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            bind(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bind(node.name)
        elif isinstance(node, ast.arg):
            bind(node.arg)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            for name in node.names:
                bind(name)
        elif isinstance(node, ast.alias):
            bind(node.asname or node.name.split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bind(node.name)
    return count


@dataclass
class _Module:
    name: str
    package: str  # what a relative import starts from
    src: bytes
    tree: ast.Module
    consts: dict[str, int]  # its own public NAME = const(int)
    const_targets: dict[str, ast.Name]  # where each is defined
    binds: dict[str, int]  # how many places bind each name (see _bindings)
    line_starts: list[int] = field(default_factory=list)
    edits: list[tuple[int, int, bytes]] = field(default_factory=list)

    def offset(self, line: int, col: int) -> int:
        return self.line_starts[line - 1] + col

    def replace(self, node: ast.AST, text: str) -> None:
        start = self.offset(node.lineno, node.col_offset)  # type: ignore[attr-defined]
        end = self.offset(node.end_lineno, node.end_col_offset)  # type: ignore[attr-defined]
        self.edits.append((start, end, text.encode()))

    def rewritten(self) -> bytes:
        out = self.src
        for start, end, text in sorted(self.edits, reverse=True):
            out = out[:start] + text + out[end:]
        return out


def _parse(name: str, rel: str, text: str) -> _Module:
    src = text.encode()
    tree = ast.parse(src, filename=rel)
    consts: dict[str, int] = {}
    targets: dict[str, ast.Name] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            target = stmt.targets[0]
            value = _int_const(stmt.value)
            if value is not None and not target.id.startswith("_"):
                consts[target.id] = value
                targets[target.id] = target
    package = name if rel.endswith("/__init__.py") else name.rpartition(".")[0]
    mod = _Module(name, package, src, tree, consts, targets, _bindings(tree))
    pos = 0
    for line in src.splitlines(keepends=True):
        mod.line_starts.append(pos)
        pos += len(line)
    mod.line_starts.append(pos)
    return mod


def _absolute(mod: _Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.package.split(".") if mod.package else []
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join([*base, node.module] if node.module else base)


def _literal(value: int, parent: ast.AST | None) -> str:
    text = str(value)
    return f"({text})" if value < 0 or isinstance(parent, ast.Attribute) else text


def inline_consts(sources: Mapping[str, str], outside: Mapping[str, str] | None = None) -> dict[str, str]:
    """Rewrite the app image's modules (slot-relative path such as ``lib/cewire/codes.py`` → source) as the
    module docstring says; ``outside`` holds the sources on the board that are not part of the image (the
    names they use stay). Returns every path of ``sources``, changed or not; files that are not modules under
    ``lib/`` are returned as they are."""
    with _PARSING:
        return _inline_consts(sources, outside or {})


def _inline_consts(sources: Mapping[str, str], outside: Mapping[str, str]) -> dict[str, str]:
    mods: dict[str, _Module] = {}
    for rel, text in sources.items():
        name = module_name(rel)
        if name is not None:
            mods[rel] = _parse(name, rel, text)
    by_name = {m.name: m for m in mods.values()}
    pins = next((_parse("board", PIN_MAP, t) for p, t in outside.items() if p.lstrip("/") == PIN_MAP), None)

    # what each module offers: its own constants plus those it imported at top level (re-exports)
    offers: dict[str, dict[str, int]] = {m.name: dict(m.consts) for m in mods.values()}
    if pins is not None and "board" not in by_name:
        offers["board"] = dict(pins.consts)
        by_name["board"] = pins
    changed = True
    while changed:
        changed = False
        for m in mods.values():
            for stmt in m.tree.body:
                if isinstance(stmt, ast.ImportFrom):
                    src = offers.get(_absolute(m, stmt), {})
                    for alias in stmt.names:
                        local = alias.asname or alias.name
                        if alias.name in src and local not in offers[m.name]:
                            offers[m.name][local] = src[alias.name]
                            changed = True

    skip: set[int] = set()  # nodes that no longer name anything: replaced, or imports and definitions to go
    droppable: dict[str, list[tuple[ast.ImportFrom, ast.alias]]] = {}
    for rel, m in mods.items():
        droppable[rel] = _inline_module(m, offers, by_name, skip)
        skip.update(id(a) for _, a in droppable[rel])
        skip.update(id(t) for t in m.const_targets.values())

    # what is still named somewhere: in a module of the image (but the nodes above), or outside it
    used = {word for m in mods.values() for word in _identifiers(m.tree, skip)}
    for text in outside.values():
        used.update(_identifiers(ast.parse(text), set()))

    for rel, m in mods.items():
        # an imported name nothing names any more leaves its import (which becomes ``pass`` when empty)
        drop: dict[int, set[str]] = {}
        for stmt, alias in droppable[rel]:
            local = alias.asname or alias.name
            if local not in used:
                drop.setdefault(id(stmt), set()).add(local)
        for stmt in m.tree.body:
            if (isinstance(stmt, ast.Import) and pins is not None and [a.name for a in stmt.names] == ["board"]
                    and not stmt.names[0].asname and "board" not in _names_left(m.tree, skip, stmt)):
                m.replace(stmt, "pass")  # the pin map is in the image now
            if isinstance(stmt, ast.ImportFrom) and id(stmt) in drop:
                rest = [a for a in stmt.names if (a.asname or a.name) not in drop[id(stmt)]]
                text = "pass"
                if rest:
                    names = ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in rest)
                    text = f"from {'.' * stmt.level}{stmt.module or ''} import {names}"
                m.replace(stmt, text + "\n" * (stmt.end_lineno - stmt.lineno))  # type: ignore[operator]
        # a definition nothing names any more becomes private: MicroPython does not store it
        for name, target in m.const_targets.items():
            if name not in used and m.binds.get(name) == 1 and "_" + name not in used:
                m.replace(target, "_" + name)

    out = dict(sources)
    for rel, m in mods.items():
        if m.edits:
            out[rel] = m.rewritten().decode()
    return out


def _inline_module(
    m: _Module, offers: dict[str, dict[str, int]], by_name: dict[str, _Module], replaced: set[int]
) -> list[tuple[ast.ImportFrom, ast.alias]]:
    """Replace the constant references of one module (edits recorded on ``m``, the nodes' ids added to
    ``replaced``); returns its top-level imports of constants (whether one may go depends on what still names
    it, decided over the whole image: a name left in an f-string keeps its import)."""
    binds = m.binds
    values: dict[str, int] = {n: v for n, v in m.consts.items() if binds.get(n) == 1}  # local name -> value
    modules: dict[str, str] = {}  # local name -> module of the image
    imported: dict[str, tuple[ast.ImportFrom, ast.alias]] = {}
    for stmt in m.tree.body:
        if isinstance(stmt, ast.ImportFrom):
            origin = _absolute(m, stmt)
            for alias in stmt.names:
                local = alias.asname or alias.name
                if binds.get(local) != 1:
                    continue
                if alias.name in offers.get(origin, {}):
                    values[local] = offers[origin][alias.name]
                    imported[local] = (stmt, alias)
                elif f"{origin}.{alias.name}" in by_name:
                    modules[local] = f"{origin}.{alias.name}"
        elif isinstance(stmt, ast.Import):
            for alias in stmt.names:
                local = alias.asname or alias.name.split(".")[0]
                if binds.get(local) != 1:
                    continue
                if alias.asname and alias.name in by_name:
                    modules[local] = alias.name
                elif not alias.asname:
                    modules[local] = local  # the top package: pkg.mod.NAME resolves below

    def module_of(node: ast.expr) -> str | None:
        if isinstance(node, ast.Name):
            return modules.get(node.id)
        if isinstance(node, ast.Attribute):
            base = module_of(node.value)
            return f"{base}.{node.attr}" if base is not None and f"{base}.{node.attr}" in by_name else None
        return None

    in_fstring = {id(n) for f in ast.walk(m.tree) if isinstance(f, ast.JoinedStr) for n in ast.walk(f)}
    stack: list[tuple[ast.AST, ast.AST | None]] = [(m.tree, None)]
    while stack:
        node, parent = stack.pop()
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            owner = module_of(node.value)
            offered = offers.get(owner, {}) if owner is not None else {}
            if node.attr in offered and id(node) not in in_fstring:
                m.replace(node, _literal(offered[node.attr], parent))
                replaced.add(id(node))
                continue
        if isinstance(node, ast.Name) and node.id in values:
            if isinstance(node.ctx, ast.Load) and id(node) not in in_fstring:
                m.replace(node, _literal(values[node.id], parent))
                replaced.add(id(node))
            continue
        stack.extend((child, node) for child in ast.iter_child_nodes(node))

    return list(imported.values())
