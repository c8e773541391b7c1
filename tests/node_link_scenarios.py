# ruff: noqa: UP031  (runs on MicroPython too: %-formatting kept on purpose)
"""Scenarios for node.outbox / node.link, run unchanged on CPython and on the MicroPython VM.

No tests here: tests/test_node_link.py runs every scenario_* on both and checks what it returns.
"""

import os

import cewire as w
from cewire import payloads as p
from node import outbox as obm
from node import seqstore as ssm
from node.link import Link
from node.memport import pair
from node.outbox import Outbox, OutboxFull

KEY = bytes(range(32))
NODE = 0x00C0FFEE


def rmtree(path):
    try:
        names = os.listdir(path)
    except OSError:
        return
    for n in names:
        try:
            os.remove(path + "/" + n)
        except OSError:
            rmtree(path + "/" + n)
    os.rmdir(path)


def fresh(path):
    rmtree(path)
    os.mkdir(path)
    return path


class Gateway:
    """A minimal gateway: verify, commit, answer with a cumulative ACK (what gateway/ does, without disk)."""

    def __init__(self, port, key=KEY):
        self.port = port
        ring = w.Keyring()
        ring.add(NODE, key, 0)
        self.ring = ring
        self.rx = w.Receiver(ring)
        self.dec = w.StreamDecoder()
        self.enc = w.Encoder(NODE, ring.lookup(NODE, 0))
        self.seq = 0
        self.got = []
        self.errors = []
        self.key_ids = []  # type: list
        self.ack = True

    def send(self, ftype, payload, seq=0):
        if not seq:
            self.seq += 1
            seq = self.seq
        self.port.write(self.enc.stream(ftype, seq, 0, payload))
        return seq

    def step(self):
        data = self.port.read()
        if not data:
            return 0
        n = 0
        dup = False
        for raw in self.dec.feed(data):
            try:
                f = self.rx.verify(raw)
            except w.WireError as e:
                self.errors.append(e.name)
                dup = dup or e.code == w.E_REPLAY
                continue
            self.rx.commit(f)
            self.got.append((f.ftype, f.channel, f.seq, f.body))
            self.key_ids.append(f.key_id)
            n += 1
        if (n or dup) and self.ack:
            self.send(w.T_ACK, p.ack(self.rx.acks(NODE)))
        return n


class Clock:
    def __init__(self):
        self.t = 0

    def __call__(self):
        return self.t


