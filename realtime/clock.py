"""The stream clock: maps stream time (seconds of audio since the session began) to wall time.

Live capture and real-time replay run at speed 1.0; ``replay --speed 2`` at 2.0; ``--speed max``
has no pacing at all (``speed=None``): waits return at once and backpressure from the bounded
channels sets the pace. Waits are single timed waits on the event loop, never polling.
"""

from __future__ import annotations

import asyncio
import time


class StreamClock:
    def __init__(self, speed: float | None = 1.0) -> None:
        if speed is not None and speed <= 0:
            raise ValueError("clock speed must be > 0 (or None for as fast as possible)")
        self.speed = speed
        self._origin: float | None = None

    @property
    def paced(self) -> bool:
        return self.speed is not None

    def start(self, origin: float | None = None) -> None:
        """Set monotonic time ``origin`` (default: now) as stream time 0. Idempotent."""
        if self._origin is None:
            self._origin = time.monotonic() if origin is None else origin

    @property
    def origin(self) -> float:
        if self._origin is None:
            raise RuntimeError("stream clock not started")
        return self._origin

    @staticmethod
    def now() -> float:
        """Monotonic seconds, the time base of every message's ``monotonic`` field."""
        return time.monotonic()

    def stream_time(self, monotonic: float | None = None) -> float:
        """Stream time at monotonic time ``monotonic`` (default: now); paced clocks only."""
        if self.speed is None:
            raise RuntimeError("an unpaced clock has no stream time of its own")
        at = self.now() if monotonic is None else monotonic
        return (at - self.origin) * self.speed

    def deadline(self, stream_time: float) -> float:
        """Monotonic time at which stream time ``stream_time`` is due (paced clocks only)."""
        if self.speed is None:
            raise RuntimeError("an unpaced clock has no deadlines")
        return self.origin + stream_time / self.speed

    async def wait_until(self, stream_time: float) -> None:
        """Return when ``stream_time`` is due; at once when unpaced or already due."""
        if self.speed is None:
            return
        delay = self.deadline(stream_time) - self.now()
        if delay > 0:
            await asyncio.sleep(delay)
