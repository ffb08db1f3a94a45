"""Interim results while someone speaks (``--partial``): the emotion of the audio heard so far.

:class:`PartialStage` sits right after the VAD, which (with ``partial.enabled``) hands it an
:class:`~realtime.messages.OpenSpeech` every ``partial.interval`` seconds of an utterance still
being spoken. For each one, off the event loop: the ASR's Whisper encoder over the audio so far,
then the emotion model on those states. With ``partial.text`` (``--partial-text``) the same
encoder pass is also decoded, greedily, into the words so far
(:meth:`~realtime.asr.Transcriber.encode_with_words`): the interim result carries them and the
emotion model reads them with the audio (the utterance alone, no dialogue context); a decoding
Whisper doubts keeps the utterance's previous words. Without it, no decoding and no words. The
:class:`~realtime.messages.PartialResult`
(not final) goes straight to the delivery stage (the sinks' queues), not down the chain, where it
would wait behind the transcription and the inference inbox of earlier utterances; the final
result of the utterance follows as before.

It never holds the finals back: at most one interim computation per channel is in flight (an
``OpenSpeech`` arriving meanwhile is skipped and counted), the stage passes every other message on
at once, and an interim result whose utterance has closed while it was computed is dropped, so a
sink never sees an interim result after the final one. The speaker: the VAD's (the channel's), or
with diarisation the nearest known voice to the utterance so far (one voice print per utterance,
at its first interim result).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING

from realtime.asr import Transcriber
from realtime.inference import EmotionModel, InterimInput
from realtime.messages import EndOfStream, OpenSpeech, PartialResult, Utterance
from realtime.stage import Inbox, Stage
from unimse.prediction import Prediction
from unimse.speakers import ModelSpeakerNames

if TYPE_CHECKING:
    from realtime.speakers.stage import SpeakerStage

logger = logging.getLogger(__name__)


class PartialStage(Stage):
    """Pipeline stage: ``OpenSpeech`` -> ``PartialResult`` (in the background, to ``deliver``);
    the rest passes."""

    inbox_spec = Inbox("partials", 64)

    def __init__(
        self,
        transcriber: Transcriber,
        model: EmotionModel,
        executor: Executor | None,
        *,
        speakers: SpeakerStage | None = None,
        names: ModelSpeakerNames | None = None,
        deliver: Callable[[PartialResult], Awaitable[None]] | None = None,
        text: bool = False,
    ) -> None:
        super().__init__()
        self.names = names if names is not None else ModelSpeakerNames()  # the model's speakers
        self.deliver = deliver  # to the sinks at once (the pipeline's delivery); None: push on
        self.text = text  # also the words so far (partial.text)
        self.transcriber = transcriber
        self.model = model
        self.executor = executor
        self.speakers = speakers
        self.results = 0  # interim results pushed
        self.skipped = 0  # OpenSpeech skipped: the channel's previous one was still computing
        self.stale = 0  # computed after their utterance had closed: dropped
        self._busy: dict[int, asyncio.Task[None]] = {}
        self._open: dict[int, float] = {}  # channel -> start of the utterance being spoken
        self._speaker: dict[tuple[int, float], str] = {}  # (channel, start) -> its speaker
        self._words: dict[tuple[int, float], str] = {}  # (channel, start) -> its words so far
        self._seq = 0

    async def process(self, item: object) -> None:
        if isinstance(item, Utterance):  # closed: its interim results are over
            self._open.pop(item.channel, None)
            self._speaker = {k: v for k, v in self._speaker.items() if k[0] != item.channel}
            self._words = {k: v for k, v in self._words.items() if k[0] != item.channel}
        if not isinstance(item, OpenSpeech):
            await self.push(item)
            return
        self._open[item.channel] = item.start
        running = self._busy.get(item.channel)
        if running is not None and not running.done():
            self.skipped += 1
            return
        task = asyncio.create_task(self._interim(item), name=f"partial:{item.channel}")
        self._busy[item.channel] = task

    async def _interim(self, item: OpenSpeech) -> None:
        loop = asyncio.get_running_loop()
        speaker = await self._speaker_of(item)
        key = (item.channel, item.start)
        prediction, words = await loop.run_in_executor(
            self.executor, self._classify, item, self.names(speaker), self._words.get(key, "")
        )
        if self._open.get(item.channel) != item.start:
            self.stale += 1
            return
        if words:
            self._words[key] = words
        now = time.monotonic()
        result = PartialResult(
            session=item.session,
            seq=self._seq,
            monotonic=now,
            speaker=speaker,
            channel=item.channel,
            start=item.start,
            end=item.end,
            prediction=prediction,
            model_version=self.model.predictor.model_version,
            latency=max(0.0, now - item.monotonic),
            text=words,
        )
        self._seq += 1
        self.results += 1
        await (self.push(result) if self.deliver is None else self.deliver(result))

    async def _speaker_of(self, item: OpenSpeech) -> str:
        if self.speakers is None or not self.speakers.active:
            return item.speaker
        key = (item.channel, item.start)
        if key not in self._speaker:
            loop = asyncio.get_running_loop()
            vector = await loop.run_in_executor(
                self.executor, self.speakers.embedder.embed, item.audio
            )
            self._speaker[key] = self.speakers.nearest(item.channel, item.speaker, vector)
        return self._speaker[key]

    def _classify(self, item: OpenSpeech, speaker: str, before: str) -> tuple[Prediction, str]:
        """Acoustic input of the audio so far (the ASR's encoder states when the checkpoint reads
        them, else its own extractor) and, with ``text``, the words so far from the same encoder
        pass (``before``, the previous ones, where Whisper doubts them); then the emotion model,
        the words under ``speaker``, the name the model reads (blocking)."""
        model, states, words = self.model, None, ""
        shared = model.encoder_model == self.transcriber.states_key
        if self.text:
            encoded = self.transcriber.encode_with_words(item.audio)
            heard_states, heard = encoded if encoded is not None else (None, None)
            states = heard_states if shared else None
            words = heard if heard is not None else before
        elif model.acoustic is not None and shared:
            states = self.transcriber.encode(item.audio)
        interim = InterimInput(
            item.session,
            item.speaker,
            item.audio,
            states,
            text=words,
            speaker=speaker if words else "",
            language=self.transcriber.language or "",
        )
        return model.classify([interim])[0], words

    async def finish(self, end: EndOfStream) -> None:
        """Interim results still computing are waited for (they are dropped if stale)."""
        running = [task for task in self._busy.values() if not task.done()]
        if running:
            await asyncio.gather(*running)
