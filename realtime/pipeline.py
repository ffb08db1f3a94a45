"""Wiring: sources -> VAD -> ASR -> dialogue context -> inference -> fan-out to sinks.

The pipeline owns every channel, the executor that runs all blocking work (model loads,
transcription, forward passes, frame reads, file decoding) and the stream clock. Channel policies:

========================  ======================  =========================================
channel                   policy                  why
========================  ======================  =========================================
audio (source -> VAD)     block, never drops      lost audio would corrupt utterances
video (camera -> VAD)     drop oldest             only the latest frames matter
utterances (VAD -> ASR)   block                   every utterance is transcribed
inference inbox           drop oldest (live) or   live results must stay current; a replay
                          block (replay)          can always wait
one queue per sink        drop oldest             a slow sink never stalls the others
========================  ======================  =========================================

Every drop is counted in :class:`~realtime.messages.StatsSnapshot` and logged. The end of the
source becomes an :class:`~realtime.messages.EndOfStream` that flows through every stage, so all
audio already captured is segmented, transcribed and classified before the sinks close.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from realtime.asr import Transcriber, TranscriptionStage
from realtime.channels import Channel, Policy
from realtime.clock import StreamClock
from realtime.config import Config
from realtime.context import DialogueContext
from realtime.frames import FrameBuffer
from realtime.inference import EmotionModel, InferenceStage, PendingUtterance, load_model
from realtime.messages import (
    AudioChunk,
    EmotionResult,
    EndOfStream,
    StatsSnapshot,
    Transcript,
    Utterance,
    VideoFrame,
)
from realtime.recorder import SessionRecorder
from realtime.sinks.base import Sink, SinkError
from realtime.sources.base import Source, SourceContext
from realtime.vad import SegmentationStage, SpeechAnalyzer

logger = logging.getLogger(__name__)

AUDIO_CHANNEL_SIZE = 512  # chunks (about 10 s of 20 ms chunks) before a live source must fail
UTTERANCE_CHANNEL_SIZE = 32
VIDEO_CHANNEL_SECONDS = 10.0  # frames kept waiting for the VAD, in seconds of camera time
EXECUTOR_WORKERS = 4  # ASR, inference, camera reads, file decoding never wait for each other
LATENCY_WINDOW = 1000  # results over which the dashboard's median latencies are taken


def new_session_id() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def inbox_policy(overflow: str, live: bool) -> Policy:
    """The inference inbox's policy: ``drop``/``block``, or ``auto`` (drop live, block replay)."""
    if overflow == "auto":
        return Policy.DROP_OLDEST if live else Policy.BLOCK
    return Policy.DROP_OLDEST if overflow == "drop" else Policy.BLOCK


class SinkRunner:
    """One sink, its own bounded queue (oldest dropped when full) and the task that drains it."""

    def __init__(self, sink: Sink, queue_size: int) -> None:
        self.sink = sink
        self.channel: Channel[EmotionResult | EndOfStream] = Channel(
            f"sink:{sink.name}", queue_size, Policy.DROP_OLDEST
        )
        self.published = 0
        self.failure: str | None = None

    async def run(self) -> None:
        while True:
            item = await self.channel.get()
            if isinstance(item, EndOfStream):
                return
            if self.failure is not None:
                continue
            try:
                await self.sink.publish(item)
            except SinkError as exc:
                self.failure = str(exc)
                logger.error("sink %s failed and gets no more results: %s", self.sink.name, exc)
            else:
                self.published += 1


