"""A reference consumer of the uplink: decode, drop duplicates, detect gaps, keep a picture of the site.

The operations center's side of docs/uplink.md, independent of MQTT (feed it ``(topic, payload)``), so
it is easy to test and to embed. ``cityedge ops tail`` wraps it around an MQTT subscription.

Per lane (gateway × outbox epoch × source × priority) events carry consecutive sequence numbers:

* ``seq <= last`` and not a known hole → a duplicate (the gateway resent a batch whose PUBACK it lost): dropped;
* ``seq == last + 1`` → in order;
* ``seq > last + 1`` → a gap: ``last+1 … seq-1`` are reported missing; if one of them arrives later it is
  delivered and marked ``late`` (it is no longer missing).

The first event seen on a lane starts it, unless ``from_start`` says the consumer has seen everything since
the gateway's outbox began (then lanes start at 1 and events dropped before the first delivery are gaps too).

A change of the gateway's ``epoch`` (its outbox was recreated) starts fresh lanes; a new ``bdSeq`` in the
birth is a reconnect or restart of the gateway, reported as such.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.ops.labels import Category, event_category
from gateway.uplink import codec
from gateway.uplink.topics import parse_topic

MAX_TRACKED_HOLES = 100_000  # per lane; beyond this, holes are counted but not remembered one by one
# events that never count as a node's raised alarms or faults (an override is not one, whatever its priority)
_NOT_ALARMS = (Category.STATE, Category.INFO)


@dataclass
class _Lane:
    last: int
    holes: set[int] = field(default_factory=set)


@dataclass
class NodeView:
    """What the consumer knows about one node."""

    gateway: str
    site: str
    node_id: str
    name: str = ""
    role: str = ""
    lat: float | None = None
    lon: float | None = None
    online: bool | None = None
    last_seen_ms: int | None = None
    values: dict[str, Any] = field(default_factory=dict)
    alarms: dict[str, Any] = field(default_factory=dict)  # event name -> last body while raised

    def feature(self) -> dict[str, Any] | None:
        """A GeoJSON Feature (RFC 7946: [lon, lat]); None without a position."""
        if self.lat is None or self.lon is None:
            return None
        state = "unknown" if self.online is None else ("online" if self.online else "offline")
        last = (
            dt.datetime.fromtimestamp(self.last_seen_ms / 1000, dt.UTC).isoformat().replace("+00:00", "Z")
            if self.last_seen_ms
            else None
        )
        return {
            "type": "Feature",
            "id": f"{self.gateway}/{self.node_id}",
            "geometry": {"type": "Point", "coordinates": [self.lon, self.lat]},
            "properties": {
                "node_id": self.node_id,
                "name": self.name,
                "role": self.role,
                "site": self.site,
                "gateway": self.gateway,
                "state": state,
                "last_seen": last,
                "alarms": sorted(self.alarms),
                **{f"last_{k}": v for k, v in self.values.items()},
            },
        }


@dataclass
class GatewayView:
    site: str
    gateway: str
    online: bool = False
    bd_seq: int | None = None
    epoch: str = ""
    birth: dict[str, Any] = field(default_factory=dict)


@dataclass
class ConsumerStats:
    messages: int = 0
    events: int = 0
    duplicates: int = 0
    missing: int = 0  # sequence numbers reported missing (some may arrive late)
    late: int = 0
    malformed: int = 0
    restarts: int = 0


class Consumer:
    """Feed it uplink messages with :meth:`feed`; it returns JSON-able records to print."""

    def __init__(self, prefix: str = "cityedge", *, site: str | None = None, from_start: bool = False) -> None:
        self.prefix = prefix
        self.site = site
        # from_start: this consumer has received everything since the gateway's outbox began (a persistent
        # session of the operations center), so every lane starts at seq 1 and a first seq > 1 is a gap
        self.from_start = from_start
        self.stats = ConsumerStats()
        self.gateways: dict[tuple[str, str], GatewayView] = {}
        self.nodes: dict[tuple[str, str], NodeView] = {}
        self._lanes: dict[tuple[str, str, str, str, int], _Lane] = {}
        self.changed = False  # the GeoJSON picture changed since the flag was last cleared

    def feed(self, topic: str, payload: bytes) -> list[dict[str, Any]]:
        """Process one message; returns records (``type``: event, gap, state, error)."""
        self.stats.messages += 1
        parsed = parse_topic(self.prefix, topic)
        if parsed is None or (self.site is not None and parsed.site != self.site):
            return []
        if parsed.what == "state":
            return self._state(parsed.site, parsed.gateway, payload)
        if parsed.what != "ev":
            return []
        try:
            events = codec.decode_batch(payload)
        except codec.PayloadError as exc:
            self.stats.malformed += 1
            return [{"type": "error", "topic": topic, "error": str(exc)}]
        out: list[dict[str, Any]] = []
        for ev in events:
            if parsed.lane is not None and ev.priority is not parsed.lane:
                self.stats.malformed += 1
                out.append({"type": "error", "topic": topic, "error": "event priority does not match the topic"})
                continue
            out.extend(self._event(parsed.site, ev))
        return out

    # ------------------------------------------------------------------ events
    def _event(self, site: str, ev: codec.UplinkEvent) -> list[dict[str, Any]]:
        key = (site, ev.gateway, ev.epoch, ev.source, int(ev.priority))
        lane = self._lanes.get(key)
        out: list[dict[str, Any]] = []
        late = False
        if lane is None:
            lane = self._lanes[key] = _Lane(0 if self.from_start else ev.seq - 1)
        if ev.seq == lane.last + 1:
            lane.last = ev.seq
        elif ev.seq > lane.last + 1:
            first, last = lane.last + 1, ev.seq - 1
            self.stats.missing += last - first + 1
            if len(lane.holes) + (last - first + 1) <= MAX_TRACKED_HOLES:
                lane.holes.update(range(first, last + 1))
            out.append(
                {
                    "type": "gap",
                    "site": site,
                    "gw": ev.gateway,
                    "src": ev.source,
                    "lane": ev.priority.lane,
                    "from": first,
                    "to": last,
                    "missing": last - first + 1,
                }
            )
            lane.last = ev.seq
        elif ev.seq in lane.holes:
            lane.holes.discard(ev.seq)
            self.stats.missing -= 1
            self.stats.late += 1
            late = True
        else:
            self.stats.duplicates += 1
            return out
        self.stats.events += 1
        record = {"type": "event", "site": site, **ev.as_dict()}
        category = event_category(ev.kind, ev.body, ev.priority.lane)
        if category is not None:
            record["category"] = category.value  # what it is (the lane says how urgent it is)
        if late:
            record["late"] = True
        out.append(record)
        self._track(site, ev)
        return out

    def _track(self, site: str, ev: codec.UplinkEvent) -> None:
        if not ev.source.startswith("node:"):
            return
        node = self._node(site, ev.gateway, ev.source[5:])
        node.last_seen_ms = max(node.last_seen_ms or 0, ev.ts_ms)
        body = ev.body
        if ev.kind == "telemetry":
            records = body.get("records")
            latest = records[-1] if isinstance(records, list) and records else body
            if isinstance(latest, Mapping):
                node.values.update({k: v for k, v in latest.items() if k != "t" and not isinstance(v, dict | list)})
            node.online = True
        elif ev.kind == "node_state":
            if isinstance(body.get("online"), bool):
                node.online = body["online"]
        elif ev.kind == "hello":
            node.online = True
        elif ev.kind == "event" and event_category(ev.kind, body, ev.priority.lane) not in _NOT_ALARMS:
            name = str(body.get("name", body.get("code", "event")))
            if body.get("state") in ("raised", "escalated"):
                node.alarms[name] = {k: v for k, v in body.items() if k in ("value", "limit", "unit", "state")}
            elif body.get("state") == "cleared":
                node.alarms.pop(name, None)
        self.changed = True

    def _node(self, site: str, gateway: str, node_id: str) -> NodeView:
        node = self.nodes.get((gateway, node_id))
        if node is None:
            node = self.nodes[(gateway, node_id)] = NodeView(gateway, site, node_id)
        return node

    # ------------------------------------------------------------------ state
    def _state(self, site: str, gateway: str, payload: bytes) -> list[dict[str, Any]]:
        if not payload:  # a cleared retained message
            return []
        try:
            doc = codec.decode_state(payload)
        except codec.PayloadError as exc:
            self.stats.malformed += 1
            return [{"type": "error", "topic": f"{site}/{gateway}/state", "error": str(exc)}]
        gw = self.gateways.get((site, gateway))
        if gw is None:
            gw = self.gateways[(site, gateway)] = GatewayView(site, gateway)
        bd = int(doc["bdSeq"])
        record: dict[str, Any] = {
            "type": "state",
            "site": site,
            "gw": gateway,
            "online": bool(doc["online"]),
            "bdSeq": bd,
        }
        if doc["online"]:
            if gw.bd_seq is not None and bd != gw.bd_seq:
                self.stats.restarts += 1
                record["reconnected"] = True  # a new session: the gateway reconnected or restarted
            gw.online, gw.bd_seq, gw.epoch, gw.birth = True, bd, str(doc.get("epoch", "")), doc
            for info in doc.get("nodes", []) or []:
                if not isinstance(info, Mapping) or "id" not in info:
                    continue
                node = self._node(site, gateway, str(info["id"]))
                node.name = str(info.get("name", "") or "")
                node.role = str(info.get("role", "") or "")
                lat, lon = info.get("lat"), info.get("lon")
                if isinstance(lat, int | float) and isinstance(lon, int | float):
                    node.lat, node.lon = float(lat), float(lon)
            record["nodes"] = len(doc.get("nodes", []) or [])
            record["outbox"] = doc.get("outbox")
        else:
            if gw.bd_seq is not None and bd < gw.bd_seq:
                record["stale"] = True  # the death of an older session: the current one is still alive
            else:
                gw.online = False
                record["reason"] = doc.get("reason", "")
        self.changed = True
        return [record]

    # ------------------------------------------------------------------ GIS
    def geojson(self) -> dict[str, Any]:
        """The site's nodes with position and state as a GeoJSON FeatureCollection (RFC 7946)."""
        features = []
        for (_gw, _nid), node in sorted(self.nodes.items()):
            if self.site is not None and node.site != self.site:
                continue
            gw = self.gateways.get((node.site, node.gateway))
            feature = node.feature()
            if feature is None:
                continue
            if gw is not None and not gw.online:
                feature["properties"]["state"] = "unreachable"  # its gateway is offline: state unknown
            features.append(feature)
        return {"type": "FeatureCollection", "features": features}
