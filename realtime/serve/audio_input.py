"""What ``emotrack stream`` sends: a file's audio as 16-bit PCM, or the microphone's."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np

from realtime.messages import SAMPLE_RATE
from realtime.sources.base import SourceError
from realtime.sources.files import read_whole_audio

logger = logging.getLogger(__name__)

#: Rates the protocol takes as they are (stream_start.v1.json); others are resampled to 16 kHz.
PROTOCOL_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)


def read_pcm(path: str | Path) -> tuple[np.ndarray, int]:
    """The file's audio as (frames, channels) int16 and its rate (blocking). More than two
    channels are mixed to mono; a rate the protocol does not take is resampled to 16 kHz."""
    audio, rate = read_whole_audio(path)
    if not len(audio):
        raise SourceError(f"{path} holds no audio")
    if audio.shape[1] > 2:
        audio = audio.mean(axis=1, keepdims=True)
    if rate not in PROTOCOL_RATES:
        import soxr

        audio = soxr.resample(audio, rate, SAMPLE_RATE).reshape(-1, audio.shape[1])
        rate = SAMPLE_RATE
    pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)
    return pcm, int(rate)


async def microphone_chunks(
    *, device: str | None, chunk_ms: int, duration: float | None
) -> AsyncIterator[np.ndarray]:
    """Mono 16 kHz int16 chunks from an input device as they are captured, for ``duration``
    seconds or until cancelled. A chunk the consumer had no room for is dropped and logged."""
    import sounddevice

    loop = asyncio.get_running_loop()
    frames = SAMPLE_RATE * chunk_ms // 1000
    blocks: asyncio.Queue[np.ndarray] = asyncio.Queue(maxsize=256)

    def put(block: np.ndarray) -> None:
        if blocks.full():
            logger.warning("the microphone's audio could not be sent fast enough: chunk dropped")
            return
        blocks.put_nowait(block)

    def captured(indata: np.ndarray, _frames: int, _time: object, status: object) -> None:
        if status:
            logger.warning("microphone: %s", status)
        loop.call_soon_threadsafe(put, indata.copy())

    selected: int | str | None = int(device) if device and device.isdigit() else device
    try:
        stream = sounddevice.InputStream(
            samplerate=SAMPLE_RATE,
            channels=1,
            dtype="int16",
            blocksize=frames,
            device=selected,
            callback=captured,
        )
    except (sounddevice.PortAudioError, ValueError) as exc:
        raise SourceError(f"cannot open the microphone: {exc}") from None
    total = None if duration is None else round(duration * 1000 / chunk_ms)
    with stream:
        sent = 0
        while total is None or sent < total:
            yield await blocks.get()
            sent += 1
