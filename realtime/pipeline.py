"""Wiring: source -> stages -> fan-out to sinks, for one session.

The pipeline is a list of :class:`~realtime.stage.Stage` s, each with its own inbox channel:

    [video merge] -> [recorder tap] -> VAD -> [partials] -> [speakers] -> [frame attach] -> ASR
    -> [speaker labels] -> dialogue context -> inference -> delivery (fan-out to every sink's queue)

(bracketed stages only when there is video, a recorder, or diarisation: ``speakers.diarize``,
whose voice print starts right after the VAD and runs while Whisper transcribes; the label is set
after the transcription, before the dialogue context takes the speaker; or interim results,
``partial.enabled``: see :mod:`realtime.partial`). The pipeline owns every
channel, the executor that runs all blocking work (model loads, transcription, forward passes,
frame reads, file decoding, voice prints) and the stream clock. Channel policies:

=========================  ======================  =========================================
channel                    policy                  why
=========================  ======================  =========================================
audio (source -> stage 1)  block, never drops      lost audio would corrupt utterances
video (camera -> merge)    drop oldest             only the latest frames matter
between other stages       block                   every utterance is transcribed
inference inbox            drop oldest (live) or   live results must stay current; a replay
                           block (replay)          can always wait
one queue per sink         drop oldest             a slow sink never stalls the others
=========================  ======================  =========================================

Every drop is counted in :class:`~realtime.messages.StatsSnapshot` and logged. The end of the
source becomes an :class:`~realtime.messages.EndOfStream` that flows through every stage, so all
audio already captured is segmented, transcribed and classified before the sinks close. A source
that fails (damaged media mid-stream, a microphone the VAD fell behind) ends the stream the same
way, with the reason ``"error: ..."``: everything it emitted before is still delivered, and only
then is its error raised. A new stage is one :class:`~realtime.stage.Stage` subclass and one line
in :meth:`Pipeline._stages`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any

from realtime.asr import Transcriber, TranscriptionStage
from realtime.channels import Channel, Policy
from realtime.clock import StreamClock
from realtime.config import Config
from realtime.context import ContextStage, DialogueContext
from realtime.fanout import DeliveryStage, FanOut
from realtime.frames import FrameAttachStage, VideoMergeStage
from realtime.inference import EmotionModel, InferenceStage, load_model
from realtime.messages import EndOfStream, StatsSnapshot, VideoFrame
from realtime.partial import PartialStage
from realtime.recorder import RecorderTapStage, SessionRecorder
from realtime.sinks.base import Sink
from realtime.sources.base import Source, SourceContext, SourceError
from realtime.stage import Inbox, Stage
from realtime.vad import SegmentationStage, SpeechAnalyzer
from unimse.speakers import ModelSpeakerNames

if TYPE_CHECKING:
    from realtime.echo import EchoFilterStage
    from realtime.speakers.embedding import SpeakerEmbedder
    from realtime.speakers.stage import SpeakerStage

logger = logging.getLogger(__name__)

AUDIO_CHANNEL_SIZE = 512  # chunks (about 10 s of 20 ms chunks) before a live source must fail
VIDEO_CHANNEL_SECONDS = 10.0  # frames kept waiting for the VAD, in seconds of camera time
EXECUTOR_WORKERS = 4  # ASR, inference, camera reads, file decoding never wait for each other


def new_session_id() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def inbox_policy(overflow: str, live: bool) -> Policy:
    """The inference inbox's policy: ``drop``/``block``, or ``auto`` (drop live, block replay)."""
    if overflow == "auto":
        return Policy.DROP_OLDEST if live else Policy.BLOCK
    return Policy.DROP_OLDEST if overflow == "drop" else Policy.BLOCK


