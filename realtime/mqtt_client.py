"""MQTT client settings from :class:`~realtime.mqtt_options.MqttOptions`: the one place that turns
the ``--mqtt-*`` options into an :class:`aiomqtt.Client`'s arguments, for the MQTT sink, the
server and the stream client (apart from the options so that loading a config never imports
aiomqtt)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiomqtt

from realtime.mqtt_options import MqttOptions


async def client_kwargs(
    options: MqttOptions,
    *,
    identifier: str | None,
    will: aiomqtt.Will | None = None,
    v5: bool = False,
    logger_name: str = "realtime.mqtt.client",
) -> dict[str, Any]:
    """Keyword arguments of :class:`aiomqtt.Client`; reads the password and the TLS files (raises
    :class:`~realtime.sinks.base.SinkError` with one line when they cannot be read)."""
    password = options.resolve_password()
    tls_context = await asyncio.to_thread(options.build_tls_context) if options.use_tls else None
    return {
        "hostname": options.host,
        "port": options.port,
        "username": options.username,
        "password": password,
        "identifier": identifier,
        "keepalive": options.keepalive,
        "timeout": options.timeout,
        "tls_context": tls_context,
        "tls_insecure": True if options.tls_insecure else None,
        "will": will,
        "protocol": aiomqtt.ProtocolVersion.V5 if v5 else None,
        "logger": logging.getLogger(logger_name),
    }
