"""Pipeline stage: who is speaking. Each closed utterance gets a speaker from its voice.

:class:`SpeakerStage` goes right after the VAD (``SegmentationStage``): for every
:class:`~realtime.messages.Utterance` it computes the voice print on the pipeline's executor (never
on the event loop), assigns it (:class:`~realtime.speakers.assign.OnlineSpeakerAssigner`, fast,
on the loop) and passes the utterance on with its ``speaker`` set. Other messages pass unchanged,
in order.

The voice print takes about 0.1 s of CPU per utterance (CAM++, one thread). In series before the
transcription that time adds to every result's latency; :meth:`SpeakerStage.labeller` avoids it:
the stage then only starts the voice print and passes the utterance on at once, and the returned
:class:`SpeakerLabelStage`, placed after ``TranscriptionStage``, waits for the print (computed
while Whisper transcribes), assigns, and sets the speaker on ``Transcript.utterance``.

Revisions of earlier utterances (re-clustering found a better grouping) are never silent: each is
a :class:`SpeakerRevision` message pushed right after the utterance whose arrival caused it (later
stages pass unknown messages on) and kept in :attr:`SpeakerStage.revisions`.

Channels: with ``channels_as_speakers`` each channel already is a speaker (the VAD names it);
utterances then pass unchanged unless ``within_channels`` asks for diarisation inside each
channel (a conference room on one side of a call): one assigner per channel, its speakers named
after the channel's speaker (``"them 1"``, ``"them 2"``, ...). Otherwise (mono, or channels
mixed) one assigner names the speakers ``options.names`` in order of first appearance, then
``"{prefix} N"``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections.abc import Awaitable, Mapping
from concurrent.futures import Executor
from dataclasses import replace

import numpy as np

from realtime.messages import EndOfStream, SpeakerRevision, Transcript, Utterance
from realtime.speakers.assign import OnlineSpeakerAssigner, SpeakerOptions, VoicePrint
from realtime.speakers.embedding import SpeakerEmbedder
from realtime.stage import Inbox, Stage

logger = logging.getLogger(__name__)

__all__ = ["SpeakerLabelStage", "SpeakerRevision", "SpeakerStage"]


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
        self._labeller: SpeakerLabelStage | None = None
        # Utterance seq -> its voice print being computed (deferred labelling only).
        self.pending: dict[int, Awaitable[tuple[np.ndarray, float]]] = {}

    @property
    def active(self) -> bool:
        """Whether utterances get speakers from their voice (else they pass unchanged)."""
        return not self.channels_as_speakers or self.within_channels

    def labeller(self) -> SpeakerLabelStage:
        """Defer the labelling: this stage then only starts each voice print; the returned stage,
        placed after the transcription, assigns and labels (see the module docstring)."""
        if self._labeller is None:
            self._labeller = SpeakerLabelStage(self)
        return self._labeller

    def _assigner(self, channel: int, speaker: str) -> OnlineSpeakerAssigner:
        """The assigner of ``channel`` (of all audio unless channels are speakers); ``speaker``
        is the channel's own name, the prefix of its speakers."""
        key = channel if self.channels_as_speakers else 0
        if key not in self.assigners:
            options = self.options
            if self.channels_as_speakers:  # speakers of a channel are named after it
                options = dataclasses.replace(options, names=(), prefix=speaker)
            assigner = OnlineSpeakerAssigner(options)
            for name, voice in self.enrolled.items():
                assigner.enroll(name, voice)
            self.assigners[key] = assigner
        return self.assigners[key]

    def _embed(self, audio: np.ndarray) -> tuple[np.ndarray, float]:
        started = time.perf_counter()
        vector = self.embedder.embed(audio)
        return vector, time.perf_counter() - started

    def label(
        self, utterance: Utterance, vector: np.ndarray, seconds: float
    ) -> tuple[Utterance, list[SpeakerRevision]]:
        """Assign ``utterance`` by its voice print: the labelled utterance and the revisions."""
        self.embedded += 1
        self.embed_seconds += seconds
        duration = max(0.0, utterance.end - utterance.start)
        assigner = self._assigner(utterance.channel, utterance.speaker)
        assignment = assigner.assign(VoicePrint(utterance.seq, vector, duration))
        logger.debug(
            "utterance %d: %s (cosine %.2f%s), voice print in %.0f ms",
            utterance.seq,
            assignment.speaker,
            assignment.similarity,
            ", new speaker" if assignment.new_speaker else "",
            seconds * 1000,
        )
        revisions = []
        for revision in assignment.revisions:
            message = SpeakerRevision(
                session=utterance.session,
                seq=next(self._seq),
                monotonic=time.monotonic(),
                utterance_seq=revision.utterance_id,
                old=revision.old,
                new=revision.new,
                channel=utterance.channel,
            )
            logger.debug(
                "utterance %d: %s -> %s", revision.utterance_id, revision.old, revision.new
            )
            revisions.append(message)
        self.revisions += revisions
        return replace(utterance, speaker=assignment.speaker), revisions

    def nearest(self, channel: int, speaker: str, vector: np.ndarray) -> str:
        """Who is most likely speaking, by a voice print of speech still going on (an interim
        result): the speaker ``vector`` would join now, nothing assigned or changed."""
        return self._assigner(channel, speaker).nearest(vector)

    def assigned(self, utterance: Utterance) -> Utterance:
        """A revision (``vad.speculative``: the speaker went on after a short pause) keeps the
        speaker its utterance was assigned: one voice print per utterance."""
        labels = self._assigner(utterance.channel, utterance.speaker).labels
        speaker = labels.get(utterance.seq, utterance.speaker)
        return replace(utterance, speaker=speaker)

    async def process(self, item: object) -> None:
        if not isinstance(item, Utterance) or not self.active or len(item.audio) == 0:
            await self.push(item)
            return
        if item.revision:
            await self.push(item if self._labeller is not None else self.assigned(item))
            return
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self.executor, self._embed, item.audio)
        if self._labeller is not None:
            self.pending[item.seq] = work
            await self.push(item)
            return
        labelled, revisions = self.label(item, *await work)
        await self.push(labelled)
        for message in revisions:
            await self.push(message)


