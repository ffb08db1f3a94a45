"""Echo on a call: the other party's speech, played by the speakers, heard again by the microphone.

During a live call (``emotrack live --remote-device ...``) channel 0 is the microphone ("you") and
channel 1 the remote side ("them", e.g. the monitor of the output device). Without headphones the
microphone also hears the remote speech, and the same words would come out twice, once as "you".

The remote channel is the reference. :class:`ReferenceTapStage` (before the VAD) keeps the last
seconds of it; :class:`EchoFilterStage` (after the VAD) compares every microphone utterance with
the reference over the same span: the spectral envelopes (log energies in 9 bands, 20 ms frames)
are correlated at every speaker-to-microphone delay up to ``max_delay``. An utterance that
matches (best correlation >= ``threshold``) is echo: it is dropped, logged and counted, and the
speech stays on the remote side. When both talk at once the microphone's envelope is mostly the
local voice and the utterance is kept. This is a detector, not a canceller: a kept utterance of
double talk still holds the echo under the local voice. Measured behaviour: docs/RESULTS.md.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from dataclasses import dataclass

import numpy as np

from realtime.messages import SAMPLE_RATE, AudioChunk, EndOfStream, Utterance
from realtime.stage import Inbox, Stage

logger = logging.getLogger(__name__)

FRAME = SAMPLE_RATE // 50  # 20 ms
FFT_SIZE = 512
BAND_EDGES_HZ = (100, 250, 450, 700, 1000, 1400, 2000, 2800, 4000, 6000)
DYNAMIC_RANGE_DB = 40.0
SILENT_DB = -55.0
SLACK = 0.15  # seconds of uncertainty in where an utterance's audio begins (VAD onset)


@dataclass(frozen=True)
class EchoOptions:
    threshold: float = 0.75  # envelope correlation at or above which an utterance is echo
    max_delay: float = 0.3  # longest speaker-to-microphone delay searched (seconds)
    # longest the reference capture may lag the microphone's beyond SLACK (seconds): sound
    # servers buffer a monitor source and a microphone differently
    max_lag: float = 0.5
    keep: float = 30.0  # seconds of reference audio kept


def _band_bins() -> list[tuple[int, int]]:
    freqs = np.fft.rfftfreq(FFT_SIZE, 1.0 / SAMPLE_RATE)
    return [
        (int(np.searchsorted(freqs, lo)), int(np.searchsorted(freqs, hi)))
        for lo, hi in itertools.pairwise(BAND_EDGES_HZ)
    ]


BANDS = _band_bins()
HANN = np.hanning(FRAME).astype(np.float32)


def envelope(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per 20 ms frame: log band energies (frames x bands) and the level in dBFS."""
    count = len(audio) // FRAME
    frames = audio[: count * FRAME].reshape(count, FRAME).astype(np.float32)
    power = np.abs(np.fft.rfft(frames * HANN, FFT_SIZE, axis=1)) ** 2
    bands = np.stack([power[:, lo:hi].sum(axis=1) for lo, hi in BANDS], axis=1)
    level = 10.0 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    logs = np.log10(bands + 1e-12)
    # The loudest DYNAMIC_RANGE only: both sides' silences (noise floor, digital zero) look alike.
    floor = float(logs.max()) - DYNAMIC_RANGE_DB / 10.0 if len(logs) else 0.0
    return np.maximum(logs, floor), level


def _centred(x: np.ndarray) -> tuple[np.ndarray, float]:
    x = x - x.mean()
    return x, float(np.linalg.norm(x))


def echo_match(mic: np.ndarray, reference: np.ndarray) -> float:
    """Best correlation between the microphone's envelope and the reference's at any offset
    within ``reference`` (longer than ``mic`` by the delays searched); 0.0 when the reference is
    silent there."""
    mic_bands, _ = envelope(mic)
    ref_bands, ref_level = envelope(reference)
    frames = len(mic_bands)
    if frames < 2 or len(ref_bands) < frames or float(ref_level.max()) < SILENT_DB:
        return 0.0
    m, m_norm = _centred(mic_bands)
    if m_norm == 0.0:
        return 0.0
    best = 0.0
    for offset in range(len(ref_bands) - frames + 1):
        r, r_norm = _centred(ref_bands[offset : offset + frames])
        if r_norm > 0.0:
            best = max(best, float((m * r).sum()) / (m_norm * r_norm))
    return best


class ReferenceAudio:
    """The last ``keep`` seconds of the reference channel, on the stream clock."""

    def __init__(self, keep: float) -> None:
        self._keep = int(keep * SAMPLE_RATE)
        self._chunks: deque[tuple[int, np.ndarray]] = deque()  # (first stream sample, samples)
        self._held = 0

    def add(self, chunk: AudioChunk) -> None:
        self._chunks.append((round(chunk.start * SAMPLE_RATE), chunk.samples))
        self._held += len(chunk.samples)
        while self._held - len(self._chunks[0][1]) >= self._keep:
            self._held -= len(self._chunks.popleft()[1])

    def span(self, start: float, end: float) -> np.ndarray:
        """Samples from ``start`` to ``end`` seconds (silence where none were kept)."""
        lo, hi = round(start * SAMPLE_RATE), round(end * SAMPLE_RATE)
        out = np.zeros(max(0, hi - lo), dtype=np.float32)
        for at, samples in self._chunks:
            a, b = max(lo, at), min(hi, at + len(samples))
            if b > a:
                out[a - lo : b - lo] = samples[a - at : b - at]
        return out


class ReferenceTapStage(Stage):
    """Before the VAD: keeps the reference channel's audio for :class:`EchoFilterStage`."""

    inbox_spec = Inbox("echo-tap", 64)

    def __init__(self, reference: ReferenceAudio, channel: int = 1) -> None:
        super().__init__()
        self.reference = reference
        self.channel = channel

    async def process(self, item: object) -> None:
        if isinstance(item, AudioChunk) and item.channel == self.channel:
            self.reference.add(item)
        await self.push(item)


class EchoFilterStage(Stage):
    """After the VAD: drops microphone utterances (``channel``) that are the reference's echo."""

    inbox_spec = Inbox("echo", 16)

    def __init__(
        self,
        reference: ReferenceAudio,
        pre_roll: float,
        channel: int = 0,
        options: EchoOptions | None = None,
    ) -> None:
        super().__init__()
        self.reference = reference
        self.pre_roll = pre_roll  # the VAD's: an utterance's audio begins this much before start
        self.channel = channel
        self.options = options or EchoOptions()
        self.dropped = 0
        self.dropped_seconds = 0.0

    async def process(self, item: object) -> None:
        if isinstance(item, Utterance) and item.channel == self.channel:
            length = len(item.audio) / SAMPLE_RATE
            begins = max(0.0, item.start - self.pre_roll)
            before = SLACK + self.options.max_delay
            after = SLACK + self.options.max_lag
            reference = self.reference.span(begins - before, begins + length + after)
            match = echo_match(item.audio, reference)
            if match >= self.options.threshold:
                self.dropped += 1
                self.dropped_seconds += length
                logger.info(
                    "echo: utterance at %.1f s (%.1f s) matches the remote side (%.2f); dropped",
                    item.start,
                    length,
                    match,
                )
                return
            logger.debug("echo: utterance at %.1f s kept (match %.2f)", item.start, match)
        await self.push(item)

    async def finish(self, end: EndOfStream) -> None:
        if self.dropped:
            logger.info(
                "echo: %d microphone utterance(s), %.1f s, dropped as echo of the remote side",
                self.dropped,
                self.dropped_seconds,
            )
