"""The models of a server process: ONE Whisper and ONE UniMSE, shared by every session.

Each model has one owner thread (:class:`~realtime.serve.batcher.ModelOwner`) that batches the
work of all sessions: :class:`SharedTranscriber` transcribes the utterances waiting from every
session with one encoder pass and one decoding (:meth:`~realtime.asr.Transcriber.transcribe_batch`,
each transcript as alone), :class:`SharedEmotionModel` hands classification to the process's
:class:`~realtime.serve.batcher.CrossSessionBatcher`. Both are drop-in replacements for the
models a :class:`~realtime.pipeline.Pipeline` is given, so every session runs today's stages.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields

import numpy as np

from realtime.asr import Transcriber, TranscriptionResult
from realtime.config import Config, ConfigError
from realtime.inference import EmotionModel, InterimInput, load_model
from realtime.messages import PendingUtterance
from realtime.serve.batcher import BatchStats, CrossSessionBatcher, ModelOwner, TooLate
from unimse.prediction import Prediction

__all__ = ["AsrBatching", "SharedEmotionModel", "SharedModels", "SharedTranscriber", "TooLate"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AsrBatching:
    """How the process's Whisper owner batches the utterances of its sessions."""

    enabled: bool = True
    max_batch: int = 4  # utterances per encoder pass and decoding (4: best measured on CPU)
    max_wait: float = 0.02  # seconds the first utterance may wait for others to join it

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ConfigError("--asr-batch must be at least 1")
        if not 0 <= self.max_wait <= 1:
            raise ConfigError("--asr-batch-wait must be in 0..1 seconds")


@dataclass(frozen=True)
class _Encoding:
    """An interim result's encoder pass (and, with ``words``, its greedy words)."""

    audio: np.ndarray
    words: bool


_Job = np.ndarray | _Encoding  # for the Whisper owner: an utterance to transcribe, or an encoding
_Done = TranscriptionResult | np.ndarray | tuple[np.ndarray, str | None] | None


class SharedTranscriber(Transcriber):
    """A loaded :class:`Transcriber` whose owner thread transcribes for every session, the
    utterances waiting at once in one batch; interim results' encoder passes run on the same
    thread (one user of the model, its busy time counted)."""

    def __init__(self, loaded: Transcriber, batching: AsrBatching | None = None) -> None:
        super().__init__(
            loaded.model, loaded.options, loaded.path, loaded.device, layers=loaded.layers
        )
        self.loaded = loaded
        self.batching = batching or AsrBatching()
        self.owner: ModelOwner[_Job, _Done] = ModelOwner(
            self._run,
            name="whisper-owner",
            max_batch=self.batching.max_batch,
            enabled=self.batching.enabled,
            max_wait=self.batching.max_wait,
        )

    @property
    def stats(self) -> BatchStats:
        return self.owner.stats

    @property
    def busy_seconds(self) -> float:
        return self.owner.stats.busy_seconds

    def waiting_for(self) -> float:
        """How long the longest-waiting utterance has waited for the model so far (0: none)."""
        return self.owner.waiting_for()

    def _run(self, jobs: list[_Job]) -> list[_Done]:
        """On the owner thread: the utterances transcribed as one batch, the encodings each."""
        audios = [job for job in jobs if isinstance(job, np.ndarray)]
        transcripts = iter(self.loaded.transcribe_batch(audios) if audios else [])
        return [
            next(transcripts) if isinstance(job, np.ndarray) else self._encode(job) for job in jobs
        ]

    def _encode(self, job: _Encoding) -> _Done:
        loaded = self.loaded
        return loaded.encode_with_words(job.audio) if job.words else loaded.encode(job.audio)

    def transcribe(self, audio: np.ndarray, deadline: float | None = None) -> TranscriptionResult:
        """Transcribe once the owner takes the utterance; :class:`TooLate` instead if it took it
        only after ``deadline`` (``time.monotonic()`` seconds)."""
        return self.transcribe_batch([audio], deadline)[0]

    def transcribe_batch(
        self, audios: Sequence[np.ndarray], deadline: float | None = None
    ) -> list[TranscriptionResult]:
        done = self.owner.submit(audios, deadline)
        return [result for result in done if isinstance(result, TranscriptionResult)]

    def encode(self, audio: np.ndarray) -> np.ndarray | None:
        done = self.owner.submit([_Encoding(audio, words=False)])[0]
        return done if isinstance(done, np.ndarray) else None

    def encode_with_words(self, audio: np.ndarray) -> tuple[np.ndarray, str | None] | None:
        done = self.owner.submit([_Encoding(audio, words=True)])[0]
        return done if isinstance(done, tuple) else None

    def close(self) -> None:
        self.owner.close()


class SharedEmotionModel(EmotionModel):
    """The process's emotion model as each session's pipeline sees it: classify goes through the
    cross-session batcher (the one thread that runs the model)."""

    def __init__(self, loaded: EmotionModel, batcher: CrossSessionBatcher) -> None:
        # Every field of the loaded model (speaker baselines are keyed by session and speaker:
        # one per process is enough).
        super().__init__(**{f.name: getattr(loaded, f.name) for f in fields(loaded) if f.init})
        self.batcher = batcher

    def classify(self, batch: Sequence[PendingUtterance | InterimInput]) -> list[Prediction]:
        return self.batcher.classify(batch)


@dataclass
class SharedModels:
    transcriber: SharedTranscriber
    model: SharedEmotionModel

    @property
    def batcher(self) -> CrossSessionBatcher:
        return self.model.batcher

    def close(self) -> None:
        self.batcher.close()
        self.transcriber.close()


def load_shared_models(
    config: Config, *, batching: bool, max_batch: int, asr_batching: AsrBatching | None = None
) -> SharedModels:
    """Load Whisper and UniMSE in parallel (blocking: call it off the event loop)."""
    started = time.perf_counter()
    with ThreadPoolExecutor(2, thread_name_prefix="emotrack-load") as executor:
        asr = executor.submit(Transcriber.load, config.asr)
        emotion = executor.submit(load_model, config.inference)
        transcriber, model = asr.result(), emotion.result()
    model.share_encoder(transcriber)
    logger.info("models loaded in %.1f s", time.perf_counter() - started)
    batcher = CrossSessionBatcher(model, max_batch=max_batch, enabled=batching)
    return SharedModels(
        SharedTranscriber(transcriber, asr_batching), SharedEmotionModel(model, batcher)
    )
