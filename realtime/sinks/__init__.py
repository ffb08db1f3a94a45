"""Result sinks: JSON lines, MQTT and the Rich terminal dashboard.

The concrete sinks are imported lazily so that, for example, writing JSON lines does not import
the MQTT client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from realtime.sinks.base import Sink, SinkError

if TYPE_CHECKING:
    from realtime.sinks.dashboard import DashboardSink
    from realtime.sinks.jsonl import JsonlSink
    from realtime.sinks.mqtt import MqttOptions, MqttSink

__all__ = ["DashboardSink", "JsonlSink", "MqttOptions", "MqttSink", "Sink", "SinkError"]

_LAZY = {
    "DashboardSink": "realtime.sinks.dashboard",
    "JsonlSink": "realtime.sinks.jsonl",
    "MqttOptions": "realtime.sinks.mqtt",
    "MqttSink": "realtime.sinks.mqtt",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)