class Pipeline:
    """One session: a source (plus an optional camera) through every stage to the sinks.

    Models may be given already loaded (the benchmark and tests reuse them); otherwise they are
    loaded on the executor when the pipeline starts, ASR and the emotion model in parallel.
    """

    def __init__(
        self,
        config: Config,
        *,
        source: Source,
        sinks: Sequence[Sink],
        session: str,
        camera: Source | None = None,
        recorder: SessionRecorder | None = None,
        transcriber: Transcriber | None = None,
        model: EmotionModel | None = None,
        analyzer_factory: Callable[[], SpeechAnalyzer] | None = None,
        embedder: SpeakerEmbedder | None = None,
    ) -> None:
        self.config = config
        self.source = source
        self.camera = camera
        self.recorder = recorder
        self.session = session
        self.transcriber = transcriber
        self.model = model
        self.embedder = embedder  # speaker voice prints (diarisation); loaded when needed
        self.speakers: SpeakerStage | None = None  # with speakers.diarize, once running
        self.partial: PartialStage | None = None  # with partial.enabled, once running
        self.echo: EchoFilterStage | None = None  # on both sides of a call, once running
        self._enrolled: dict[str, Any] = {}  # name -> voice print, from speakers.enroll
        self.fanout = FanOut([*sinks, *([recorder] if recorder else [])], config.sinks.queue_size)
        self.clock = StreamClock(1.0 if source.live else config.replay.factor)
        self.segmentation = SegmentationStage(
            config.vad,
            session=session,
            speaker_of=config.sources.speaker,
            analyzer_factory=analyzer_factory,
            partial_interval=config.partial.interval if config.partial.enabled else None,
            partial_after=config.partial.after,
        )
        self.delivery = DeliveryStage(self.fanout, self.snapshot)
        self.inference: InferenceStage | None = None
        self.transcription: TranscriptionStage | None = None
        self._context: ContextStage | None = None
        self._channels: list[Channel[Any]] = []
        self._stop_requested = False
        # How the stream ended (the EndOfStream reason) and the source's error, if it failed.
        self.end_reason: str | None = None
        self.source_error: SourceError | None = None
        self.stats: StatsSnapshot | None = None  # the final counters, once run() has ended

    # -- control ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop capturing; everything already captured still goes through (call on the loop)."""
        if not self._stop_requested:
            logger.info("stopping: finishing the utterances already captured")
        self._stop_requested = True
        self.source.stop()
        if self.camera is not None:
            self.camera.stop()

    def snapshot(self) -> StatsSnapshot:
        channels = [*self._channels, *(r.channel for r in self.fanout.runners)]
        dropped = {ch.name: ch.dropped for ch in channels if ch.policy is Policy.DROP_OLDEST}
        dropped["no_words"] = self._context.no_words if self._context else 0
        return StatsSnapshot(
            elapsed=self.segmentation.position,
            utterances=self.segmentation.utterances,
            results=self.delivery.results,
            dropped=dropped,
            queue_depths={ch.name: ch.qsize() for ch in channels},
            latency_p50=self.delivery.latency_p50(),
            ended=self.end_reason,
        )

    # -- running -----------------------------------------------------------------------------

    async def _load_models(self, executor: ThreadPoolExecutor) -> tuple[Transcriber, EmotionModel]:
        """The models given to the constructor, or both loaded in parallel on the executor."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        asr_job = (
            None
            if self.transcriber is not None
            else loop.run_in_executor(executor, Transcriber.load, self.config.asr)
        )
        model_job = (
            None
            if self.model is not None
            else loop.run_in_executor(executor, load_model, self.config.inference)
        )
        speaker_job = (
            loop.run_in_executor(executor, self._load_speakers)
            if self.config.speakers.diarize
            else None
        )
        jobs = [job for job in (asr_job, model_job, speaker_job) if job is not None]
        if jobs:
            await asyncio.gather(*jobs)
            logger.info("models loaded in %.1f s", time.perf_counter() - started)
        transcriber = self.transcriber if asr_job is None else asr_job.result()
        model = self.model if model_job is None else model_job.result()
        assert transcriber is not None and model is not None
        if asr_job is not None or model_job is not None:
            await loop.run_in_executor(executor, model.share_encoder, transcriber)
        return transcriber, model

    def _load_speakers(self) -> None:
        """The speaker embedder and the enrolled voices (blocking: runs on the executor)."""
        from realtime.speakers.embedding import CamPlusPlusEmbedder
        from realtime.speakers.enrol import enrolment_prints

        if self.embedder is None:
            self.embedder = CamPlusPlusEmbedder()
        self.embedder.load()
        self._enrolled = enrolment_prints(self.embedder, self.config.speakers.enroll)

    async def run(self) -> StatsSnapshot:
        """Run the session to the end of its source (or :meth:`stop`); returns the final stats.

        Unusable input fails first (:meth:`Source.check`), then a sink that cannot open (a wrong
        broker address), both before the models load. If the source fails mid-stream, what it
        read is delivered, the sinks are closed, and then its :class:`SourceError` is raised
        (the final counters are in :attr:`stats`).
        """
        with ThreadPoolExecutor(EXECUTOR_WORKERS, thread_name_prefix="emotrack") as executor:
            loop = asyncio.get_running_loop()
            for source in (self.source, self.camera):
                if source is not None:
                    await loop.run_in_executor(executor, source.check)
            await self.fanout.open()
            try:
                transcriber, model = await self._load_models(executor)
                await self._run_stages(executor, transcriber, model)
            finally:
                stats = self.stats = self.snapshot()
                await self.fanout.close(stats)
        if self.source_error is not None:
            raise self.source_error
        return stats

    def _video_channel(self, model: EmotionModel) -> Channel[VideoFrame] | None:
        wanted = model.uses_video or self.recorder is not None
        if not wanted:
            if self.camera is not None:
                logger.warning("this checkpoint does not use video: the camera stays off")
                self.camera = None
            return None
        size = int(self.config.sources.camera_fps * VIDEO_CHANNEL_SECONDS) + 4
        return Channel("video", size, Policy.DROP_OLDEST)

    def _stages(
        self,
        executor: ThreadPoolExecutor,
        transcriber: Transcriber,
        model: EmotionModel,
        video: Channel[VideoFrame] | None,
    ) -> list[Stage]:
        """The stages an utterance goes through, in order; each runs as its own task."""
        config = self.config
        turns = config.context.turns
        names = ModelSpeakerNames(config.context.speaker_labels)
        context = DialogueContext(
            self.session, model.predictor.config.context_turns if turns is None else turns, names
        )
        self._context = ContextStage(context, needs_words=not model.uses_audio)
        self.transcription = self._transcription_stage(transcriber, executor)
        inference = config.inference
        self.inference = InferenceStage(
            model,
            executor,
            max_batch=inference.max_batch,
            inbox=Inbox(
                InferenceStage.inbox_spec.name,
                inference.inbox_size,
                inbox_policy(inference.overflow, self.source.live),
            ),
            reread=inference.reread,
        )
        vad = config.vad
        horizon = vad.max_utterance + vad.pre_roll + vad.hangover + 2.0
        speakers = self._speaker_stage(executor)
        partial = self._partial_stage(executor, transcriber, model, speakers, names)
        echo_tap, echo_filter = self._echo_stages()
        return [
            *([VideoMergeStage(video)] if video is not None else []),
            *([RecorderTapStage(self.recorder)] if self.recorder is not None else []),
            *echo_tap,
            self.segmentation,
            *echo_filter,
            *([partial] if partial is not None else []),
            *([speakers] if speakers is not None else []),
            *([FrameAttachStage(horizon)] if video is not None else []),
            self.transcription,
            *([speakers.labeller()] if speakers is not None else []),
            self._context,
            self.inference,
            self.delivery,
        ]

    def _transcription_stage(
        self, transcriber: Transcriber, executor: ThreadPoolExecutor
    ) -> TranscriptionStage:
        """The ASR stage (a server session bounds it: ``realtime.serve.pipeline``)."""
        return TranscriptionStage(transcriber, executor)

    def _echo_stages(self) -> tuple[list[Stage], list[Stage]]:
        """The echo stages around the VAD (``sources.echo``): on both sides of a live call, or
        with ``on`` for stereo input taken as speakers; channel 1 is the reference."""
        sources = self.config.sources
        reference_channel = self.source.remote_channel
        if sources.echo == "on" and sources.channels_as_speakers and self.source.channels >= 2:
            reference_channel = 1
        if sources.echo == "off" or reference_channel is None:
            return [], []
        from realtime.echo import EchoFilterStage, EchoOptions, ReferenceAudio, ReferenceTapStage

        reference = ReferenceAudio(EchoOptions().keep)
        self.echo = EchoFilterStage(reference, self.config.vad.pre_roll)
        return [ReferenceTapStage(reference, reference_channel)], [self.echo]

    def _speaker_stage(self, executor: ThreadPoolExecutor) -> SpeakerStage | None:
        """With ``speakers.diarize``: the speaker stage (deferred labelling), else None."""
        options = self.config.speakers
        if not options.diarize:
            return None
        from realtime.speakers.assign import SpeakerOptions
        from realtime.speakers.stage import SpeakerStage

        assert self.embedder is not None  # loaded with the models
        sources = self.config.sources
        self.speakers = SpeakerStage(
            self.embedder,
            executor,
            SpeakerOptions(max_speakers=options.max_speakers, names=options.names),
            enrolled=self._enrolled,
            channels_as_speakers=sources.channels_as_speakers,
            within_channels=sources.channels_as_speakers,
        )
        return self.speakers

    def _partial_stage(
        self,
        executor: ThreadPoolExecutor,
        transcriber: Transcriber,
        model: EmotionModel,
        speakers: SpeakerStage | None,
        names: ModelSpeakerNames,
    ) -> PartialStage | None:
        """With ``partial.enabled`` and a checkpoint that hears audio: the interim-result stage."""
        if self.segmentation.partial_interval is None:
            return None
        if not model.uses_audio:
            logger.warning("interim results need a checkpoint that reads audio: --partial is off")
            self.segmentation.partial_interval = None
            return None
        self.partial = PartialStage(
            transcriber,
            model,
            executor,
            speakers=speakers,
            names=names,
            deliver=self.delivery.deliver_partial,
            text=self.config.partial.text,
        )
        return self.partial

    def _link(self, stages: Sequence[Stage]) -> Channel[Any]:
        """One inbox per stage, each stage's outbox the next one's inbox; returns the first."""
        inboxes: list[Channel[Any]] = []
        for index, stage in enumerate(stages):
            spec = stage.inbox_spec
            if index == 0:  # what the source writes to
                spec = Inbox("audio", AUDIO_CHANNEL_SIZE)
            inboxes.append(Channel(spec.name, spec.size, spec.policy))
        for stage, inbox, outbox in zip(stages, inboxes, [*inboxes[1:], None], strict=True):
            stage.link(inbox, outbox)
        self._channels.extend(inboxes)
        return inboxes[0]

    async def _run_stages(
        self, executor: ThreadPoolExecutor, transcriber: Transcriber, model: EmotionModel
    ) -> None:
        video = self._video_channel(model)
        stages = self._stages(executor, transcriber, model, video)
        audio = self._link(stages)
        if video is not None:
            self._channels.append(video)
        ctx = SourceContext(self.session, self.clock, executor, audio, video)

        async def drive_source() -> None:
            try:
                await self.source.capture(ctx)
            except SourceError as exc:  # what was read still goes through every stage
                self.source_error = exc
                reason = f"error: {exc}"
                logger.info("the source failed; finishing what it read: %s", exc)
            else:
                reason = "stopped" if self._stop_requested else "eof"
            if self.camera is not None:
                self.camera.stop()
            self.end_reason = reason
            await audio.put(EndOfStream(self.session, 0, time.monotonic(), reason))

        self.clock.start()
        logger.info("session %s: %s", self.session, self.source.description)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(drive_source(), name="source")
                if self.camera is not None and video is not None:
                    group.create_task(self.camera.run(ctx), name="camera")
                for stage in stages:
                    group.create_task(stage.run(), name=stage.inbox.name)
                for runner in self.fanout.runners:
                    group.create_task(runner.run(), name=runner.channel.name)
        except BaseExceptionGroup as group_error:
            errors = group_error.exceptions
            for extra in errors[1:]:
                logger.debug("also failed: %r", extra)
            raise errors[0] from None
