"""A server session's pipeline: today's stages, with latency bounded before the shared Whisper.

One Whisper serves every session of a process, so a server that takes on more than it can
transcribe must drop work rather than fall further and further behind. :class:`ServePipeline`
gives the transcription stage a short queue that drops its oldest utterance when full
(``asr_queue``), and :class:`DeadlineTranscription` drops an utterance whose speech ended more
than ``max_delay`` seconds before Whisper could take it. Both are counted (``utterances`` in the
dropped counters, :attr:`DeadlineTranscription.expired`) and logged; a replay never drops.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from realtime.asr import Transcriber, TranscriptionStage
from realtime.channels import Channel, Policy
from realtime.inference import EmotionModel
from realtime.messages import Utterance, VideoFrame
from realtime.pipeline import Pipeline
from realtime.stage import Inbox, Stage

logger = logging.getLogger(__name__)


class DeadlineTranscription(TranscriptionStage):
    """Transcribes an utterance only while its result can still be timely."""

    def __init__(self, transcriber: Transcriber, executor: Executor, *, max_delay: float) -> None:
        super().__init__(transcriber, executor)
        self.max_delay = max_delay
        self.expired = 0

    async def process(self, item: object) -> None:
        if isinstance(item, Utterance):
            waited = time.monotonic() - item.speech_ended_at
            if waited > self.max_delay:
                self.expired += 1
                if str(self.expired).rstrip("0") == "1":  # first, then every power of ten
                    logger.warning(
                        "session %s: utterance %d waited %.1f s for Whisper: dropped (%d so far)",
                        item.session,
                        item.seq,
                        waited,
                        self.expired,
                    )
                return
        await super().process(item)


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

    def _stages(
        self,
        executor: ThreadPoolExecutor,
        transcriber: Transcriber,
        model: EmotionModel,
        video: Channel[VideoFrame] | None,
    ) -> list[Stage]:
        stages = super()._stages(executor, transcriber, model, video)
        replaced = self.transcription
        stage = DeadlineTranscription(transcriber, executor, max_delay=self.max_delay)
        stage.inbox_spec = Inbox(stage.inbox_spec.name, self.asr_queue, Policy.DROP_OLDEST)
        self.transcription = self.deadline = stage
        return [stage if s is replaced else s for s in stages]
