"""The one owner of the UniMSE model: batching, features, prediction, results.

:class:`EmotionModel` holds the predictor and the feature extractors its checkpoint needs; all of
its work is blocking and runs on the pipeline's executor. :class:`InferenceStage` takes from a
bounded inbox whatever utterances are ready (up to ``max_batch``), classifies them in one call and
emits one :class:`~realtime.messages.EmotionResult` per utterance with its per-stage latency.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

import numpy as np

from realtime.config import InferenceOptions
from realtime.messages import (
    SAMPLE_RATE,
    EmotionResult,
    EndOfStream,
    PendingUtterance,
    SpeakerRevision,
    Transcript,
    UtteranceConfirmed,
)
from realtime.reread import EarlierReads, speaker_key
from realtime.stage import Inbox, Stage
from unimse.config import UniMSEConfig
from unimse.inputs import ModelInput
from unimse.prediction import Prediction
from unimse.voice_baseline import SpeakerBaselines
from unimse.voice_trust import SpeakerExpressiveness, VoiceHistory

if TYPE_CHECKING:
    from realtime.asr import Transcriber

logger = logging.getLogger(__name__)

AcousticExtractor = Callable[[np.ndarray], np.ndarray]
VisualExtractor = Callable[[Sequence[np.ndarray]], "np.ndarray | None"]


class Predictor(Protocol):
    """What :class:`unimse.inference.EmotionPredictor` offers the pipeline."""

    config: UniMSEConfig
    model_version: str

    def predict(self, inputs: Sequence[ModelInput]) -> list[Prediction]: ...

    def voice_baselines(self) -> SpeakerBaselines | None: ...

    def voice_expressiveness(self) -> SpeakerExpressiveness | None: ...

    def voice_leads(self, inputs: Sequence[ModelInput]) -> list[float]: ...

    def reread(
        self, predictions: list[Prediction], histories: list[VoiceHistory]
    ) -> list[Prediction]: ...


def load_model(options: InferenceOptions) -> EmotionModel:
    """The checkpoint and the feature extractors it uses (blocking: run it on the executor)."""
    from unimse.inference import EmotionPredictor

    predictor = EmotionPredictor.load(options.checkpoint, device=options.device)
    model = EmotionModel.for_predictor(predictor, audio=options.audio)
    if not options.audio and predictor.config.acoustic is not None:
        logger.info("acoustic features off: the model sees words (and video) only")
    model.warm_up()
    return model


@dataclass(frozen=True)
class InterimInput:
    """An utterance still being spoken, as :meth:`EmotionModel.classify` takes it: the audio so
    far (``states``: the ASR encoder's states of it, when the checkpoint reads those) and the
    words so far (``speaker`` names them in the text; ``""`` without words). Its voice is read
    against the voice of ``voice_key``'s speaker without being counted in."""

    session: str
    voice_key: str  # the channel's speaker, whose voice baseline the audio is read against
    audio: np.ndarray
    states: np.ndarray | None = None
    text: str = ""
    speaker: str = ""
    language: str = ""  # the transcript's language ("": not known), which picks the voice map


@dataclass
class EmotionModel:
    """Predictor plus the feature extractors its checkpoint uses. Blocking; one per pipeline."""

    predictor: Predictor
    acoustic: AcousticExtractor | None = None
    visual: VisualExtractor | None = None
    # Whisper encoder states the checkpoint reads, as unimse.whisper.states_key names them
    # ("" for other acoustic features)
    encoder_model: str = ""
    # The inner encoder layers it reads, and of which Whisper model (None: the last layer)
    encoder_layers: tuple[int, ...] | None = None
    whisper_model: str = ""
    # Each speaker's running mean voice, when the checkpoint reads states relative to it
    baselines: SpeakerBaselines | None = None
    shared_states: int = 0  # utterances whose acoustic input came from the ASR encoder pass
    extracted: int = 0  # utterances whose acoustic input was computed here
    # Each speaker's voice history, when the checkpoint trusts an expressive voice (voice_trust)
    expressiveness: SpeakerExpressiveness | None = None

    @classmethod
    def for_predictor(cls, predictor: Predictor, *, audio: bool = True) -> EmotionModel:
        """Attach the extractors named by the checkpoint's feature specs (none for text only);
        ``audio=False`` leaves the acoustic one out, so audio is masked as for a text model."""
        from unimse.features import whisper_feature_of
        from unimse.whisper import states_key

        config = predictor.config
        acoustic = visual = None
        if config.acoustic is not None and audio:
            from unimse.features import acoustic_extractor

            acoustic = acoustic_extractor(config.acoustic)
        if config.visual is not None:
            from unimse.features import visual_extractor

            visual = visual_extractor(config.visual)
        baselines = predictor.voice_baselines() if acoustic is not None else None
        voices = predictor.voice_expressiveness() if acoustic is not None else None
        feature = whisper_feature_of(config.acoustic)
        if feature is None:
            return cls(predictor, acoustic, visual, baselines=baselines, expressiveness=voices)
        key = states_key(feature.model, feature.layers)
        return cls(
            predictor,
            acoustic,
            visual,
            key,
            feature.layers,
            feature.model,
            baselines,
            expressiveness=voices,
        )

    def share_encoder(self, transcriber: Transcriber) -> None:
        """Let the ASR's encoder pass also give the inner-layer states this checkpoint reads, when
        both use the same Whisper model (blocking). Otherwise nothing changes: the emotion model
        then runs its own encoder pass (logged once)."""
        if (
            self.acoustic is not None
            and self.encoder_layers is not None
            and transcriber.options.model == self.whisper_model
        ):
            transcriber.tap_encoder(self.encoder_layers)

    @property
    def uses_audio(self) -> bool:
        return self.acoustic is not None

    @property
    def uses_video(self) -> bool:
        return self.visual is not None

    def warm_up(self) -> None:
        """One throw-away prediction, so the first utterance does not pay for lazy set-up
        (allocator, kernel selection, feature code compiled on first use)."""
        started = time.perf_counter()
        audio = np.zeros(SAMPLE_RATE, dtype=np.float32)
        frame = np.zeros((240, 320, 3), dtype=np.uint8)
        acoustic = None
        spec = self.predictor.config.acoustic
        if self.acoustic is not None and spec is not None:
            # Whisper states normally come from the ASR pass: do not load a second encoder here.
            shared = bool(self.encoder_model)
            acoustic = np.zeros((50, spec.dim), np.float32) if shared else self.acoustic(audio)
        self.predictor.predict(
            [
                ModelInput(
                    text="hello",
                    acoustic=acoustic,
                    visual=self.visual([frame]) if self.visual is not None else None,
                )
            ]
        )
        logger.debug("emotion model warmed up in %.2f s", time.perf_counter() - started)

    def voice(
        self,
        states: np.ndarray,
        session: str,
        speaker: str,
        *,
        update: bool = True,
        utterance: int | None = None,
    ) -> np.ndarray:
        """Acoustic states as the checkpoint reads them: relative to the speaker's running mean
        voice when it uses speaker baselines (``update``: count this utterance in, as
        ``utterance`` so that diarisation can re-label it; False for an utterance still going
        on), else unchanged."""
        if self.baselines is None:
            return states
        key = speaker_key(session, speaker)
        return self.baselines.normalise(key, states, update=update, utterance=utterance)

    def revise_speaker(self, revision: SpeakerRevision) -> bool:
        """Diarisation re-labelled an utterance: its voice now counts in the new speaker's
        baseline and voice history, no longer in the old one's (utterances no longer kept stay
        where they are). Whether its voice history moved."""
        session = revision.session
        old, new = speaker_key(session, revision.old), speaker_key(session, revision.new)
        if self.baselines is not None:
            self.baselines.move(revision.utterance_seq, old, new)
        if self.expressiveness is None:
            return False
        return self.expressiveness.move(revision.utterance_seq, old, new)

    def end_session(self, session: str) -> None:
        """Forget the session's speaker baselines and voice histories (a server's model outlives
        its sessions)."""
        for kept in (self.baselines, self.expressiveness):
            if kept is not None:
                for key in kept.speakers:
                    if key.startswith(f"{session}/"):
                        kept.forget(key)

    def with_history(
        self,
        model_input: ModelInput,
        session: str,
        speaker: str,
        *,
        update: bool,
        utterance: int | None = None,
    ) -> ModelInput:
        """``model_input`` with its speaker's voice history, when the checkpoint reads one
        (``update``: count this utterance's voice in, as ``utterance`` so that diarisation can
        re-label it; False for an utterance still going on or a revision of one already
        counted)."""
        if self.expressiveness is None or model_input.acoustic is None:
            return model_input
        key = speaker_key(session, speaker)
        if update:
            lead = self.predictor.voice_leads([model_input])[0]
            history = self.expressiveness.add(key, lead, utterance)
        else:
            history = self.expressiveness.history(key)
        return replace(model_input, voice_history=history)

    def acoustic_features(self, transcript: Transcript) -> np.ndarray | None:
        """The checkpoint's acoustic input (relative to the speaker's voice, see :meth:`voice`)."""
        states = self._acoustic_states(transcript)
        if states is None:
            return None
        utterance = transcript.utterance
        # A revision replaces a speculative result whose voice is already counted in.
        first = utterance.revision == 0
        session, speaker = utterance.session, utterance.speaker
        return self.voice(states, session, speaker, update=first, utterance=utterance.seq)

    def _acoustic_states(self, transcript: Transcript) -> np.ndarray | None:
        """The ASR's own encoder states when they are the ones the checkpoint reads (no second
        encoder pass), else the extractor's output."""
        if self.acoustic is None:
            return None
        states = transcript.encoder_states
        if (
            states is not None
            and self.encoder_model
            and transcript.encoder_model == self.encoder_model
        ):
            self.shared_states += 1
            return states
        if self.encoder_model and self.extracted == 0:
            logger.info(
                "the checkpoint reads Whisper %s encoder states but the ASR gave %s: the "
                "encoder runs a second time for each such utterance",
                self.encoder_model,
                transcript.encoder_model or "none (long or re-decoded utterance)",
            )
        self.extracted += 1
        return self.acoustic(transcript.utterance.audio)

    def features(self, item: PendingUtterance) -> ModelInput:
        utterance = item.transcript.utterance
        acoustic = self.acoustic_features(item.transcript)
        visual = None
        if self.visual is not None and utterance.frames:
            visual = self.visual([frame.image for frame in utterance.frames])
        model_input = replace(item.model_input, acoustic=acoustic, visual=visual)
        # counted in; a revision (the speaker went on) in the place of its earlier version's
        return self.with_history(
            model_input, utterance.session, utterance.speaker, update=True, utterance=utterance.seq
        )

    def input_of(self, item: PendingUtterance | InterimInput) -> ModelInput:
        """What the predictor reads of a closed utterance (:meth:`features`) or an interim one."""
        if not isinstance(item, InterimInput):
            return self.features(item)
        acoustic = None
        if self.acoustic is not None:
            states = item.states if item.states is not None else self.acoustic(item.audio)
            acoustic = self.voice(states, item.session, item.voice_key, update=False)
        model_input = ModelInput(
            text=item.text, speaker=item.speaker, acoustic=acoustic, language=item.language
        )
        return self.with_history(model_input, item.session, item.voice_key, update=False)

    def classify(self, batch: Sequence[PendingUtterance | InterimInput]) -> list[Prediction]:
        """Features, then one forward pass for the whole batch, closed utterances and interim
        ones alike (blocking)."""
        predictions = self.predictor.predict([self.input_of(item) for item in batch])
        if len(predictions) != len(batch):
            raise RuntimeError(f"predictor returned {len(predictions)} results for {len(batch)}")
        return predictions


def make_result(
    item: PendingUtterance, prediction: Prediction, seq: int, now: float, model_version: str
) -> EmotionResult:
    transcript = item.transcript
    utterance = transcript.utterance
    latency = {
        "vad": utterance.segmented_at - utterance.speech_ended_at,
        "asr": transcript.transcribed_at - utterance.segmented_at,
        "inference": now - transcript.transcribed_at,
        "total": now - utterance.speech_ended_at,
    }
    return EmotionResult(
        session=utterance.session,
        seq=seq,
        monotonic=now,
        utterance_seq=utterance.seq,
        speaker=utterance.speaker,
        start=utterance.start,
        end=utterance.end,
        text=transcript.text,
        prediction=prediction,
        latency={stage: max(0.0, seconds) for stage, seconds in latency.items()},
        model_version=model_version,
        timestamp=datetime.now(UTC),
        speculative=utterance.speculative,
        revision=utterance.revision,
        language=transcript.language,
    )


class InferenceStage(Stage):
    """Pipeline stage: batches whatever is ready in the inbox and classifies it off the loop.

    The pipeline gives its inbox size and policy (see :func:`realtime.pipeline.inbox_policy`).
    """

    inbox_spec = Inbox("inference", 16)

    def __init__(
        self,
        model: EmotionModel,
        executor: Executor,
        *,
        max_batch: int,
        inbox: Inbox | None = None,
        reread: bool = True,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        super().__init__()
        if inbox is not None:  # size and policy are the pipeline's choice (live or replay)
            self.inbox_spec = inbox
        self.model = model
        self.executor = executor
        self.max_batch = max_batch
        self.batches: list[int] = []  # size of every batch, in order
        self._seq = itertools.count()
        # A speaker's earlier results read again as their voice becomes known (voice trust)
        trusting = model.expressiveness is not None
        self.earlier: EarlierReads | None = EarlierReads() if reread and trusting else None

    def _ready(self, first: PendingUtterance) -> tuple[list[PendingUtterance], object | None]:
        """``first`` and what else is waiting, up to a batch; and the next other message, if any."""
        batch = [first]
        while len(batch) < self.max_batch and not self.inbox.empty():
            item = self.inbox.get_nowait()
            if not isinstance(item, PendingUtterance):
                return batch, item
            batch.append(item)
        return batch, None

    async def _classify(self, batch: list[PendingUtterance]) -> None:
        loop = asyncio.get_running_loop()
        self.batches.append(len(batch))
        started = time.perf_counter()
        predictions = await loop.run_in_executor(self.executor, self.model.classify, batch)
        logger.debug(
            "classified %d utterances in %.3f s", len(batch), time.perf_counter() - started
        )
        now = time.monotonic()
        version = self.model.predictor.model_version
        results = [
            make_result(pending, prediction, next(self._seq), now, version)
            for pending, prediction in zip(batch, predictions, strict=True)
        ]
        for result in results:
            await self.push(result)
        if self.earlier is not None:
            await self._reread({self.earlier.offer(r) for r in results})

    async def _reread(self, speakers: set[str | None]) -> None:
        """Read the kept results of ``speakers`` again (off the loop); publish the revisions."""
        keys = sorted(k for k in speakers if k is not None)
        if not keys:
            return
        loop = asyncio.get_running_loop()
        for revised in await loop.run_in_executor(self.executor, self._revisions, keys):
            await self.push(revised)

    def _revisions(self, keys: list[str]) -> list[EmotionResult]:
        assert self.earlier is not None and self.model.expressiveness is not None
        histories = self.model.expressiveness
        revised: list[EmotionResult] = []
        for key in keys:
            revised += self.earlier.reread(
                key, histories.history(key), self.model.predictor, self._seq
            )
        return revised

    async def run(self) -> None:
        while True:
            item: object | None = await self.inbox.get()
            if isinstance(item, PendingUtterance):
                batch, item = self._ready(item)
                await self._classify(batch)
            moved = isinstance(item, SpeakerRevision) and self.model.revise_speaker(item)
            if isinstance(item, EndOfStream):
                self.model.end_session(item.session)
                if self.earlier is not None:
                    self.earlier.forget()
                await self.push(item)
                return
            if item is not None:
                await self.push(item)
            if self.earlier is not None:
                await self._follow(item, moved)

    async def _follow(self, item: object | None, moved: bool) -> None:
        """A confirmation or a speaker revision can change whom the trust re-reads (``moved``:
        the revision moved the utterance's voice to its new speaker's history)."""
        assert self.earlier is not None
        if isinstance(item, UtteranceConfirmed):
            await self._reread({self.earlier.confirm(item)})
        elif isinstance(item, SpeakerRevision):
            await self._reread(set(self.earlier.move(item, moved)))
