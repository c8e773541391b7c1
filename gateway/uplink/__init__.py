"""The uplink to the operations center: compact batches over MQTT, commands back (see docs/uplink.md).

``start_uplink(config, outbox, router, ...)`` is what the agent calls; :class:`Uplink` is the class.
The names are imported lazily so that :mod:`gateway.outbox` can use :mod:`gateway.uplink.codec`
(it stores event bodies in their compact form) without an import cycle.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.uplink.client import (
        Uplink,
        UplinkSettings,
        UplinkState,
        UplinkStats,
        command_result_event,
        start_uplink,
    )

__all__ = ["Uplink", "UplinkSettings", "UplinkState", "UplinkStats", "command_result_event", "start_uplink"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("gateway.uplink.client"), name)
    raise AttributeError(f"module 'gateway.uplink' has no attribute {name!r}")
