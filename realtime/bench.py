"""``emotrack bench latency``: per-stage and end-to-end latency at real-time pace.

A conversation is synthesised with espeak-ng from a script, so the true end of every utterance's
speech is known. It is replayed at real time through the full pipeline (VAD, Whisper, context,
UniMSE) to an MQTT sink on a Mosquitto broker started for the run on a free loopback port, and a
subscriber in the same process timestamps every result it receives. End to end is measured from
the true end of speech to that reception. The VAD's end-of-speech hangover is a configured wait,
so it is reported separately and subtracted for the target (p95 <= 1.0 s for utterances <= 6 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from realtime.config import Config, ConfigError
from realtime.messages import EmotionResult, StatsSnapshot
from realtime.mosquitto import LOOPBACK, find_mosquitto, free_port, write_config
from realtime.sinks.base import Sink, SinkError
from unimse.synth import Conversation, ScriptLine, parse_script, synthesize, write_audio

if TYPE_CHECKING:
    from realtime.pipeline import Pipeline

logger = logging.getLogger(__name__)

TARGET_P95_S = 1.0  # end to end minus hangover, utterances up to 6 s, 2-core CPU

# Utterances of about 1 to 6 seconds of speech, separated by pauses longer than any sane hangover.
BENCH_TURNS = (
    ScriptLine("Ana", "Good morning. Did you get my message about the launch?", 1.6),
    ScriptLine("Ben", "Yes, I read it last night.", 1.6),
    ScriptLine("Ana", "I am really worried that we will miss the deadline this quarter.", 1.6),
    ScriptLine("Ben", "Honestly, I think we are in much better shape than last time.", 1.6),
    ScriptLine("Ana", "Really?", 1.6),
    ScriptLine(
        "Ben",
        "The tests are passing, the reviews are done, and the installer finally works on every "
        "machine we support.",
        1.6,
    ),
    ScriptLine("Ana", "That is wonderful news. Thank you so much for pushing it through.", 1.6),
    ScriptLine("Ben", "No problem at all.", 1.6),
    ScriptLine(
        "Ana",
        "Let us meet again on Thursday morning, go through the open issues one by one, and decide "
        "if we are ready.",
        1.6,
    ),
    ScriptLine("Ben", "Sounds good to me.", 1.6),
)


def add_latency_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("benchmark")
    group.add_argument(
        "--script",
        metavar="FILE",
        help="conversation script ('Speaker: text' lines, '[pause S]' lines); "
        "default: a built-in two-speaker script of 10 utterances of 1-6 s",
    )
    group.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="play the script N times in a row, for more samples (default 1)",
    )
    group.add_argument("--json", action="store_true", help="end with one JSON line of every number")


# -- a broker of our own --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def mosquitto_broker(workdir: Path, attempts: int = 3) -> AsyncIterator[int]:
    """Run ``mosquitto`` on a free loopback port, yielding the port once its log says it runs."""
    binary = find_mosquitto()
    if binary is None:
        raise SinkError("the benchmark needs the Mosquitto broker (apt-get install mosquitto)")
    for attempt in range(attempts):
        port = free_port()
        conf = write_config(
            workdir / "mosquitto.conf",
            port,
            extra="log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n"
            "log_type information",
        )
        process = await asyncio.create_subprocess_exec(
            binary,
            "-c",
            str(conf),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,  # its log: line by line (stdout would be buffered)
        )
        assert process.stderr is not None
        log: list[str] = []
        ready = False
        while line := (await process.stderr.readline()).decode(errors="replace"):
            log.append(line.rstrip())
            if " running" in line:
                ready = True
                break
        if not ready:
            await process.wait()
            if attempt == attempts - 1:
                raise SinkError(f"mosquitto did not start: {' / '.join(log[-3:])}")
            continue
        drain = asyncio.create_task(_drain(process.stderr))
        try:
            yield port
        finally:
            process.terminate()
            await process.wait()
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain
        return


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


# -- measurement ----------------------------------------------------------------------------


class ResultCollector(Sink):
    """Keeps every result in memory (the benchmark needs their creation times)."""

    name = "collector"

    def __init__(self) -> None:
        self.results: list[EmotionResult] = []

    async def open(self) -> None:
        self.results.clear()

    async def publish(self, result: EmotionResult) -> None:
        self.results.append(result)

    async def close(self, stats: StatsSnapshot) -> None:
        return None


@dataclass
class LatencyReport:
    hangover: float
    utterances_expected: int
    utterances_detected: int
    max_speech_s: float
    stages: dict[str, list[float]] = field(default_factory=dict)  # seconds per utterance
    status_received: bool = False
    stats: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            name: {
                "p50": float(np.percentile(values, 50)),
                "p95": float(np.percentile(values, 95)),
                "max": float(np.max(values)),
            }
            for name, values in self.stages.items()
            if values
        }

    @property
    def passed(self) -> bool:
        values = self.stages.get("end_to_end_minus_hangover") or []
        return bool(values) and float(np.percentile(values, 95)) <= TARGET_P95_S

    def to_dict(self) -> dict[str, Any]:
        return {
            "hangover": self.hangover,
            "utterances_expected": self.utterances_expected,
            "utterances_detected": self.utterances_detected,
            "max_speech_s": self.max_speech_s,
            "latency": self.summary(),
            "target_p95_s": TARGET_P95_S,
            "passed": self.passed,
            "status_received": self.status_received,
            "stats": self.stats,
        }

    def render(self) -> str:
        rows = [
            ("vad", "VAD: end of speech -> utterance closed (includes the hangover)"),
            ("asr", "ASR: utterance closed -> transcript"),
            ("inference", "context + UniMSE (queue, features, forward pass)"),
            ("delivery", "MQTT: result -> subscriber"),
            ("end_to_end", "end to end: true end of speech -> subscriber"),
            ("end_to_end_minus_hangover", "end to end minus the hangover"),
        ]
        summary = self.summary()
        out = [
            f"utterances: {self.utterances_detected} detected / {self.utterances_expected} "
            f"spoken (longest {self.max_speech_s:.1f} s of speech)",
            f"hangover (configured end-of-speech wait): {self.hangover:.2f} s",
            "",
            f"{'stage':<58}{'p50':>8}{'p95':>8}{'max':>8}",
        ]
        for key, label in rows:
            if key in summary:
                s = summary[key]
                out.append(f"{label:<58}{s['p50']:>8.3f}{s['p95']:>8.3f}{s['max']:>8.3f}")
        if "acoustic_from_asr" in self.stats:
            out.append(
                f"acoustic input: {self.stats['acoustic_from_asr']} utterances reused the ASR's "
                f"encoder states, {self.stats['acoustic_extracted']} computed their own "
                f"(Whisper encoder passes for ASR: {self.stats['asr_encoder_passes']})"
            )
        if "partial_interval" in self.stats:
            gaps = self.stats["partial_interval"]
            out.append(
                f"interim results: {self.stats['partials']}, received every {gaps['p50']:.3f} s "
                f"(p50), {gaps['p95']:.3f} s (p95), {gaps['max']:.3f} s (max) during an utterance"
            )
        if "speakers" in self.stats:
            out.append(
                f"diarisation: {self.stats['speakers']} speakers, "
                f"{self.stats['speaker_revisions']} revisions, voice print "
                f"{self.stats['voice_print_ms']:.0f} ms per utterance (mean, while Whisper runs)"
            )
        verdict = "PASS" if self.passed else "FAIL"
        out += ["", f"target: p95 end to end minus hangover <= {TARGET_P95_S:.1f} s: {verdict}"]
        return "\n".join(out)


def _encoder_use(pipeline: Pipeline) -> dict[str, int]:
    """How often the Whisper encoder ran: per ASR call, and for the emotion model's features."""
    if pipeline.inference is None or pipeline.transcription is None:
        return {}
    model = pipeline.inference.model
    return {
        "acoustic_from_asr": model.shared_states,
        "acoustic_extracted": model.extracted,
        "asr_encoder_passes": pipeline.transcription.transcriber.encoder_passes,
    }


