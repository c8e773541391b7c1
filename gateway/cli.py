"""``cityedge gateway run`` and ``cityedge gateway check-config``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from cityedge.errors import CityedgeError
from gateway.config import GatewayConfig, load_config
from gateway.registry import Registry

DEFAULT_CONFIG = "/etc/cityedge/gateway.toml"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``gateway`` with its ``run`` and ``check-config`` subcommands."""
    gw = subparsers.add_parser("gateway", help="the gateway agent (run it, check its configuration)")
    sub = gw.add_subparsers(dest="gateway_command", metavar="ACTION", required=True)
    run = sub.add_parser("run", help="run the agent (under systemd: Type=notify)")
    run.add_argument("--config", default=DEFAULT_CONFIG, help=f"configuration file (default {DEFAULT_CONFIG})")
    run.set_defaults(func=cmd_run)
    check = sub.add_parser("check-config", help="validate the configuration and the node manifest, then exit")
    check.add_argument("--config", default=DEFAULT_CONFIG, help=f"configuration file (default {DEFAULT_CONFIG})")
    check.set_defaults(func=cmd_check_config)


def setup_logging(level: str) -> None:
    """Log to stderr; under systemd (journald) without our own timestamps, which the journal adds."""
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=getattr(logging, level.upper()), format=fmt, stream=sys.stderr, force=True)


def check(config: GatewayConfig) -> list[str]:
    """Everything that can be known before start-up; raises ConfigError, returns warnings."""
    warnings = []
    registry = Registry(config.nodes.manifest)
    registry.load()  # ConfigError names the manifest and the key
    if config.nodes.manifest is None:
        warnings.append("[nodes] manifest is not set: every node frame will be refused as unknown")
    elif len(registry) == 0:
        warnings.append(f"{config.nodes.manifest}: no nodes provisioned yet")
    for link in config.serial:
        if not Path(link.port).exists():
            warnings.append(f"serial[{link.name}]: {link.port} does not exist now (the agent will keep trying)")
    parent = config.state_dir if config.state_dir.exists() else config.state_dir.parent
    if not os.access(parent, os.W_OK):
        warnings.append(f"[gateway] state_dir {config.state_dir} is not writable by this user")
    if config.uplink.url is None:
        warnings.append("[uplink] url is not set: events stay in the outbox")
    return warnings


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    warnings = check(config)
    registry = Registry(config.nodes.manifest)
    registry.load()
    print(f"{args.config}: ok — gateway {config.gateway_id}, {len(config.serial)} serial link(s), "
          f"{len(registry)} node(s), uplink {config.uplink.url or 'none'}")
    for w in warnings:
        print(f"warning: {w}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from gateway.agent import Agent

    config = load_config(args.config)
    setup_logging(config.log_level)
    try:
        asyncio.run(Agent(config).run())
    except OSError as exc:  # e.g. the health port is taken, the state directory is read-only
        raise CityedgeError(f"the gateway could not start: {exc}",
                            hint="check [health] listen and the permissions of [gateway] state_dir") from exc
    return 0
