"""The models of a server process: ONE Whisper and ONE UniMSE, shared by every session.

:class:`SharedTranscriber` serialises transcription (one utterance at a time on the process's
Whisper, whichever session it comes from); :class:`SharedEmotionModel` hands classification to the
process's :class:`~realtime.serve.batcher.CrossSessionBatcher`. Both are drop-in replacements for
the models a :class:`~realtime.pipeline.Pipeline` is given, so every session runs today's stages.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from realtime.asr import Transcriber, TranscriptionResult
from realtime.config import Config
from realtime.inference import EmotionModel, load_model
from realtime.messages import PendingUtterance
from realtime.serve.batcher import CrossSessionBatcher
from unimse.prediction import Prediction

logger = logging.getLogger(__name__)


class TooLate(RuntimeError):
    """The model became free for a call only after the call's deadline."""


class SharedTranscriber(Transcriber):
    """A loaded :class:`Transcriber` that transcribes for one session at a time."""

    def __init__(self, loaded: Transcriber) -> None:
        super().__init__(loaded.model, loaded.options, loaded.path, loaded.device)
        self.loaded = loaded
        self._lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._waiting: dict[int, float] = {}  # calls waiting for the model: since when
        self._tickets = itertools.count()
        self.busy_seconds = 0.0
        self.last_wait = 0.0  # seconds the latest call waited for the model (other sessions')

    def waiting_for(self) -> float:
        """How long the longest-waiting call has waited for the model so far (0: none waits)."""
        with self._queue_lock:
            oldest = min(self._waiting.values(), default=None)
        return 0.0 if oldest is None else time.perf_counter() - oldest

    def transcribe(self, audio: np.ndarray, deadline: float | None = None) -> TranscriptionResult:
        """Transcribe once the model is free; :class:`TooLate` instead if it became free only
        after ``deadline`` (``time.monotonic()`` seconds)."""
        asked = time.perf_counter()
        ticket = next(self._tickets)
        with self._queue_lock:
            self._waiting[ticket] = asked
        with self._lock:
            started = time.perf_counter()
            with self._queue_lock:
                del self._waiting[ticket]
            self.last_wait = started - asked
            if deadline is not None and time.monotonic() > deadline:
                raise TooLate(f"Whisper was free only {self.last_wait:.1f} s later")
            try:
                return self.loaded.transcribe(audio)
            finally:
                self.busy_seconds += time.perf_counter() - started


class SharedEmotionModel(EmotionModel):
    """The process's emotion model as each session's pipeline sees it: classify goes through the
    cross-session batcher (the one thread that runs the model)."""

    def __init__(self, loaded: EmotionModel, batcher: CrossSessionBatcher) -> None:
        super().__init__(loaded.predictor, loaded.acoustic, loaded.visual, loaded.encoder_model)
        self.batcher = batcher

    def classify(self, batch: Sequence[PendingUtterance]) -> list[Prediction]:
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


def load_shared_models(config: Config, *, batching: bool, max_batch: int) -> SharedModels:
    """Load Whisper and UniMSE in parallel (blocking: call it off the event loop)."""
    started = time.perf_counter()
    with ThreadPoolExecutor(2, thread_name_prefix="emotrack-load") as executor:
        asr = executor.submit(Transcriber.load, config.asr)
        emotion = executor.submit(load_model, config.inference)
        transcriber, model = asr.result(), emotion.result()
    logger.info("models loaded in %.1f s", time.perf_counter() - started)
    batcher = CrossSessionBatcher(model, max_batch=max_batch, enabled=batching)
    return SharedModels(SharedTranscriber(transcriber), SharedEmotionModel(model, batcher))
