"""Video on the utterance path: frames merged into the stream in order, kept, attached.

Cameras and video tracks write into the video channel, which keeps only the latest frames.
:class:`VideoMergeStage` moves them into the main stream before each audio chunk (sources emit
them in stream-time order), so every later stage sees one ordered stream; :class:`FrameAttachStage`
keeps the recent ones and gives each utterance the frames seen while it was spoken.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import replace
from typing import Any

from realtime.channels import Channel
from realtime.messages import EndOfStream, Utterance, VideoFrame
from realtime.stage import Inbox, Stage


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


class VideoMergeStage(Stage):
    """First stage when there is video: frames waiting in the video channel join the stream."""

    inbox_spec = Inbox("merge", 64)

    def __init__(self, video: Channel[VideoFrame]) -> None:
        super().__init__()
        self.video = video

    async def _merge_waiting(self) -> None:
        while True:
            try:
                frame = self.video.get_nowait()
            except asyncio.QueueEmpty:
                return
            await self.push(frame)

    async def process(self, item: Any) -> None:
        await self._merge_waiting()
        await self.push(item)

    async def finish(self, end: EndOfStream) -> None:
        await self._merge_waiting()


class FrameAttachStage(Stage):
    """Keeps the frames of the last ``horizon`` seconds and attaches them to utterances."""

    inbox_spec = Inbox("frames", 64)

    def __init__(self, horizon: float) -> None:
        super().__init__()
        self.frames = FrameBuffer(horizon)

    async def process(self, item: Any) -> None:
        if isinstance(item, VideoFrame):
            self.frames.add(item)
        elif isinstance(item, Utterance):
            await self.push(replace(item, frames=self.frames.between(item.start, item.end)))
        else:
            await self.push(item)
