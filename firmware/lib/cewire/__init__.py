"""cewire — the node↔gateway wire protocol (spec: docs/protocol.md), one implementation for MicroPython
(nodes, at /lib/cewire) and CPython (gateway, tools: ``import cewire``).

Public API (stable; names are kept when it grows)::

    VERSION, MAX_FRAME, MAX_PAYLOAD, HEADER_LEN, MAC_LEN
    T_HELLO T_DATA T_EVENT T_ACK T_CMD T_CMD_ACK T_TIME       frame types (TYPE_NAMES: their names)
    CH_CTRL (0: HELLO/EVENT/CMD_ACK/ACK/CMD/TIME), CH_BULK (1: DATA)   sequence spaces
    PRIO_NONE PRIO_LOW PRIO_MEDIUM PRIO_HIGH                  priority (frame flags)
    DIR_ANY DIR_UP DIR_DOWN                                   who may send what
    WireError(code, detail) .code .name;  E_TRUNCATED E_OVERSIZE E_VERSION E_TYPE E_HEADER E_UNKNOWN_NODE
                                          E_KEY_ID E_MAC E_REPLAY E_PAYLOAD E_COBS E_RANGE (ERROR_NAMES)

    Key(key_bytes, key_id=0)                     per-node key, HMAC pads precomputed (never printed)
    Keyring().add(node_id, key_bytes|Key, key_id) / .lookup(node_id, key_id) / .remove(node_id, key_id=-1)
    encode_frame(ftype, node_id, seq, ts, flags, payload, key, key_id=-1, back=0) -> bytes
        payload: CBOR bytes (from the builders below) or a dict/list; flags = flags_for(channel, prio)
    decode_frame(buf, keyring_or_key, direction=DIR_ANY) -> Frame      raises WireError only
        Frame: ftype flags key_id node_id seq ts back payload body; .channel .priority .base .type_name
    Encoder(node_id, key).frame(ftype, seq, ts, payload, priority=0, back=0) -> memoryview (reused buffer)
                         .stream(...)  same, COBS-framed with the 0x00 delimiter
    cobs_encode(data) -> bytes (with delimiter); cobs_decode(block) -> bytes
    StreamDecoder(max_frame=MAX_FRAME).feed(chunk) -> [frame bytes]; .feed_into(buf, n, on_frame)
        .frames .errors .error_codes
    ReplayWindow(): .check(seq) raises E_REPLAY; .seen(seq); .mark(seq, base) -> skipped; .advance(base);
        .cum .top
    Receiver(keyring): .verify(buf) -> Frame (MAC + replay; a duplicate may only advance cum by its base) ;
        .commit(frame) -> cum ; .acks(node_id) -> {channel: cum} ; .counts (by error name, "ok") ;
        .skipped (numbers given up by nodes, per node) ; .forget(node_id) ; .export()/.restore()
    cbor.dumps(obj) / cbor.loads(buf)
    payloads: hello(...)/parse_hello, data({L_*: int})/data_batch/parse_data, event(code, state, ...)/parse_event,
        ack({ch: cum})/parse_ack, cmd(id, op, args, exp)/parse_cmd, cmd_ack(id, status, text)/parse_cmd_ack,
        time_sync(unix_s, ms, tz_min)/parse_time; labels L_* H_* E_* C_* A_* TM_*, FIELDS, CS_*, EV_*, RESET_*
    codes: event codes (codes.LAMP_FAILURE, codes.SPO2_LOW, ...; codes.NAMES.get(code, default))

Gateway, per frame from a node:  f = rx.verify(buf) → make durable → cum = rx.commit(f) →
    send encode_frame(T_ACK, f.node_id, gw_seq, now, flags_for(CH_CTRL), payloads.ack(rx.acks(f.node_id)), key)
    On WireError E_REPLAY the frame is a duplicate: drop it and answer with the current ACK.
    Gateway CMD retransmissions are new frames (fresh seq, same command id): nodes run an id once (§7.5).
Node: node.link.Link does all of this (outbox, retransmission, ACK/TIME/CMD handling), see docs/protocol.md §10.

Modules. What a node imports: errors, codes, cbor, frame (COBS, Key, Keyring, encode_into, decode_fields,
Encoder, ReplayWindow), payloads. The host half, which a node never imports: host (Frame,
decode_frame, encode_frame, cobs_encode/cobs_decode, TYPE_NAMES, ERROR_NAMES), receiver (Receiver),
host_payloads (re-exported by payloads). On CPython ``import cewire`` gives the whole API above (cewire.api); on
MicroPython the names are looked up in the submodules on first use, so a node loads only what it uses.
"""

import sys

if sys.implementation.name == "micropython":
    # On a node every module-level name costs heap: the submodules are loaded and their names looked up on
    # first use (``cewire.Key``, ``from cewire import codes`` work), node modules first, so a name a node uses
    # never loads the host half.
    def __getattr__(name):  # type: ignore[no-untyped-def, unused-ignore]
        if name.startswith("__"):
            raise AttributeError(name)
        try:  # a submodule: from cewire import codes
            __import__("cewire." + name)
            return sys.modules["cewire." + name]
        except ImportError:
            pass
        for sub in ("frame", "errors", "host", "receiver"):
            full = "cewire." + sub
            mod = sys.modules.get(full)
            if mod is None:
                try:
                    __import__(full)
                except ImportError:  # a node's image has no host half (host, receiver)
                    continue
                mod = sys.modules[full]
            if hasattr(mod, name):
                value = getattr(mod, name)
                globals()[name] = value  # found once: later lookups are plain attribute reads
                return value
        raise AttributeError(name)

else:
    from cewire.api import *  # noqa: F403
    from cewire.api import __all__  # noqa: F401