def _speaker_use(pipeline: Pipeline, results: Sequence[EmotionResult]) -> dict[str, Any]:
    """With diarisation: speakers found, revisions, mean voice-print time."""
    stage = pipeline.speakers
    if stage is None or not stage.embedded:
        return {}
    final = {r.utterance_seq: r.speaker for r in results}
    for revision in stage.revisions:
        if revision.utterance_seq in final:
            final[revision.utterance_seq] = revision.new
    return {
        "speakers": len(set(final.values())),
        "speaker_revisions": len(stage.revisions),
        "voice_print_ms": 1000 * stage.embed_seconds / stage.embedded,
    }


def _partial_cadence(partials: dict[float, list[float]]) -> dict[str, Any]:
    """With --partial: how many interim results arrived, and the seconds between consecutive
    ones of the same utterance (as the MQTT subscriber received them)."""
    if not partials:
        return {}
    gaps = [float(b - a) for times in partials.values() for a, b in itertools.pairwise(times)]
    out: dict[str, Any] = {"partials": sum(len(t) for t in partials.values())}
    if gaps:
        out["partial_interval"] = {
            "p50": float(np.percentile(gaps, 50)),
            "p95": float(np.percentile(gaps, 95)),
            "max": float(np.max(gaps)),
            "count": len(gaps),
        }
    return out


