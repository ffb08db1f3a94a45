"""Microphone capture with sounddevice.

The device is chosen by index or by (part of) its name and opened at its native rate. The
PortAudio callback only copies the block and hands it to the event loop with
``loop.call_soon_threadsafe``; it never blocks and never touches the pipeline. On the loop, blocks
are resampled to 16 kHz with a streaming soxr resampler (mono, or one speaker per channel) and
offered to the audio channel without waiting. That channel never drops: if the VAD fell so far
behind that it is full, capture stops with an error rather than lose audio silently.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any

import numpy as np

from realtime.channels import ChannelFull
from realtime.messages import SAMPLE_RATE, AudioChunk
from realtime.sources.base import (
    MediaReadError,
    NoInputDevice,
    Source,
    SourceContext,
    SourceError,
)

logger = logging.getLogger(__name__)


def input_devices() -> list[dict[str, Any]]:
    """Every audio input device PortAudio knows (blocking: PortAudio may probe hardware)."""
    import sounddevice as sd

    try:
        devices = sd.query_devices()
    except sd.PortAudioError as exc:
        raise SourceError(f"cannot list audio devices: {exc}") from None
    return [dict(d) for d in devices if d["max_input_channels"] > 0]


def find_input_device(spec: str | None) -> dict[str, Any]:
    """The input device named by index or name substring, or the default one.

    Raises :class:`NoInputDevice` when there is no input at all, :class:`SourceError` when ``spec``
    matches none (the message lists what exists).
    """
    import sounddevice as sd

    inputs = input_devices()
    if not inputs:
        raise NoInputDevice("no audio input device found")
    by_index = {int(d["index"]): d for d in inputs}
    available = "; ".join(f"{i}: {d['name']}" for i, d in by_index.items())
    if spec is None:
        default = sd.default.device[0]
        if isinstance(default, int) and default in by_index:
            return by_index[default]
        return inputs[0]
    if spec.strip().isdigit():
        index = int(spec)
        if index not in by_index:
            raise SourceError(f"no audio input device with index {index} (inputs: {available})")
        return by_index[index]
    wanted = spec.strip().lower()
    exact = [d for d in inputs if d["name"].lower() == wanted]
    matches = exact or [d for d in inputs if wanted in d["name"].lower()]
    if not matches:
        raise SourceError(f"no audio input device matches {spec!r} (inputs: {available})")
    if len(matches) > 1:
        logger.info("%d input devices match %r; using %s", len(matches), spec, matches[0]["name"])
    return matches[0]


class MicrophoneSource(Source):
    live = True

    def __init__(
        self,
        device: str | None = None,
        *,
        channels_as_speakers: bool = False,
        block_ms: int = 20,
        duration: float | None = None,
        first_channel: int = 0,
        on_session_clock: bool = False,
        seq: itertools.count[int] | None = None,
    ) -> None:
        super().__init__()
        self.device_spec = device
        # As one side of a call (CallSource): the channel its audio goes to, and stream times
        # read from the session clock at the first block, so that two devices line up.
        self.first_channel = first_channel
        self.on_session_clock = on_session_clock
        self.channels_as_speakers = channels_as_speakers
        self.block_ms = block_ms
        self.duration = duration  # stop after this many seconds of audio
        self.device_name = device or "default"
        self.overflows = 0  # blocks PortAudio reported as overrun (audio lost in the driver)
        self._channels = 1
        self._seq = seq if seq is not None else itertools.count()
        self._position: int | None = None  # stream sample of the next block, per channel
        self._error: SourceError | None = None

    @property
    def description(self) -> str:
        return f"microphone {self.device_name}"

    @property
    def channels(self) -> int:
        return self._channels

    async def run(self, ctx: SourceContext) -> None:
        import sounddevice as sd
        import soxr

        loop = asyncio.get_running_loop()
        info = await loop.run_in_executor(ctx.executor, find_input_device, self.device_spec)
        self.device_name = str(info["name"])
        rate = int(info["default_samplerate"])
        channels = min(2, int(info["max_input_channels"])) if self.channels_as_speakers else 1
        self._channels = channels
        resampler = (
            soxr.ResampleStream(rate, SAMPLE_RATE, channels, dtype="float32")
            if rate != SAMPLE_RATE
            else None
        )

        def deliver(block: np.ndarray, arrived: float, overflow: bool) -> None:
            # On the event loop.
            if overflow:
                self.overflows += 1
                logger.warning("audio input overflow: the driver lost samples (%d)", self.overflows)
            audio = resampler.resample_chunk(block) if resampler is not None else block
            self._offer(ctx, audio, arrived)

        def callback(indata: np.ndarray, frames: int, when: Any, status: Any) -> None:
            # On PortAudio's thread: copy and hand over, nothing else.
            if loop.is_closed():
                raise sd.CallbackStop
            loop.call_soon_threadsafe(
                deliver, indata.copy(), time.monotonic(), status.input_overflow
            )

        try:
            stream = sd.InputStream(
                device=int(info["index"]),
                samplerate=rate,
                channels=channels,
                dtype="float32",
                blocksize=max(1, rate * self.block_ms // 1000),
                callback=callback,
            )
        except (sd.PortAudioError, ValueError) as exc:
            raise SourceError(f"cannot open audio input {self.device_name!r}: {exc}") from None
        logger.info("capturing %s at %d Hz, %d channel(s)", self.device_name, rate, channels)
        try:
            await loop.run_in_executor(ctx.executor, stream.start)
            await self._stop.wait()
        finally:
            await loop.run_in_executor(ctx.executor, stream.stop)
            await loop.run_in_executor(ctx.executor, stream.close)
        if self._error is not None:
            raise self._error

    def _first_position(self, ctx: SourceContext, samples: int, arrived: float) -> int:
        if not (self.on_session_clock and ctx.clock.paced):
            return 0
        began = ctx.clock.stream_time(arrived) - samples / SAMPLE_RATE
        return max(0, round(began * SAMPLE_RATE))

    def _offer(self, ctx: SourceContext, audio: np.ndarray, arrived: float) -> None:
        if self._error is not None or not len(audio):
            return
        if self._position is None:
            self._position = self._first_position(ctx, len(audio), arrived)
        start = self._position / SAMPLE_RATE
        try:
            for channel in range(audio.shape[1]):
                ctx.audio.put_nowait(
                    AudioChunk(
                        session=ctx.session,
                        seq=next(self._seq),
                        monotonic=arrived,
                        samples=np.ascontiguousarray(audio[:, channel], dtype=np.float32),
                        start=start,
                        channel=self.first_channel + channel,
                    )
                )
        except ChannelFull:
            self._error = MediaReadError(
                "speech detection fell too far behind the microphone; stopping instead of "
                "dropping audio (is the machine overloaded?)",
                at=start,
            )
            self.stop()
            return
        self._position += len(audio)
