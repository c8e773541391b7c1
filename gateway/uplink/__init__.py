"""The uplink to the operations center: compact batches over MQTT, commands back (see docs/uplink.md).

``start_uplink(config, outbox, router, ...)`` is what the agent calls; :class:`Uplink` is the class.
"""

from gateway.uplink.client import (
    Uplink,
    UplinkSettings,
    UplinkState,
    UplinkStats,
    command_result_event,
    start_uplink,
)

__all__ = ["Uplink", "UplinkSettings", "UplinkState", "UplinkStats", "command_result_event", "start_uplink"]
