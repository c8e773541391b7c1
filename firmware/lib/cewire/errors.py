"""Wire errors: every malformed, forged or replayed input ends as a WireError with a numeric code.

The codes are part of the protocol spec (docs/protocol.md, "Error codes") and of the test vectors, so a
gateway can count rejected frames per reason and a test can check that a frame was refused for the right one.
On a node every name and string costs heap, so the names of the codes are one string constant (no table) and
details are short: the code says what went wrong, a detail only adds the numbers (node, seq, length).
"""

try:
    from micropython import const
except ImportError:  # CPython (an assignment, not a def: on a node that would load a function for nothing)
    const = int  # type: ignore[misc, assignment, unused-ignore]


E_TRUNCATED = const(1)  # shorter than header + MAC, or a CBOR item runs past the end
E_OVERSIZE = const(2)  # longer than MAX_FRAME (or a stream frame longer than the decoder's bound)
E_VERSION = const(3)  # version byte is not VERSION
E_TYPE = const(4)  # unknown frame type, or a type not allowed in this direction
E_HEADER = const(5)  # reserved flag bits set, unknown channel
E_UNKNOWN_NODE = const(6)  # no key for this node id
E_KEY_ID = const(7)  # node known, key id unknown (retired or not yet provisioned)
E_MAC = const(8)  # MAC does not verify
E_REPLAY = const(9)  # sequence number already seen or older than the replay window
E_PAYLOAD = const(10)  # payload is not valid CBOR of the subset, or a field is missing / of the wrong type
E_COBS = const(11)  # COBS encoding broken (zero inside, code byte runs past the end)
E_RANGE = const(12)  # a value given to an encoder is out of range (encoder side only)


class WireError(ValueError):
    """A frame or payload was refused. ``code`` is one of the E_* constants, ``name`` its short name."""

    def __init__(self, code: int, detail: str = "") -> None:
        super().__init__(code, detail)
        self.code = code
        self.detail = detail

    @property
    def name(self) -> str:
        """The code's short name (docs/protocol.md §8), e.g. ``"mac"``; ``"unknown"`` for another code."""
        names = "truncated oversize version type header unknown_node key_id mac replay payload cobs range".split()
        return names[self.code - 1] if E_TRUNCATED <= self.code <= E_RANGE else "unknown"

    def __str__(self) -> str:
        return "wire error %d (%s)%s" % (self.code, self.name, ": " + self.detail if self.detail else "")
