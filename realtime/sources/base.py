"""What every source gets from the pipeline, and the interface it implements.

Audio sources emit :class:`~realtime.messages.AudioChunk` (16 kHz mono float32 per channel, all
channels of one time step together) into the audio channel, which never drops (a source waits, or
fails loudly when it cannot wait); video sources emit frames into the video channel, which keeps
the latest only. Sources never emit EndOfStream: when ``run`` returns, the pipeline ends the
stream. When ``run`` raises a :class:`SourceError`, the pipeline ends the stream too, with the
reason ``"error: ..."``: everything the source emitted before is still segmented, transcribed,
classified and delivered, and the error is raised once the sinks are closed.

:meth:`Source.check` is a cheap look at the input (open it, read its first block, close it) that
the pipeline calls before it opens any sink or loads a model, so that unusable input is a one-line
error at once.
"""

from __future__ import annotations

import abc
import asyncio
import itertools
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from realtime.channels import Channel
from realtime.clock import StreamClock
from realtime.messages import AudioChunk, EndOfStream, VideoFrame


class SourceError(RuntimeError):
    """A source cannot start or continue (missing file, unknown device); one line for the user."""


class MediaReadError(SourceError):
    """The input could not be read any further after ``at`` seconds of good audio were read.

    Everything before ``at`` was emitted: the stream ends there with an error.
    """

    def __init__(self, message: str, *, at: float) -> None:
        super().__init__(message)
        self.at = at


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
    #: The channel of the other side of a call, whose echo the microphone may hear (None: none).
    remote_channel: int | None = None

    def __init__(self) -> None:
        self._stop = asyncio.Event()
        self.frames_emitted = 0
        self._frame_seq = itertools.count()

    def emit_frame(self, ctx: SourceContext, time: float, image: np.ndarray) -> None:
        """Hand one video frame at stream time ``time`` to the video channel (if there is one)."""
        if ctx.video is None:
            return
        frame = VideoFrame(
            ctx.session, next(self._frame_seq), ctx.clock.now(), image=image, time=time
        )
        ctx.video.put_nowait(frame)
        self.frames_emitted += 1

    @property
    @abc.abstractmethod
    def description(self) -> str:
        """One line for logs, the dashboard and the session manifest."""

    @property
    def channels(self) -> int:
        """Audio channels it emits (speakers); 0 for video-only sources."""
        return 0

    #: Seconds after which the source stops as if its input had ended (None: no limit; ``live
    #: --duration``), applied by :meth:`capture` alike to capture devices and replays.
    duration: float | None = None

    async def capture(self, ctx: SourceContext) -> None:
        """What the pipeline runs: :meth:`run`, stopped after :attr:`duration` seconds when
        that is set."""
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.duration, self.stop) if self.duration else None
        try:
            await self.run(ctx)
        finally:
            if timer is not None:
                timer.cancel()

    def check(self) -> None:
        """Raise a one-line :class:`SourceError` now if the input cannot be used (blocking; the
        pipeline calls it on its executor before it opens the sinks and loads the models).
        The default checks nothing."""
        return None

    @abc.abstractmethod
    async def run(self, ctx: SourceContext) -> None: ...

    def stop(self) -> None:
        """Ask ``run`` to return soon (call from the event loop)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()