class FanOut:
    """Hands every result to every sink without letting one sink hold up another."""

    def __init__(self, sinks: Sequence[Sink], queue_size: int) -> None:
        self.runners = [SinkRunner(sink, queue_size) for sink in sinks]
        self._opened: list[Sink] = []

    async def open(self) -> None:
        """Open every sink (concurrently); if one fails, close the others and raise its error."""
        results = await asyncio.gather(
            *(runner.sink.open() for runner in self.runners), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        self._opened = [
            runner.sink
            for runner, r in zip(self.runners, results, strict=True)
            if not isinstance(r, BaseException)
        ]
        if failures:
            await self.close(None)
            raise failures[0]

    def offer(self, result: EmotionResult) -> None:
        for runner in self.runners:
            runner.channel.put_nowait(result)

    def update_stats(self, stats: StatsSnapshot) -> None:
        for runner in self.runners:
            runner.sink.update_stats(stats)

    async def end(self, end: EndOfStream) -> None:
        for runner in self.runners:
            runner.channel.put_nowait(end)

    async def close(self, stats: StatsSnapshot | None) -> None:
        """Close every opened sink; errors are logged so that the others still close."""
        final = stats or StatsSnapshot(0.0, 0, 0, {}, {}, {})
        for sink in self._opened:
            try:
                await sink.close(final)
            except SinkError as exc:
                logger.error("sink %s did not close cleanly: %s", sink.name, exc)
        self._opened = []


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
    ) -> None:
        self.config = config
        self.source = source
        self.camera = camera
        self.recorder = recorder
        self.session = session
        self.transcriber = transcriber
        self.model = model
        self.fanout = FanOut([*sinks, *([recorder] if recorder else [])], config.sinks.queue_size)
        self.clock = StreamClock(1.0 if source.live else config.replay.factor)
        self.segmentation = SegmentationStage(
            config.vad,
            session=session,
            speaker_of=config.sources.speaker,
            frames=None,
            tap=recorder.add_audio if recorder else None,
            frame_tap=recorder.add_frame if recorder else None,
            analyzer_factory=analyzer_factory,
        )
        self.results = 0
        self.no_words = 0  # utterances without words that a text-only model cannot classify
        self.inference: InferenceStage | None = None
        self.transcription: TranscriptionStage | None = None
        self._channels: list[Channel[Any]] = []
        self._latencies: dict[str, deque[float]] = {}
        self._stop_requested = False

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
        dropped = {ch.name: ch.dropped for ch in self._channels if ch.policy is Policy.DROP_OLDEST}
        dropped.update({r.channel.name: r.channel.dropped for r in self.fanout.runners})
        dropped["no_words"] = self.no_words
        depths = {ch.name: ch.qsize() for ch in self._channels}
        depths.update({r.channel.name: r.channel.qsize() for r in self.fanout.runners})
        return StatsSnapshot(
            elapsed=self.segmentation.position,
            utterances=self.segmentation.utterances,
            results=self.results,
            dropped=dropped,
            queue_depths=depths,
            latency_p50={k: statistics.median(v) for k, v in self._latencies.items() if v},
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
        jobs = [job for job in (asr_job, model_job) if job is not None]
        if jobs:
            await asyncio.gather(*jobs)
            logger.info("models loaded in %.1f s", time.perf_counter() - started)
        transcriber = self.transcriber if asr_job is None else asr_job.result()
        model = self.model if model_job is None else model_job.result()
        assert transcriber is not None and model is not None
        return transcriber, model

    async def run(self) -> StatsSnapshot:
        """Run the session to the end of its source (or :meth:`stop`); returns the final stats."""
        with ThreadPoolExecutor(EXECUTOR_WORKERS, thread_name_prefix="emotrack") as executor:
            await self.fanout.open()  # first: a wrong broker address fails before the models load
            try:
                transcriber, model = await self._load_models(executor)
                await self._run_stages(executor, transcriber, model)
            finally:
                stats = self.snapshot()
                await self.fanout.close(stats)
            return stats

    def _video_channel(self, model: EmotionModel) -> Channel[VideoFrame] | None:
        wanted = model.uses_video or self.recorder is not None
        if not wanted:
            if self.camera is not None:
                logger.warning("this checkpoint does not use video: the camera stays off")
                self.camera = None
            return None
        fps = self.config.sources.camera_fps
        size = int(fps * VIDEO_CHANNEL_SECONDS) + 4
        return Channel("video", size, Policy.DROP_OLDEST)

    async def _run_stages(
        self, executor: ThreadPoolExecutor, transcriber: Transcriber, model: EmotionModel
    ) -> None:
        config = self.config
        audio: Channel[AudioChunk | EndOfStream] = Channel(
            "audio", AUDIO_CHANNEL_SIZE, Policy.BLOCK
        )
        video = self._video_channel(model)
        utterances: Channel[Utterance | EndOfStream] = Channel(
            "utterances", UTTERANCE_CHANNEL_SIZE, Policy.BLOCK
        )
        inbox: Channel[PendingUtterance | EndOfStream] = Channel(
            "inference",
            config.inference.inbox_size,
            inbox_policy(config.inference.overflow, self.source.live),
        )
        self._channels = [audio, utterances, inbox, *([video] if video else [])]
        if video is not None:
            vad = config.vad
            horizon = vad.max_utterance + vad.pre_roll + vad.hangover + 2.0
            self.segmentation.frames = FrameBuffer(horizon)

        turns = config.context.turns
        context = DialogueContext(
            self.session, model.predictor.config.context_turns if turns is None else turns
        )
        asr = self.transcription = TranscriptionStage(transcriber, executor)
        self.inference = InferenceStage(model, executor, max_batch=config.inference.max_batch)
        ctx = SourceContext(self.session, self.clock, executor, audio, video)

        async def on_transcript(item: Transcript | EndOfStream) -> None:
            if isinstance(item, EndOfStream):
                await inbox.put(item)
                return
            if not item.text and not model.uses_audio:
                self.no_words += 1
                logger.info("utterance %d has no words; skipped (text-only model)", item.seq)
            else:
                model_input = context.next_input(item.utterance.speaker, item.text)
                await inbox.put(PendingUtterance(item, model_input))
            self.fanout.update_stats(self.snapshot())

        async def on_result(item: EmotionResult | EndOfStream) -> None:
            if isinstance(item, EndOfStream):
                await self.fanout.end(item)
                return
            self.results += 1
            for stage, seconds in item.latency.items():
                self._latencies.setdefault(stage, deque(maxlen=LATENCY_WINDOW)).append(seconds)
            self.fanout.offer(item)
            self.fanout.update_stats(self.snapshot())

        async def drive_source() -> None:
            await self.source.run(ctx)
            if self.camera is not None:
                self.camera.stop()
            reason = "stopped" if self._stop_requested else "eof"
            await audio.put(EndOfStream(self.session, 0, time.monotonic(), reason))

        self.clock.start()
        logger.info("session %s: %s", self.session, self.source.description)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(drive_source(), name="source")
                if self.camera is not None and video is not None:
                    group.create_task(self.camera.run(ctx), name="camera")
                group.create_task(self.segmentation.run(audio, utterances, video), name="vad")
                group.create_task(asr.run(utterances, on_transcript), name="asr")
                group.create_task(self.inference.run(inbox, on_result), name="inference")
                for runner in self.fanout.runners:
                    group.create_task(runner.run(), name=runner.channel.name)
        except BaseExceptionGroup as group_error:
            errors = group_error.exceptions
            for extra in errors[1:]:
                logger.debug("also failed: %r", extra)
            raise errors[0] from None
