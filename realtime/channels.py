"""Bounded channels between pipeline stages, each with an explicit overflow policy.

The pipeline owns every channel. Policies:

- ``BLOCK``: a full channel makes the producer wait (backpressure). Used for audio into the VAD,
  which must never lose samples, and for the inference inbox during replay, where waiting is free.
- ``DROP_OLDEST``: a full channel discards its oldest item to make room, counts it and logs it.
  Used for video (latest frames only), the live inference inbox and each sink's queue.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Policy(enum.Enum):
    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"


class ChannelFull(RuntimeError):
    """A ``BLOCK`` channel was offered an item without waiting while full."""


class Channel(Generic[T]):
    """An ``asyncio.Queue`` with a name, a bound and an overflow policy that counts its drops."""

    def __init__(
        self,
        name: str,
        maxsize: int,
        policy: Policy,
        *,
        on_drop: Callable[[T], None] | None = None,
    ) -> None:
        if maxsize < 1:
            raise ValueError(f"channel {name}: maxsize must be >= 1")
        self.name = name
        self.maxsize = maxsize
        self.policy = policy
        self.dropped = 0
        self._on_drop = on_drop
        self._queue: asyncio.Queue[T] = asyncio.Queue(maxsize)

    def __repr__(self) -> str:
        return f"Channel({self.name!r}, {self.qsize()}/{self.maxsize}, {self.policy.value})"

    async def put(self, item: T) -> None:
        """Add an item: waits for room under ``BLOCK``, drops the oldest under ``DROP_OLDEST``."""
        if self.policy is Policy.BLOCK:
            await self._queue.put(item)
        else:
            self.put_nowait(item)

    def put_nowait(self, item: T) -> None:
        """Add an item without waiting (for callbacks); a full ``BLOCK`` channel raises."""
        if self._queue.full():
            if self.policy is Policy.BLOCK:
                raise ChannelFull(f"channel {self.name!r} is full ({self.maxsize} items)")
            self._drop(self._queue.get_nowait())
        self._queue.put_nowait(item)

    def _drop(self, item: T) -> None:
        self.dropped += 1
        # First drop, then every power of ten, so an overloaded session does not flood the log.
        if str(self.dropped).rstrip("0") == "1":
            logger.warning(
                "channel %s full: dropped its oldest item (%d so far)", self.name, self.dropped
            )
        if self._on_drop is not None:
            self._on_drop(item)

    async def get(self) -> T:
        return await self._queue.get()

    def get_nowait(self) -> T:
        """The next item; raises ``asyncio.QueueEmpty`` when there is none."""
        return self._queue.get_nowait()

    def qsize(self) -> int:
        return self._queue.qsize()

    def empty(self) -> bool:
        return self._queue.empty()