def run(link, gw, clock, ms, step=10):
    for _ in range(ms // step):
        clock.t += step
        link.poll()
        gw.step()


def make(root, quotas=(64, 128), **kw):
    node_port, gw_port = pair()
    clock = Clock()
    ob = Outbox(root, quotas=quotas, seg_records=8)
    link = Link(node_port, NODE, (KEY, 0), ob, ticks=clock, rto_ms=50, rto_max_ms=400, lost_ms=1000, **kw)
    return link, Gateway(gw_port), clock, node_port


def scenario_alarm_overtakes(root):
    """A telemetry backlog builds while the gateway is unreachable; an alarm then goes out first."""
    fresh(root)
    link, gw, clock, port = make(root)
    link.hello("medical", "1.0", 1, p.RESET_POWER_ON)
    run(link, gw, clock, 100)
    port.connected = False
    for i in range(100):
        link.data({p.L_HR: 700 + i, p.L_SPO2: 970})
    run(link, gw, clock, 500)
    link.event(65, p.EV_RAISED, priority=w.PRIO_HIGH, value=780, label=p.L_SPO2)
    run(link, gw, clock, 10)  # the alarm is written while the wire is still cut
    port.connected = True
    before = len(gw.got)
    run(link, gw, clock, 20000)
    after = gw.got[before:]
    data_seqs = [g[2] for g in gw.got if g[0] == w.T_DATA]
    return {
        "first_after_reconnect": w.TYPE_NAMES[after[0][0]],
        "first_body": after[0][3],
        "data_count": len(data_seqs),
        "data_unique": len(set(data_seqs)),
        "data_in_order": data_seqs == sorted(data_seqs),
        "backlog": list(link.backlog()),
        "acks": gw.rx.acks(NODE),
        "retx": link.stats["retx"],
        "dup_refused": gw.errors.count("replay"),
    }


def scenario_lossy(root, seed=7):
    """Frames are damaged at random in both directions; every record still arrives exactly once."""
    import random

    random.seed(seed)
    fresh(root)
    link, gw, clock, port = make(root)
    gw_port = port.peer
    real_node_write = port.write
    real_gw_write = gw_port.write

    def lossy(real):
        def write(buf):
            b = bytearray(buf)
            r = random.getrandbits(3)
            if r == 0:
                return len(b)  # lost
            if r == 1:
                b[random.getrandbits(5) % len(b)] ^= 0x5A  # damaged
            return real(b)

        return write

    port.write = lossy(real_node_write)
    gw_port.write = lossy(real_gw_write)
    sent = []
    for i in range(60):
        if i % 10 == 0:
            sent.append(link.event(1 + i // 10, p.EV_INFO, priority=w.PRIO_LOW))
        link.data({p.L_LEVEL: i})
        run(link, gw, clock, 30)
    port.write = real_node_write
    gw_port.write = real_gw_write
    run(link, gw, clock, 30000)
    ev = [g[2] for g in gw.got if g[0] == w.T_EVENT]
    data = [g[3][p.L_LEVEL] for g in gw.got if g[0] == w.T_DATA]
    return {
        "events": sorted(ev) == sorted(sent) and len(ev) == len(sent),
        "data_values": sorted(data),
        "data_dups": len(data) - len(set(data)),
        "backlog": list(link.backlog()),
        "rx_bad_node": link.stats["rx_bad"],
        "gw_errors": len(gw.errors),
        "stream_errors": gw.dec.errors + link._dec.errors,
    }


def scenario_commands_time(root):
    fresh(root)
    calls = []
    times = []
    states = []  # type: list

    def on_cmd(cmd_id, op, args):
        calls.append((cmd_id, op, args.get("level")))
        if op == "dim":
            return p.CS_OK
        if op == "boom":
            raise RuntimeError("handler failed")
        return (p.CS_UNKNOWN, op)

    link, gw, clock, port = make(root, on_cmd=on_cmd, on_time=lambda s, ms, tz: times.append((s, ms, tz)),
                                 on_link=states.append)
    link.hello("streetlight", "1.0", 3, p.RESET_WDT)
    run(link, gw, clock, 100)
    ts_before = link.now()
    gw.send(w.T_TIME, p.time_sync(1763700000, 500, 60))
    run(link, gw, clock, 1000)
    now_after = link.now()
    s1 = gw.send(w.T_CMD, p.cmd(11, "dim", {"level": 300}))
    run(link, gw, clock, 100)
    gw.send(w.T_CMD, p.cmd(11, "dim", {"level": 300}), seq=s1)  # the same frame again: a replay, refused
    gw.send(w.T_CMD, p.cmd(11, "dim", {"level": 300}))  # a retransmission (new seq, same id): not run twice
    gw.send(w.T_CMD, p.cmd(12, "fly"))
    gw.send(w.T_CMD, p.cmd(13, "boom"))
    gw.send(w.T_CMD, p.cmd(14, "dim", {"level": 1}, exp=1763700000 - 5))  # expired by the node's clock
    forged = Gateway(gw.port, key=bytes(32))
    forged.seq = 100
    forged.send(w.T_CMD, p.cmd(15, "dim", {"level": 0}))  # wrong key: refused
    run(link, gw, clock, 1000)
    acks = [p.parse_cmd_ack(g[3]) for g in gw.got if g[0] == w.T_CMD_ACK]
    link.data({p.L_LEVEL: 1})
    run(link, gw, clock, 100)
    data_ts = [g[2] for g in gw.got if g[0] == w.T_DATA]
    # silence: the gateway stops answering, then comes back
    gw.ack = False
    port.peer.connected = False
    run(link, gw, clock, 1500)
    lost = list(states)
    port.peer.connected = True
    gw.ack = True
    gw.send(w.T_TIME, p.time_sync(1763700100))
    run(link, gw, clock, 100)
    return {
        "ts_before": ts_before,
        "now_after": now_after,
        "times": times,
        "calls": calls,
        "acks": acks,
        "rx_bad": link.stats["rx_bad"],
        "cmd_dups": link.stats["cmd_dups"],
        "rx_persisted": link.outbox.seq.rx,
        "link_states_lost": lost,
        "link_states": states,
        "hello": p.parse_hello(gw.got[0][3]),
        "data_seqs": data_ts,
    }


def scenario_reentrant(root):
    """A command handler that sends an event at once (``event()`` then ``poll()`` from inside the link's own
    poll, as the streetlight app does), with more gateway frames behind the command in the same burst."""
    fresh(root)
    calls = []
    times = []
    box = []  # type: list  # the link, for its own callback

    def on_cmd(cmd_id, op, args):
        calls.append(cmd_id)
        box[0].event(12, p.EV_RAISED)
        box[0].poll()  # nested in the poll that is handing over this command
        return p.CS_OK

    link, gw, clock, _ = make(root, on_cmd=on_cmd, on_time=lambda s, ms, tz: times.append(s))
    box.append(link)
    link.hello("streetlight", "1.0", 1, p.RESET_POWER_ON)
    run(link, gw, clock, 100)
    for i in range(3):  # back to back: the node reads them 64 bytes at a time, frames cut across reads
        gw.send(w.T_CMD, p.cmd(21 + i, "boost", {"level": 1000 - i}))
        gw.send(w.T_TIME, p.time_sync(1763700000 + i))
    run(link, gw, clock, 2000)
    return {
        "calls": calls,
        "times": times,
        "rx_bad": link.stats["rx_bad"],
        "stream_errors": link._dec.errors,
        "events": len([g for g in gw.got if g[0] == w.T_EVENT]),
        "acks": [p.parse_cmd_ack(g[3])[0] for g in gw.got if g[0] == w.T_CMD_ACK],
    }


def scenario_cmd_across_reboot(root):
    """A command runs, its CMD_ACK is not through yet, the node reboots, the gateway retransmits: runs once."""
    fresh(root)
    calls = []

    def on_cmd(cmd_id, op, args):
        calls.append(cmd_id)
        return p.CS_OK

    link, gw, clock, port = make(root, on_cmd=on_cmd)
    link.hello("streetlight", "1.0", 1, 1)
    run(link, gw, clock, 100)
    port.connected = False  # the node's answers are lost from now on
    gw.send(w.T_CMD, p.cmd(21, "dim", {"level": 100}))
    run(link, gw, clock, 100)
    ob = Outbox(root, quotas=(64, 128), seg_records=8)
    node_port, _ = pair()
    node_port.peer = port.peer
    port.peer.peer = node_port
    link2 = Link(node_port, NODE, (KEY, 0), ob, on_cmd=on_cmd, ticks=clock, rto_ms=50, rto_max_ms=400)
    gw.send(w.T_CMD, p.cmd(21, "dim", {"level": 100}))  # retransmission, new seq
    run(link2, gw, clock, 2000)
    return {
        "calls": calls,
        "cmd_acks": [p.parse_cmd_ack(g[3]) for g in gw.got if g[0] == w.T_CMD_ACK],
        "dups": link2.stats["cmd_dups"],
        "backlog": list(link2.backlog()),
    }


async def scenario_async_run(root):
    """Link.run() as an asyncio task (real time, short timeouts); app callbacks that raise do not stop it."""
    try:
        import asyncio
    except ImportError:  # pragma: no cover
        import uasyncio as asyncio  # type: ignore

    fresh(root)
    node_port, gw_port = pair()
    ob = Outbox(root, quotas=(16, 64), seg_records=8)

    def bad_callback(*args):
        raise ValueError("app bug")

    link = Link(node_port, NODE, (KEY, 0), ob, on_time=bad_callback, rto_ms=30, rto_max_ms=200, lost_ms=5000,
                poll_ms=5)
    gw = Gateway(gw_port)
    task = asyncio.create_task(link.run())
    link.hello("medical", "1.0", 1, 1)
    for i in range(10):
        link.data({p.L_HR: 600 + i})
    link.event(80, priority=w.PRIO_MEDIUM)
    gw.send(w.T_TIME, p.time_sync(1763700000))
    for _ in range(300):
        gw.step()
        await asyncio.sleep(0.01)
        if link.backlog() == (0, 0) and len(gw.got) >= 12:
            break
    link.stop()
    await task
    return {
        "backlog": list(link.backlog()),
        "got": len(gw.got),
        "first_types": [w.TYPE_NAMES[g[0]] for g in gw.got[:2]],
        "errors": link.stats["errors"],
        "clock_set": link.now() >= 1763700000,
    }


def scenario_key_rotation(root):
    """The node holds keys 0 and 1: it signs with 1; the gateway, holding both, verifies and answers."""
    fresh(root)
    new_key = bytes(range(100, 132))
    ring = w.Keyring()
    ring.add(NODE, KEY, 0)
    ring.add(NODE, new_key, 1)
    node_port, gw_port = pair()
    clock = Clock()
    link = Link(node_port, NODE, ring, Outbox(root), ticks=clock, rto_ms=50)
    gw = Gateway(gw_port)  # signs its ACKs with key 0 (not retired yet)
    gw.ring.add(NODE, new_key, 1)
    link.hello("streetlight", "1.0", 1, 1)
    link.data({p.L_LEVEL: 1})
    run(link, gw, clock, 200)
    gw.ring.remove(NODE, 0)  # retired at the gateway: a frame under key 0 is now refused
    old = w.encode_frame(w.T_EVENT, NODE, 99, 0, w.flags_for(w.CH_CTRL), p.event(1), w.Key(KEY, 0))
    try:
        gw.rx.verify(old)
        refused = ""
    except w.WireError as e:
        refused = e.name
    return {"key_ids": gw.key_ids, "backlog": list(link.backlog()), "rx_bad": link.stats["rx_bad"], "old": refused}


def scenario_reboot(root):
    """The node reboots with a backlog: nothing is lost, numbers are not reused, the gateway accepts them."""
    fresh(root)
    link, gw, clock, port = make(root)
    link.hello("streetlight", "1.0", 1, 1)
    for i in range(10):
        link.data({p.L_LEVEL: i})
    run(link, gw, clock, 200)
    port.connected = False
    for i in range(10, 30):
        link.data({p.L_LEVEL: i})
    link.event(1, priority=2)
    first_life = [link.outbox.seq.peek(0), link.outbox.seq.peek(1)]
    # reboot: a new Outbox and Link on the same files; the gateway keeps its windows
    ob = Outbox(root, quotas=(64, 128), seg_records=8)
    node_port, _ = pair()
    node_port.peer = port.peer
    port.peer.peer = node_port
    link2 = Link(node_port, NODE, (KEY, 0), ob, ticks=clock, rto_ms=50, rto_max_ms=400, lost_ms=1000)
    next_after = [ob.seq.peek(0), ob.seq.peek(1)]
    link2.hello("streetlight", "1.0", 2, p.RESET_POWER_ON)
    for i in range(30, 40):
        link2.data({p.L_LEVEL: i})
    run(link2, gw, clock, 20000)
    data = [g[3][p.L_LEVEL] for g in gw.got if g[0] == w.T_DATA]
    return {
        "first_life_next": first_life,
        "after_reboot_next": next_after,
        "data": sorted(data),
        "data_dups": len(data) - len(set(data)),
        "events": [g[3] for g in gw.got if g[0] == w.T_EVENT],
        "hellos": len([g for g in gw.got if g[0] == w.T_HELLO]),
        "backlog": list(link2.backlog()),
        "gw_errors": gw.errors,
        "skipped": gw.rx.skipped.get(NODE, 0),
    }


def scenario_bounds(root):
    """A long outage: telemetry is a bounded ring (oldest dropped), events are never dropped."""
    fresh(root)
    link, gw, clock, port = make(root, quotas=(40, 96))
    port.connected = False
    for i in range(300):
        link.data({p.L_LEVEL: i})
        if i % 10 == 0:
            link.event(1, p.EV_INFO)
    full = False
    try:
        for _ in range(20):
            link.event(2, p.EV_INFO)
    except OutboxFull:
        full = True
    backlog = list(link.backlog())
    dropped = list(link.outbox.dropped)
    files = len(os.listdir(root))
    port.connected = True
    run(link, gw, clock, 30000)
    data = [g[3][p.L_LEVEL] for g in gw.got if g[0] == w.T_DATA]
    return {
        "backlog": backlog,
        "dropped": dropped,
        "files": files,
        "full": full,
        "data_first": min(data),
        "data_last": max(data),
        "data_count": len(data),
        "events": len([g for g in gw.got if g[0] == w.T_EVENT]),
        "skipped": gw.rx.skipped.get(NODE, 0),
        "after": list(link.backlog()),
    }


# --- power cuts --------------------------------------------------------------------------------------
class PowerCut(Exception):
    pass


class _Budget:
    left = -1  # write units left before the cut; -1 = no cut
    mode = "prefix"  # "prefix": the bytes written so far stay (FAT-like); "revert": unclosed file lost (littlefs)
    used = 0


_real_open = open


class _FaultyFile:
    def __init__(self, path, mode):
        self.before = None
        if _Budget.mode == "revert" and ("a" in mode or "w" in mode):
            try:
                with _real_open(path, "rb") as f:
                    self.before = f.read()
            except OSError:
                self.before = None
        self.path = path
        self.f = _real_open(path, mode)

    def write(self, data):
        n = len(data)
        if _Budget.left >= 0 and _Budget.left < n:
            if _Budget.mode == "prefix":
                self.f.write(bytes(data[: _Budget.left]))
                self.f.close()
            else:
                self.f.close()
                if self.before is None:
                    os.remove(self.path)
                else:
                    with _real_open(self.path, "wb") as f:
                        f.write(self.before)
            _Budget.left = 0
            raise PowerCut()
        if _Budget.left > 0:
            _Budget.left -= n
        _Budget.used += n
        return self.f.write(data)

    def read(self, *a):
        return self.f.read(*a)

    def readinto(self, b):
        return self.f.readinto(b)

    def close(self):
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.f.close()


class _FaultyOS:
    @staticmethod
    def _tick():
        if _Budget.left == 0:
            raise PowerCut()
        if _Budget.left > 0:
            _Budget.left -= 1
        _Budget.used += 1

    @staticmethod
    def rename(a, b):
        _FaultyOS._tick()
        os.rename(a, b)

    @staticmethod
    def remove(a):
        _FaultyOS._tick()
        os.remove(a)

    mkdir = staticmethod(os.mkdir)
    listdir = staticmethod(os.listdir)
    stat = staticmethod(os.stat)


def _install(on):
    mods = (obm, ssm)  # type: tuple
    for m in mods:
        if on:
            m.open = _FaultyFile
            m.os = _FaultyOS
        else:
            try:
                del m.open
            except (AttributeError, KeyError):
                pass
            m.os = os


def _workload(root, log):
    ob = Outbox(root, quotas=(1000, 1000), seg_records=4, block=4)
    for i in range(14):
        ch = 1 if i % 3 else 0
        payload = bytes([i + 1]) * (3 + i % 5)
        log["cut_put"] = (ch, payload)
        seq = ob.put(ch, 2 if ch else 3, 0, 1000 + i, payload)
        log["cut_put"] = None
        log["ret"][ch].append((seq, payload))
        if i % 4 == 3:
            for c in (0, 1):
                if log["ret"][c]:
                    target = log["ret"][c][len(log["ret"][c]) // 2][0]
                    log["cut_ack"] = (c, target)
                    ob.ack(c, target)
                    log["cut_ack"] = None
                    if target > log["acked"][c]:
                        log["acked"][c] = target


def _check(root, log):
    """Reopen after the cut and check the outbox's promises; return a list of violations."""
    bad = []
    ob = Outbox(root, quotas=(1000, 1000), seg_records=4, block=4)
    for ch in (0, 1):
        a = ob.acked[ch]
        hi = log["acked"][ch]
        if log["cut_ack"] and log["cut_ack"][0] == ch:
            hi = max(hi, log["cut_ack"][1])
        if not log["acked"][ch] <= a <= hi:
            bad.append("ch%d acked %d not in [%d, %d]" % (ch, a, log["acked"][ch], hi))
        present = [(r[0], r[4]) for r in ob.read(ch, 0, 1000)]
        expected = [r for r in log["ret"][ch] if r[0] > a]
        extra = [r for r in present if r not in expected]
        if log["cut_put"] and log["cut_put"][0] == ch:
            extra = [r for r in extra if r[1] != log["cut_put"][1]]
        missing = [r for r in expected if r not in present]
        if missing:
            bad.append("ch%d lost %r" % (ch, missing))
        if extra:
            bad.append("ch%d invented %r" % (ch, extra))
        if ob.pending(ch) != len(present):
            bad.append("ch%d pending %d != %d records" % (ch, ob.pending(ch), len(present)))
        used = [r[0] for r in log["ret"][ch]] + [r[0] for r in present]
        new = ob.put(ch, 2 if ch else 3, 0, 5, b"after")
        if used and new <= max(used):
            bad.append("ch%d seq %d reused (max used %d)" % (ch, new, max(used)))
    ob2 = Outbox(root, quotas=(1000, 1000), seg_records=4, block=4)
    for ch in (0, 1):
        if ob2.read(ch, 0, 1000)[-1][4] != b"after":
            bad.append("ch%d record written after the cut is not there after another reboot" % ch)
    return bad


def _newlog():
    return {"ret": [[], []], "acked": [0, 0], "cut_put": None, "cut_ack": None}


def scenario_power_cuts(root, points=120):
    """Cut the power at many points of a put/ack workload (both cut models) and check every reopen."""
    fresh(root)
    _install(True)
    try:
        _Budget.left = -1
        _Budget.used = 0
        d = root + "/probe"
        os.mkdir(d)
        _workload(d, _newlog())
        total = _Budget.used
        step = max(1, total // points)
        runs = 0
        cuts = 0
        failures = []
        for mode in ("prefix", "revert"):
            for budget in range(0, total, step):
                d = "%s/%s%d" % (root, mode[0], budget)
                os.mkdir(d)
                _Budget.mode = mode
                _Budget.left = budget
                log = _newlog()
                try:
                    _workload(d, log)
                except PowerCut:
                    cuts += 1
                _Budget.left = -1
                bad = _check(d, log)
                runs += 1
                if bad:
                    failures.append((mode, budget, bad))
                rmtree(d)
    finally:
        _install(False)
        _Budget.left = -1
    return {"total_units": total, "runs": runs, "cuts": cuts, "failures": failures[:5]}
