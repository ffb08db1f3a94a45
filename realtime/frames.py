"""Recent video frames by stream time, so an utterance can take the frames seen while spoken."""

from __future__ import annotations

from collections import deque

from realtime.messages import VideoFrame


class FrameBuffer:
    """Keeps the frames of the last ``horizon`` seconds of stream time (oldest evicted first)."""

    def __init__(self, horizon: float) -> None:
        if horizon <= 0:
            raise ValueError("frame buffer horizon must be > 0")
        self.horizon = horizon
        self._frames: deque[VideoFrame] = deque()

    def __len__(self) -> int:
        return len(self._frames)

    def add(self, frame: VideoFrame) -> None:
        self._frames.append(frame)
        while self._frames and self._frames[0].time < frame.time - self.horizon:
            self._frames.popleft()

    def between(self, start: float, end: float) -> tuple[VideoFrame, ...]:
        return tuple(f for f in self._frames if start <= f.time <= end)


def keep_after(previous: float, time: float, period: float) -> float:
    """When the next frame may be kept, after keeping one at ``time`` (due at ``previous``).

    On schedule, the grid ``previous + period`` is kept, so the rate is exactly ``1 / period`` on
    average; after a gap the grid restarts from ``time``.
    """
    return previous + period if time < previous + period else time + period