class SpeakerLabelStage(Stage):
    """The second half of a deferred :class:`SpeakerStage` (made by its ``labeller()``): for each
    ``Transcript`` (or ``Utterance``) whose voice print is pending, waits for it, assigns, and
    passes the message on with the speaker set, followed by any :class:`SpeakerRevision`."""

    inbox_spec = Inbox("speaker-labels", 32)

    def __init__(self, owner: SpeakerStage) -> None:
        super().__init__()
        self.owner = owner

    def _take(self, seq: int) -> Awaitable[tuple[np.ndarray, float]] | None:
        """The pending print of ``seq``; prints of earlier utterances that never came (dropped
        as no speech by the transcription) are forgotten."""
        pending = self.owner.pending
        for stale in [s for s in pending if s < seq]:
            del pending[stale]
        return pending.pop(seq, None)

    async def process(self, item: object) -> None:
        utterance = item.utterance if isinstance(item, Transcript) else item
        if isinstance(utterance, Utterance) and utterance.revision and self.owner.active:
            labelled = self.owner.assigned(utterance)
            await self.push(
                replace(item, utterance=labelled) if isinstance(item, Transcript) else labelled
            )
            return
        work = self._take(utterance.seq) if isinstance(utterance, Utterance) else None
        if work is None:
            await self.push(item)
            return
        assert isinstance(utterance, Utterance)
        labelled, revisions = self.owner.label(utterance, *await work)
        await self.push(
            replace(item, utterance=labelled) if isinstance(item, Transcript) else labelled
        )
        for message in revisions:
            await self.push(message)

    async def finish(self, end: EndOfStream) -> None:
        self.owner.pending.clear()
