"""What every source gets from the pipeline, and the interface it implements.

Audio sources emit :class:`~realtime.messages.AudioChunk` (16 kHz mono float32 per channel, all
channels of one time step together) into the audio channel, which never drops (a source waits, or
fails loudly when it cannot wait); video sources emit frames into the video channel, which keeps
the latest only. Sources never emit EndOfStream: when ``run`` returns, the pipeline ends the
stream.
"""

from __future__ import annotations

import abc
import asyncio
from concurrent.futures import Executor
from dataclasses import dataclass

from realtime.channels import Channel
from realtime.clock import StreamClock
from realtime.messages import AudioChunk, EndOfStream, VideoFrame


class SourceError(RuntimeError):
    """A source cannot start or continue (missing file, unknown device); one line for the user."""


class NoInputDevice(SourceError):
    """The machine has no audio input device at all."""


@dataclass(frozen=True)
class SourceContext:
    session: str
    clock: StreamClock
    executor: Executor
    audio: Channel[AudioChunk | EndOfStream]
    video: Channel[VideoFrame] | None = None


class Source(abc.ABC):
    """An audio and/or video producer. ``run`` returns at the end of its input or once stopped."""

    #: True for capture devices (real time, nothing to wait for), False for replay.
    live: bool = False

    def __init__(self) -> None:
        self._stop = asyncio.Event()

    @property
    @abc.abstractmethod
    def description(self) -> str:
        """One line for logs, the dashboard and the session manifest."""

    @property
    def channels(self) -> int:
        """Audio channels it emits (speakers); 0 for video-only sources."""
        return 0

    @abc.abstractmethod
    async def run(self, ctx: SourceContext) -> None: ...

    def stop(self) -> None:
        """Ask ``run`` to return soon (call from the event loop)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()
