"""An audio :class:`~realtime.sources.base.Source` fed by one session's MQTT audio messages.

The server hands it every payload of ``{prefix}/{session}/audio`` (:meth:`MqttAudioSource.feed`)
and the end message (:meth:`MqttAudioSource.end`), on the event loop. A payload that breaks the
protocol (garbage, wrong size, a sequence number already seen) is rejected and reported through
``on_error``; the session goes on. A gap in the sequence numbers is reported and the chunk kept.

Latency stays bounded: at most ``max_backlog`` seconds of audio wait for the speech detector;
beyond that the newest chunks are dropped, counted and reported. A chunk's time is when it was due
had the client kept real time since its first chunk (or its arrival, if earlier), so that delay in
reading the messages counts as latency, and :attr:`MqttAudioSource.lag` says how late the latest
chunk came. No audio for ``idle_timeout``
seconds ends the session with a :class:`~realtime.sources.base.SourceError`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from realtime.messages import SAMPLE_RATE, AudioChunk
from realtime.serve.protocol import Chunk, EndRequest, ProtocolError, StartRequest, decode_chunk
from realtime.sources.base import Source, SourceContext, SourceError

logger = logging.getLogger(__name__)


@dataclass
class SourceCounters:
    """What the source received and did with it (published with the session's end)."""

    chunks: int = 0  # accepted
    rejected: int = 0  # broke the protocol (garbage, wrong size)
    late: int = 0  # sequence number already passed: dropped
    missing: int = 0  # sequence numbers skipped by the client
    dropped: int = 0  # accepted but dropped because the session fell behind (max_backlog)
    seconds: float = 0.0  # audio emitted into the pipeline, at 16 kHz


class MqttAudioSource(Source):
    """The audio of one session of the stream protocol (live: results must stay current)."""

    live = True

    def __init__(
        self,
        start: StartRequest,
        *,
        on_error: Callable[[ProtocolError], None],
        idle_timeout: float = 30.0,
        max_backlog: float = 10.0,
    ) -> None:
        super().__init__()
        self.start = start
        self.on_error = on_error
        self.idle_timeout = idle_timeout
        self.max_backlog = max_backlog
        self.counters = SourceCounters()
        self.end_reason: str | None = None
        self._expected = 0
        self._last_seq: int | None = None
        self._ended = False
        self._backlog: deque[tuple[Chunk, float]] = deque()
        self._backlog_seconds = 0.0
        self._wake = asyncio.Event()
        self._first_arrival: float | None = None
        self._sent_seconds = 0.0  # audio of the chunks received so far, at the client's rate
        self.lag = 0.0  # seconds the latest chunk arrived after its real-time due time
        self._resampler = _resampler(start)

    @property
    def description(self) -> str:
        start = self.start
        return f"MQTT session {start.session} ({start.sample_rate} Hz, {start.channels} ch)"

    @property
    def backlog_seconds(self) -> float:
        """Audio received but not yet handed to the speech detector, in seconds."""
        return self._backlog_seconds

    @property
    def channels(self) -> int:
        return self.start.channels if self.start.channels_as_speakers else 1

    # -- fed by the server, on the event loop -------------------------------------------------

    def feed(self, payload: bytes, arrived: float | None = None) -> None:
        """One audio message; errors are reported through ``on_error``, never raised."""
        arrived = time.monotonic() if arrived is None else arrived
        try:
            chunk = decode_chunk(payload, self.start)
        except ProtocolError as exc:
            self.counters.rejected += 1
            self.on_error(exc)
            return
        if self._ended:
            self.counters.late += 1
            self.on_error(ProtocolError("late_chunk", f"audio chunk {chunk.seq} after the end"))
            return
        if chunk.seq < self._expected:
            self.counters.late += 1
            self.on_error(
                ProtocolError(
                    "late_chunk",
                    f"audio chunk {chunk.seq} arrived after chunk {self._expected - 1}: dropped",
                )
            )
            return
        if chunk.seq > self._expected:
            self.counters.missing += chunk.seq - self._expected
            self.on_error(
                ProtocolError(
                    "out_of_order",
                    f"audio chunks {self._expected}..{chunk.seq - 1} missing; going on from "
                    f"chunk {chunk.seq}",
                )
            )
        self._expected = chunk.seq + 1
        seconds = len(chunk.samples) / self.start.sample_rate
        arrived = self._timely(arrived, seconds)
        if self._backlog_seconds + seconds > self.max_backlog:
            self.counters.dropped += 1
            if str(self.counters.dropped).rstrip("0") == "1":  # first, then powers of ten
                self.on_error(
                    ProtocolError(
                        "audio_dropped",
                        f"the server is {self._backlog_seconds:.1f} s behind this session: "
                        f"audio dropped ({self.counters.dropped} chunks so far)",
                    )
                )
        else:
            self.counters.chunks += 1
            self._backlog.append((chunk, arrived))
            self._backlog_seconds += seconds
        self._check_complete()
        self._wake.set()

    def _timely(self, arrived: float, seconds: float) -> float:
        """When the chunk's audio was due, had the client kept real time since its first chunk
        (or when it arrived, if earlier): what the pipeline measures latency from, so that a
        server slow to read its messages counts that delay too. Updates :attr:`lag`."""
        if self._first_arrival is None:
            self._first_arrival = arrived
        due = self._first_arrival + self._sent_seconds
        self._sent_seconds += seconds
        self.lag = max(0.0, arrived - due)
        return min(arrived, due)

    def end(self, request: EndRequest) -> None:
        """The client's end message: finish once every chunk up to ``last_seq`` has come."""
        self.end_reason = request.reason
        self._last_seq = -1 if request.last_seq is None else request.last_seq
        self._check_complete()
        self._wake.set()

    def stop(self) -> None:
        super().stop()
        self._wake.set()

    def _check_complete(self) -> None:
        if self._last_seq is not None and self._expected > self._last_seq:
            self._ended = True

    # -- the pipeline side ---------------------------------------------------------------------

    async def run(self, ctx: SourceContext) -> None:
        seq = 0
        position = 0  # samples emitted per channel, at 16 kHz
        while True:
            while self._backlog:
                chunk, arrived = self._backlog.popleft()
                self._backlog_seconds -= len(chunk.samples) / self.start.sample_rate
                audio = self._resampler(chunk.samples)
                if not len(audio):
                    continue
                for channel in range(audio.shape[1]):
                    await ctx.audio.put(
                        AudioChunk(
                            session=ctx.session,
                            seq=seq,
                            monotonic=arrived,
                            samples=np.ascontiguousarray(audio[:, channel]),
                            start=position / SAMPLE_RATE,
                            channel=channel,
                        )
                    )
                    seq += 1
                position += len(audio)
                self.counters.seconds = position / SAMPLE_RATE
            if self._ended or self.stopping:
                return
            self._wake.clear()
            try:
                async with asyncio.timeout(self.idle_timeout):
                    await self._wake.wait()
            except TimeoutError:
                self.on_error(
                    ProtocolError("idle", f"no audio for {self.idle_timeout:g} s: session ended")
                )
                raise SourceError(f"no audio for {self.idle_timeout:g} s") from None


def _resampler(start: StartRequest) -> Callable[[np.ndarray], np.ndarray]:
    """(frames, channels) float32 at the client's rate -> (frames, out channels) at 16 kHz."""
    out_channels = start.channels if start.channels_as_speakers else 1
    stream = None
    if start.sample_rate != SAMPLE_RATE:
        import soxr

        stream = soxr.ResampleStream(start.sample_rate, SAMPLE_RATE, out_channels, dtype="float32")

    def convert(samples: np.ndarray) -> np.ndarray:
        if out_channels == 1 and samples.shape[1] > 1:
            samples = samples.mean(axis=1, keepdims=True)
        if stream is not None:
            resampled = stream.resample_chunk(samples)
            samples = resampled.reshape(-1, out_channels)
        return np.asarray(samples, dtype=np.float32)

    return convert
