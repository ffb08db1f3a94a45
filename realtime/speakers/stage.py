"""Pipeline stage: who is speaking. Each closed utterance gets a speaker from its voice.

:class:`SpeakerStage` goes right after the VAD (``SegmentationStage``): for every
:class:`~realtime.messages.Utterance` it computes the voice print on the pipeline's executor (never
on the event loop), assigns it (:class:`~realtime.speakers.assign.OnlineSpeakerAssigner`, fast,
on the loop) and passes the utterance on with its ``speaker`` set. Other messages pass unchanged,
in order.

Revisions of earlier utterances (re-clustering found a better grouping) are never silent: each is
a :class:`SpeakerRevision` message pushed right after the utterance whose arrival caused it (later
stages pass unknown messages on) and kept in :attr:`SpeakerStage.revisions`.

Channels: with ``channels_as_speakers`` each channel already is a speaker (the VAD names it);
utterances then pass unchanged unless ``within_channels`` asks for diarisation inside each
channel (a conference room on one side of a call): one assigner per channel, its speakers named
after the channel's speaker (``"remote 1"``, ``"remote 2"``, ...). Otherwise (mono, or channels
mixed) one assigner names the speakers ``options.names`` in order of first appearance, then
``"{prefix} N"``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, replace

import numpy as np

from realtime.messages import Message, Utterance
from realtime.speakers.assign import OnlineSpeakerAssigner, SpeakerOptions, VoicePrint
from realtime.speakers.embedding import SpeakerEmbedder
from realtime.stage import Inbox, Stage

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpeakerRevision(Message):
    """Utterance ``utterance_seq`` (an :class:`Utterance` ``seq``) is now spoken by ``new``, no
    longer by ``old``. ``seq`` numbers the revisions of the session."""

    utterance_seq: int
    old: str
    new: str
    channel: int = 0


class SpeakerStage(Stage):
    """Pipeline stage: utterances -> utterances with their speaker, plus :class:`SpeakerRevision`.

    ``embedder`` is blocking (``load``/``embed``) and runs on ``executor``; load it there before
    the stream starts, or the first utterance waits for it. ``enrolled``: name -> voice print of a
    known speaker (see :func:`realtime.speakers.enrol.voice_prints`), given to every assigner.
    """

    inbox_spec = Inbox("speakers", 32)

    def __init__(
        self,
        embedder: SpeakerEmbedder,
        executor: Executor | None,
        options: SpeakerOptions | None = None,
        *,
        enrolled: Mapping[str, np.ndarray] | None = None,
        channels_as_speakers: bool = False,
        within_channels: bool = False,
    ) -> None:
        super().__init__()
        self.embedder = embedder
        self.executor = executor
        self.options = options or SpeakerOptions()
        self.enrolled = dict(enrolled or {})
        self.channels_as_speakers = channels_as_speakers
        self.within_channels = within_channels
        self.assigners: dict[int, OnlineSpeakerAssigner] = {}
        self.revisions: list[SpeakerRevision] = []
        self.embedded = 0
        self.embed_seconds = 0.0  # total time spent computing voice prints
        self._seq = itertools.count()

    @property
    def active(self) -> bool:
        """Whether utterances get speakers from their voice (else they pass unchanged)."""
        return not self.channels_as_speakers or self.within_channels

    def _assigner(self, utterance: Utterance) -> OnlineSpeakerAssigner:
        key = utterance.channel if self.channels_as_speakers else 0
        if key not in self.assigners:
            options = self.options
            if self.channels_as_speakers:  # speakers of a channel are named after it
                options = dataclasses.replace(options, names=(), prefix=utterance.speaker)
            assigner = OnlineSpeakerAssigner(options)
            for name, voice in self.enrolled.items():
                assigner.enroll(name, voice)
            self.assigners[key] = assigner
        return self.assigners[key]

    def _embed(self, audio: np.ndarray) -> tuple[np.ndarray, float]:
        started = time.perf_counter()
        vector = self.embedder.embed(audio)
        return vector, time.perf_counter() - started

    async def process(self, item: object) -> None:
        if not isinstance(item, Utterance) or not self.active or len(item.audio) == 0:
            await self.push(item)
            return
        loop = asyncio.get_running_loop()
        vector, seconds = await loop.run_in_executor(self.executor, self._embed, item.audio)
        self.embedded += 1
        self.embed_seconds += seconds
        assignment = self._assigner(item).assign(
            VoicePrint(item.seq, vector, duration=max(0.0, item.end - item.start))
        )
        logger.debug(
            "utterance %d: %s (cosine %.2f%s), voice print in %.0f ms",
            item.seq,
            assignment.speaker,
            assignment.similarity,
            ", new speaker" if assignment.new_speaker else "",
            seconds * 1000,
        )
        await self.push(replace(item, speaker=assignment.speaker))
        for revision in assignment.revisions:
            message = SpeakerRevision(
                session=item.session,
                seq=next(self._seq),
                monotonic=time.monotonic(),
                utterance_seq=revision.utterance_id,
                old=revision.old,
                new=revision.new,
                channel=item.channel,
            )
            logger.debug(
                "utterance %d revised: %s -> %s", message.utterance_seq, message.old, message.new
            )
            self.revisions.append(message)
            await self.push(message)
