"""Whether a retained state says ``online`` (a session's status, a server's state), asked before
a client takes an id the broker would otherwise hand over: the broker keeps one connection per
client id, and a server's retained state is overwritten by the next one with its id.

The broker answers in order: the retained message of a topic, if any, comes before a marker the
asker publishes after subscribing. A broker whose ACL hides either tells nothing (None, after the
timeout).
"""

from __future__ import annotations

import asyncio
import json

import aiomqtt


async def retained_online(client: aiomqtt.Client, topic: str, timeout: float) -> bool | None:
    """Whether ``topic``'s retained message says ``online``; None when the broker told nothing
    within ``timeout`` seconds. Call before anything else subscribes on ``client``."""
    marker = f"{topic}/probe"
    await client.subscribe([(topic, 1), (marker, 1)])
    answer: bool | None = None
    try:
        async with asyncio.timeout(timeout):
            await client.publish(marker, b"", qos=1)
            async for message in client.messages:
                if message.topic.value == marker:
                    answer = False
                    break
                if message.retain and state_of(message.payload) == "online":
                    answer = True
                    break
    except TimeoutError:
        return None
    await client.unsubscribe([topic, marker])
    return answer


def state_of(payload: object) -> object:
    """A status or state message's ``state`` (None when it is not a JSON object)."""
    try:
        data = json.loads(payload if isinstance(payload, bytes) else b"")
    except json.JSONDecodeError:
        return None
    return data.get("state") if isinstance(data, dict) else None