def _match(result: EmotionResult, conversation: Conversation) -> int:
    """Index of the spoken line that overlaps the result's speech most."""
    overlaps = [
        min(result.end, line.end) - max(result.start, line.start) for line in conversation.lines
    ]
    return int(np.argmax(overlaps))


def prepare_conversation(script: Sequence[ScriptLine], workdir: Path) -> tuple[Conversation, Path]:
    """Synthesise the script (blocking: espeak-ng) and write it as a wav file in ``workdir``."""
    conversation = synthesize(script)
    return conversation, write_audio(workdir / "bench.wav", conversation.audio)


async def measure_latency(
    config: Config,
    conversation: Conversation,
    audio_path: Path,
    workdir: Path,
    *,
    transcriber: Any = None,
    model: Any = None,
) -> LatencyReport:
    """Replay a synthesised conversation at real time to MQTT, and time every stage."""
    import aiomqtt

    from realtime.pipeline import Pipeline
    from realtime.sinks.mqtt import MqttSink
    from realtime.sources.files import FileSource

    session = f"bench-{int(time.time())}"
    async with mosquitto_broker(workdir) as port:
        config = config.with_overrides(
            {
                "sinks.mqtt.host": LOOPBACK,
                "sinks.mqtt.port": port,
                "replay.speed": "realtime",
                "sources.channels_as_speakers": False,
            }
        )
        options = config.sinks.mqtt
        received: dict[int, float] = {}
        status: list[dict[str, Any]] = []
        partials: dict[float, list[float]] = {}  # speech start -> arrival of each interim result
        everything = asyncio.Event()
        expected: list[int] = []

        async with aiomqtt.Client(LOOPBACK, port, identifier=f"{session}-subscriber") as client:
            await client.subscribe(f"{options.prefix}/{session}/#", qos=1)

            async def listen() -> None:
                async for message in client.messages:
                    now = time.monotonic()
                    payload = json.loads(bytes(message.payload))
                    if str(message.topic).endswith("/utterance"):
                        received.setdefault(int(payload["seq"]), now)
                        if expected and len(received) >= expected[0]:
                            everything.set()
                    elif str(message.topic).endswith("/partial"):
                        partials.setdefault(float(payload["start"]), []).append(now)
                    elif str(message.topic).endswith("/status"):  # not speaker_revised
                        status.append(payload)

            listener = asyncio.create_task(listen())
            collector = ResultCollector()
            pipeline = Pipeline(
                config,
                source=FileSource(audio_path, video=False),
                sinks=[MqttSink(session=session, options=options), collector],
                session=session,
                transcriber=transcriber,
                model=model,
            )
            stats = await pipeline.run()
            expected.append(stats.results)
            if len(received) >= stats.results:
                everything.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(everything.wait(), timeout=10)
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    origin = pipeline.clock.origin
    hangover = config.vad.hangover
    report = LatencyReport(
        hangover=hangover,
        utterances_expected=len(conversation.lines),
        utterances_detected=len(collector.results),
        max_speech_s=max(line.end - line.start for line in conversation.lines),
        status_received=bool(status),
        stats={
            "results": stats.results,
            "dropped": stats.dropped,
            **_encoder_use(pipeline),
            **_speaker_use(pipeline, collector.results),
            **_partial_cadence(partials),
        },
    )
    stages: dict[str, list[float]] = {
        k: []
        for k in ("vad", "asr", "inference", "delivery", "end_to_end", "end_to_end_minus_hangover")
    }
    for result in collector.results:
        if result.seq not in received:
            logger.warning("result %d never reached the subscriber", result.seq)
            continue
        line = conversation.lines[_match(result, conversation)]
        arrived = received[result.seq]
        end_to_end = arrived - (origin + line.end)
        for stage in ("vad", "asr", "inference"):
            stages[stage].append(result.latency[stage])
        stages["delivery"].append(arrived - result.monotonic)
        stages["end_to_end"].append(end_to_end)
        stages["end_to_end_minus_hangover"].append(end_to_end - hangover)
    report.stages = stages
    return report


def run_latency_command(args: argparse.Namespace, config: Config) -> int:
    turns: list[ScriptLine] = list(BENCH_TURNS)
    if args.script:
        path = Path(args.script).expanduser()
        if not path.is_file():
            raise ConfigError(f"no such script file: {path}")
        try:
            turns = parse_script(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ConfigError(f"bad benchmark script: {exc}") from None
    script = turns * max(1, args.repeat)
    with tempfile.TemporaryDirectory(prefix="emotrack-bench-") as tmp:
        conversation, audio_path = prepare_conversation(script, Path(tmp))
        report = asyncio.run(measure_latency(config, conversation, audio_path, Path(tmp)))
    print(report.render())
    if args.json:
        print(json.dumps(report.to_dict()))
    return 0
