"""The cityedge gateway agent: southbound links, frame verification, durable outbox, uplink, systemd.

Start it with ``cityedge gateway run --config /etc/cityedge/gateway.toml`` (see docs/gateway.md).
"""
