"""Config files on the node's flash, validated at boot.

Two kinds of file:

* ``/node.json`` -- provisioning, written by the flashing tool: who the node is and how it talks.
  Loaded with ``strict=True``: any problem raises :class:`ConfigError` naming the file and the key,
  because a node without a valid identity or key must not join the network.
* ``/<role>.json`` -- app settings (thresholds, programs, policy). Every key has a default in code;
  a missing file means "all defaults", and an invalid value is logged with the file and the key and
  replaced by its default, so one bad setting never leaves a street dark.

A schema is a tuple of entries ``(dotted_key, kind, default, check)``:

* ``kind``: ``int``, ``float`` (an int is accepted), ``str``, ``bool``, ``list``, ``dict``, or a tuple of them;
* ``default``: the value used when the key is absent, or :data:`REQUIRED`;
* ``check``: ``None``; ``(lo, hi)`` inclusive bounds; a tuple of allowed strings; or a callable that returns the
  (possibly normalised) value or raises ``ValueError`` with a sentence.

Keys listed in ``SECRET`` never have their value written to a log line.
"""

import json

REQUIRED = object()
SECRET = ("key",)

PROVISIONING_PATH = "/node.json"


class ConfigError(Exception):
    """A config file is missing or invalid; ``str()`` is ``"<path>: <key>: <problem>"``."""

    def __init__(self, path, key, problem):
        self.path = path
        self.key = key
        self.problem = problem
        if key:
            super().__init__("%s: %s: %s" % (path, key, problem))
        else:
            super().__init__("%s: %s" % (path, problem))


def _hex_key(value):
    try:
        raw = bytes.fromhex(value)
    except (ValueError, TypeError):
        raise ValueError("must be hexadecimal")
    if len(raw) not in (16, 32):
        raise ValueError("must be 16 or 32 bytes (32 or 64 hex digits), has %d bytes" % len(raw))
    return value.lower()


# What the flashing tool writes to /node.json (see docs/streetlight.md, "Provisioning").
PROVISIONING = (  # type: tuple
    ("node_id", int, REQUIRED, (1, 0xFFFFFFFF)),  # u32 in every frame header
    ("role", str, REQUIRED, ("streetlight", "medical", "bare")),
    ("site", str, "", None),
    ("lat", float, None, (-90.0, 90.0)),
    ("lon", float, None, (-180.0, 180.0)),
    ("key_id", int, REQUIRED, (0, 255)),
    ("key", str, REQUIRED, _hex_key),
    ("link", dict, {}, None),
)


def read_json(path, required=False):
    """The JSON object in ``path``; ``None`` when the file is absent and not ``required``."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        text = None
    if text is None:
        # a power cut between the two steps of save_json leaves only the new file under its temporary name
        try:
            with open(path + ".tmp") as f:
                text = f.read()
        except OSError:
            pass
    if text is None:
        if required:
            raise ConfigError(path, None, "missing (provision the node with `cityedge flash`)")
        return None
    try:
        data = json.loads(text)
    except ValueError:
        raise ConfigError(path, None, "is not valid JSON")
    if not isinstance(data, dict):
        raise ConfigError(path, None, "must hold a JSON object")
    return data


_ABSENT = object()  # _lookup's answer for a key that is not there


def _lookup(data, dotted):
    # the value at the dotted path or _ABSENT; walks the path without splitting it into a list and returns no
    # (found, value) tuple: validation runs at boot and on every settings change, so each allocation counts
    node = data
    i = 0
    while True:
        j = dotted.find(".", i)
        if not isinstance(node, dict):
            return _ABSENT
        part = dotted if i == 0 and j < 0 else dotted[i:j] if j >= 0 else dotted[i:]
        if part not in node:
            return _ABSENT
        node = node[part]
        if j < 0:
            return node
        i = j + 1


def _one_kind_ok(k, value):
    if isinstance(value, bool):
        return k is bool
    if k is float:
        return isinstance(value, (int, float))
    return isinstance(value, k)


def _kind_ok(kind, value):
    if not isinstance(kind, tuple):
        return _one_kind_ok(kind, value)
    for k in kind:
        if _one_kind_ok(k, value):
            return True
    return False


def _kind_name(kind):
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             list: "a list", dict: "an object"}
    return " or ".join(names.get(k, "?") for k in kinds)


def _check(kind, check, value):
    """The value to use, or raise ValueError saying what is wrong."""
    if not _kind_ok(kind, value):
        raise ValueError("must be " + _kind_name(kind))
    if kind is float and not isinstance(value, float):
        value = float(value)
    if check is None:
        return value
    if callable(check):
        return check(value)
    if isinstance(check[0], str):
        if value not in check:
            raise ValueError("must be one of " + ", ".join(check))
        return value
    lo, hi = check
    if value < lo or value > hi:
        raise ValueError("must be between %s and %s" % (lo, hi))
    return value


def is_known(schema, key):
    """True if ``key`` (dotted) is a key of ``schema``."""
    for entry in schema:
        if entry[0] == key:
            return True
    return False


def _is_prefix(schema, key):
    n = len(key)
    for entry in schema:
        k = entry[0]
        if len(k) > n and k[n] == "." and k.startswith(key):
            return True
    return False


def _unknown(data, schema, prefix=""):
    out = []
    for name in data:
        key = prefix + name if prefix else name
        if is_known(schema, key):
            continue
        if isinstance(data[name], dict) and _is_prefix(schema, key):
            out.extend(_unknown(data[name], schema, key + "."))
        else:
            out.append(key)
    return out


def validate(path, data, schema, strict=False, log=print, problems=None):
    """Check ``data`` against ``schema``; return a flat dict ``{dotted_key: value}``.

    strict: raise :class:`ConfigError` on the first problem. Otherwise log one line per problem
    (``config: <path>: <key>: <problem>; using default <v>``), use the default and append
    ``"<key>: <problem>"`` to ``problems``; a problem with a :data:`REQUIRED` key still raises.
    """
    out = {}
    data = data or {}
    for key, kind, default, check in schema:
        value = _lookup(data, key)
        if value is _ABSENT:
            if default is REQUIRED:
                raise ConfigError(path, key, "missing")
            out[key] = default
            continue
        try:
            out[key] = _check(kind, check, value)
        except ValueError as e:
            problem = str(e)
            if key not in SECRET:
                problem += " (got %s)" % json.dumps(value)
            if strict or default is REQUIRED:
                raise ConfigError(path, key, problem)
            log("config: %s: %s: %s; using default %s" % (path, key, problem, json.dumps(default)))
            if problems is not None:
                problems.append("%s: %s" % (key, problem))
            out[key] = default
    for key in _unknown(data, schema):
        log("config: %s: %s: unknown key ignored" % (path, key))
    return out


def load(path, schema, strict=False, log=print, problems=None):
    """Read and validate ``path`` (see :func:`validate`); a missing optional file gives the defaults."""
    return validate(path, read_json(path, required=strict), schema, strict, log, problems)


def load_provisioning(path=PROVISIONING_PATH, log=print):
    """The node's provisioning (``/node.json``), strictly validated; raises :class:`ConfigError`."""
    return load(path, PROVISIONING, strict=True, log=log)


def save_json(path, data):
    """Write ``data`` to ``path`` so that a power cut leaves either the old or the new file."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    import os

    try:
        os.rename(tmp, path)  # littlefs and POSIX replace the old file atomically
    except OSError:
        os.remove(path)  # FAT refuses to rename over a file; read_json then finds the .tmp
        os.rename(tmp, path)
