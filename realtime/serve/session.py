"""One session of a server: its configuration, its audio source, its MQTT sink and its pipeline.

Every session runs today's stages (:class:`~realtime.serve.pipeline.ServePipeline`: latency
bounded before the shared Whisper) with the process's shared models. Its results and retained
online/offline status go out through its own :class:`~realtime.sinks.mqtt.MqttSink` connection,
whose last will turns the session ``offline`` ("connection lost") when the server process dies.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from realtime.config import Config
from realtime.messages import (
    EmotionResult,
    PartialResult,
    SpeakerRevision,
    UtteranceConfirmed,
)
from realtime.mqtt_options import MqttOptions
from realtime.serve.models import SharedModels
from realtime.serve.pipeline import ServePipeline
from realtime.serve.protocol import ProtocolError, StartRequest
from realtime.serve.source import MqttAudioSource
from realtime.sinks.base import SinkError
from realtime.sinks.mqtt import MqttSink
from realtime.sources.base import SourceError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionLimits:
    idle_timeout: float = 30.0  # seconds without audio before the server ends a session
    max_backlog: float = 5.0  # seconds of audio waiting for the VAD before audio is dropped
    asr_queue: int = 4  # utterances waiting for the shared Whisper; the oldest beyond are dropped
    max_delay: float = 4.0  # an utterance whose speech ended longer ago is not transcribed


@dataclass(frozen=True)
class SessionOutcome:
    """How a session ended (the ``ended`` status): ``reason`` as the pipeline's EndOfStream, or
    ``failed: ...``; the counters of its source and pipeline."""

    reason: str
    failed: bool
    stats: dict[str, Any]


def session_config(base: Config, start: StartRequest) -> Config:
    """The server's configuration with what the start message sets for this session (raises
    :class:`~realtime.config.ConfigError` for values the configuration refuses)."""
    overrides: dict[str, Any] = {
        "session": start.session,
        "sources.channels_as_speakers": start.channels_as_speakers,
    }
    if start.speakers:
        overrides["sources.speakers"] = list(start.speakers)
    for key, value in start.options.items():
        overrides[f"vad.{key}"] = int(value) if key == "aggressiveness" else value
    return base.with_overrides(overrides)


def session_mqtt(mqtt: MqttOptions, session: str) -> MqttOptions:
    """The session sink's MQTT options: its own client id (derived from the server's, if any)."""
    client_id = None if mqtt.client_id is None else f"{mqtt.client_id}-{session}"
    return dataclasses.replace(mqtt, client_id=client_id)


class SessionSink(MqttSink):
    """The session's MQTT sink. A session taken over from a lost server numbers and times what it
    publishes as the first server would have: results from ``first_seq``, utterances
    (``utterance_seq``, also in speaker revisions and confirmations) from ``first_utterance``,
    times on the session's own clock (``resume_at`` later)."""

    def __init__(
        self,
        *,
        session: str,
        options: MqttOptions,
        resume_at: float,
        first_seq: int,
        first_utterance: int,
    ):
        super().__init__(session=session, options=options)
        self.resume_at = resume_at
        self.first_seq = first_seq
        self.first_utterance = first_utterance

    async def publish(self, result: EmotionResult) -> None:
        await super().publish(
            dataclasses.replace(
                result,
                seq=result.seq + self.first_seq,
                utterance_seq=result.utterance_seq + self.first_utterance,
                start=result.start + self.resume_at,
                end=result.end + self.resume_at,
            )
        )

    async def revise(self, revision: SpeakerRevision) -> None:
        utterance = revision.utterance_seq + self.first_utterance
        await super().revise(dataclasses.replace(revision, utterance_seq=utterance))

    async def confirm(self, confirmation: UtteranceConfirmed) -> None:
        utterance = confirmation.utterance_seq + self.first_utterance
        await super().confirm(dataclasses.replace(confirmation, utterance_seq=utterance))

    async def partial(self, result: PartialResult) -> None:
        later = self.resume_at
        await super().partial(
            dataclasses.replace(result, start=result.start + later, end=result.end + later)
        )


class ServeSession:
    """A started session; :meth:`run` returns once its results are all published."""

    def __init__(
        self,
        start: StartRequest,
        config: Config,
        models: SharedModels,
        *,
        on_error: Callable[[ProtocolError], None],
        limits: SessionLimits,
    ) -> None:
        self.start = start
        self.source = MqttAudioSource(
            start,
            on_error=on_error,
            idle_timeout=limits.idle_timeout,
            max_backlog=limits.max_backlog,
        )
        self.sink = SessionSink(
            session=start.session,
            options=session_mqtt(config.sinks.mqtt, start.session),
            resume_at=start.resume_at,
            first_seq=start.first_seq,
            first_utterance=start.utterance_offset,
        )
        self.pipeline = ServePipeline(
            config,
            source=self.source,
            sinks=[self.sink],
            session=start.session,
            transcriber=models.transcriber,
            model=models.model,
            asr_queue=limits.asr_queue,
            max_delay=limits.max_delay,
        )

    @property
    def behind(self) -> float:
        """How far behind real time this session is: its audio waiting to be segmented, or how
        late its latest chunk was read (0 when it keeps up)."""
        return max(self.source.backlog_seconds, self.source.lag)

    def stop(self) -> None:
        self.pipeline.stop()

    async def run(self) -> SessionOutcome:
        failed = False
        try:
            await self.pipeline.run()
            reason = self.pipeline.end_reason or "eof"
        except SourceError as exc:  # idle: what it had was still delivered
            reason = f"error: {exc}"
        except SinkError as exc:
            failed, reason = True, f"failed: {exc}"
            logger.warning("session %s: %s", self.start.session, exc)
        if reason == "eof" and self.source.end_reason not in (None, "eof"):
            reason = str(self.source.end_reason)
        elif reason == "stopped":  # only the server stops a session
            reason = "stopped: the server is shutting down"
        return SessionOutcome(reason, failed, self._stats())

    def _stats(self) -> dict[str, Any]:
        counters = dataclasses.asdict(self.source.counters)
        stats = self.pipeline.stats
        pipeline: dict[str, Any] = {}
        if stats is not None:
            pipeline = {
                "utterances": stats.utterances,
                "results": stats.results,
                "results_dropped": sum(stats.dropped.values())
                - stats.dropped.get("no_words", 0)
                + self.pipeline.expired,
            }
        return {
            **{f"audio_{key}": value for key, value in counters.items()},
            **pipeline,
            "mqtt_sent": self.sink.sent,
            "mqtt_unsent": self.sink.unsent + self.sink.dropped,
        }
