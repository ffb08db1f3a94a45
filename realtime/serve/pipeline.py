"""A server session's pipeline: today's stages, with latency bounded before the shared Whisper.

One Whisper serves every session of a process, so a server that takes on more than it can
transcribe must drop work rather than fall further and further behind. :class:`ServePipeline`
gives the transcription stage a short queue that drops its oldest utterance when full
(``asr_queue``), and :class:`DeadlineTranscription` drops an utterance whose speech ended more
than ``max_delay`` seconds before the shared Whisper was free for it. Both are counted
(``utterances`` in the dropped counters, :attr:`DeadlineTranscription.expired`) and logged.
"""

from __future__ import annotations

import logging
import math
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import numpy as np

from realtime.asr import Transcriber, TranscriptionResult, TranscriptionStage
from realtime.channels import Policy
from realtime.messages import Utterance
from realtime.pipeline import Pipeline
from realtime.serve.models import SharedTranscriber, TooLate
from realtime.stage import Inbox

logger = logging.getLogger(__name__)


class _Deadlined(Transcriber):
    """The shared Whisper as one session's transcription stage calls it: with the deadline of
    the utterance at hand."""

    def __init__(self, shared: SharedTranscriber) -> None:
        super().__init__(shared.model, shared.options, shared.path, shared.device)
        self.shared = shared
        self.deadline = math.inf

    def transcribe(self, audio: np.ndarray) -> TranscriptionResult:
        return self.shared.transcribe(audio, deadline=self.deadline)


class DeadlineTranscription(TranscriptionStage):
    """Transcribes an utterance only while its result can still be timely: not when its speech
    ended more than ``max_delay`` seconds ago, when it reaches the stage or when the shared
    Whisper becomes free for it."""

    def __init__(self, transcriber: Transcriber, executor: Executor, *, max_delay: float) -> None:
        shared = (
            transcriber
            if isinstance(transcriber, SharedTranscriber)
            else SharedTranscriber(transcriber)
        )
        self.timed = _Deadlined(shared)
        super().__init__(self.timed, executor)
        self.max_delay = max_delay
        self.expired = 0

    async def process(self, item: object) -> None:
        if not isinstance(item, Utterance):
            await super().process(item)
            return
        self.timed.deadline = item.speech_ended_at + self.max_delay
        if time.monotonic() > self.timed.deadline:
            self._expire(item)
            return
        try:
            await super().process(item)
        except TooLate:
            self._expire(item)

    def _expire(self, item: Utterance) -> None:
        self.expired += 1
        if str(self.expired).rstrip("0") == "1":  # first, then every power of ten
            logger.warning(
                "session %s: utterance %d waited %.1f s for Whisper: dropped (%d so far)",
                item.session,
                item.seq,
                time.monotonic() - item.speech_ended_at,
                self.expired,
            )


class ServePipeline(Pipeline):
    """:class:`~realtime.pipeline.Pipeline` with the bounded transcription of a server session."""

    def __init__(self, *args: Any, asr_queue: int, max_delay: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asr_queue = asr_queue
        self.max_delay = max_delay
        self.deadline: DeadlineTranscription | None = None

    @property
    def expired(self) -> int:
        return 0 if self.deadline is None else self.deadline.expired

    def _transcription_stage(
        self, transcriber: Transcriber, executor: ThreadPoolExecutor
    ) -> TranscriptionStage:
        stage = DeadlineTranscription(transcriber, executor, max_delay=self.max_delay)
        stage.inbox_spec = Inbox(stage.inbox_spec.name, self.asr_queue, Policy.DROP_OLDEST)
        self.deadline = stage
        return stage
