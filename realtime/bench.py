"""``emotrack bench latency``: per-stage and end-to-end latency at real-time pace.

A conversation is synthesised with espeak-ng from a script, so the true end of every utterance's
speech is known. It is replayed at real time through the full pipeline (VAD, Whisper, context,
UniMSE) to an MQTT sink on a Mosquitto broker started for the run on a free loopback port, and a
subscriber in the same process timestamps every result it receives. End to end is measured from
the true end of speech to that reception. The VAD's end-of-speech hangover is a configured wait,
so it is reported separately and subtracted for the target (p95 <= 1.0 s for utterances <= 6 s).

With the speculative close (``vad.speculative``) an utterance may get several results: the one
that counts is its final one (the last revision; the speculative result itself when it was
confirmed), and end to end is measured, hangover included, to its reception (target p95 <= 0.5 s);
the report also gives the reception of the first result, of the confirmation, and how many
speculative results were revised. Unless ``--speculative`` or ``--no-speculative`` is given, the
command measures both, one after the other, with the same loaded models.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from realtime.cli.exits import EXIT_INTERRUPTED
from realtime.config import Config, ConfigError
from realtime.messages import EmotionResult, StatsSnapshot
from realtime.mosquitto import LOOPBACK, find_mosquitto, free_port, write_config
from realtime.sinks.base import Sink, SinkError
from unimse.argtypes import AT_LEAST_ONE
from unimse.synth import Conversation, ScriptLine, parse_script, synthesize, write_audio

if TYPE_CHECKING:
    from realtime.pipeline import Pipeline

logger = logging.getLogger(__name__)

TARGET_P95_S = 1.0  # end to end minus hangover, utterances up to 6 s, 2-core CPU
TARGET_SPECULATIVE_P95_S = 0.5  # with the speculative close: end to end, endpointing included

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
        type=AT_LEAST_ONE,
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
            start_new_session=True,  # a Ctrl-C at the terminal is ours to handle, not the broker's
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
            with contextlib.suppress(ProcessLookupError):  # it may have ended on its own
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
    speculative: float | None = None  # the speculative close's silence, when it was on

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
    def target(self) -> tuple[str, float]:
        """The stage whose p95 is held to a target, and the target (seconds)."""
        if self.speculative is not None:
            return "end_to_end", TARGET_SPECULATIVE_P95_S
        return "end_to_end_minus_hangover", TARGET_P95_S

    @property
    def passed(self) -> bool:
        stage, target = self.target
        values = self.stages.get(stage) or []
        return bool(values) and float(np.percentile(values, 95)) <= target

    def to_dict(self) -> dict[str, Any]:
        return {
            "speculative": self.speculative,
            "hangover": self.hangover,
            "utterances_expected": self.utterances_expected,
            "utterances_detected": self.utterances_detected,
            "max_speech_s": self.max_speech_s,
            "latency": self.summary(),
            "target_p95_s": self.target[1],
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
        if self.speculative is not None:
            rows[0] = ("vad", "VAD: end of speech -> utterance (speculative) closed")
            rows[-2] = ("end_to_end", "end to end: true end of speech -> final result")
            rows[-1] = ("first_result", "true end of speech -> first result (may be revised)")
            rows.append(("confirmation", "true end of speech -> its confirmation"))
        summary = self.summary()
        mode = "off" if self.speculative is None else f"after {self.speculative:.2f} s of silence"
        out = [
            f"utterances: {self.utterances_detected} detected / {self.utterances_expected} "
            f"spoken (longest {self.max_speech_s:.1f} s of speech)",
            f"hangover (configured end-of-speech wait): {self.hangover:.2f} s; "
            f"speculative close: {mode}",
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
        if "speculative_results" in self.stats:
            out.append(
                f"speculative results: {self.stats['speculative_results']}, revised "
                f"{self.stats['revised']} (revision rate {self.stats['revision_rate']:.1%}), "
                f"confirmed {self.stats['confirmed']}"
            )
        verdict = "PASS" if self.passed else "FAIL"
        what = "end to end minus hangover" if self.speculative is None else "end to end"
        out += ["", f"target: p95 {what} <= {self.target[1]:.1f} s: {verdict}"]
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
        confirmed: dict[int, float] = {}  # utterance_seq -> arrival of its confirmation
        status: list[dict[str, Any]] = []
        partials: dict[float, list[float]] = {}  # speech start -> arrival of each interim result
        everything = asyncio.Event()
        expected: list[int] = []  # results, confirmations: known once the pipeline has ended

        def complete() -> bool:
            return bool(expected) and (len(received), len(confirmed)) >= tuple(expected)

        async with aiomqtt.Client(LOOPBACK, port, identifier=f"{session}-subscriber") as client:
            await client.subscribe(f"{options.prefix}/{session}/#", qos=1)

            async def listen() -> None:
                async for message in client.messages:
                    now = time.monotonic()
                    payload = json.loads(bytes(message.payload))
                    if str(message.topic).endswith("/utterance"):
                        received.setdefault(int(payload["seq"]), now)
                    elif str(message.topic).endswith("/confirmed"):
                        confirmed.setdefault(int(payload["utterance_seq"]), now)
                    elif str(message.topic).endswith("/partial"):
                        partials.setdefault(float(payload["start"]), []).append(now)
                    elif str(message.topic).endswith("/status"):  # not speaker_revised
                        status.append(payload)
                    if complete():
                        everything.set()

            listener = asyncio.create_task(listen())
            try:
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
                delivery = pipeline.delivery
                expected.extend([stats.results + delivery.rereads, delivery.confirmed])
                if complete():
                    everything.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(everything.wait(), timeout=10)
            finally:  # also on Ctrl-C: the listener must not outlive its client
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await listener

    origin = pipeline.clock.origin
    hangover = config.vad.hangover
    finals = _finals(collector.results)
    report = LatencyReport(
        hangover=hangover,
        utterances_expected=len(conversation.lines),
        utterances_detected=len(finals),
        max_speech_s=max(line.end - line.start for line in conversation.lines),
        status_received=bool(status),
        stats={
            "results": stats.results,
            "rereads": pipeline.delivery.rereads,  # revisions of earlier results, not counted in
            "dropped": stats.dropped,
            **_encoder_use(pipeline),
            **_speaker_use(pipeline, collector.results),
            **_partial_cadence(partials),
            **_speculation(pipeline),
        },
        speculative=config.vad.speculative_silence if config.vad.speculative else None,
    )
    stages: dict[str, list[float]] = {
        k: []
        for k in ("vad", "asr", "inference", "delivery", "end_to_end", "end_to_end_minus_hangover")
    }
    if report.speculative is not None:
        stages.update(first_result=[], confirmation=[])
        del stages["end_to_end_minus_hangover"]
    for result, first in finals:
        if result.seq not in received:
            logger.warning("result %d never reached the subscriber", result.seq)
            continue
        spoken_end = origin + conversation.lines[_match(result, conversation)].end
        arrived = received[result.seq]
        for stage in ("vad", "asr", "inference"):
            stages[stage].append(result.latency[stage])
        stages["delivery"].append(arrived - result.monotonic)
        stages["end_to_end"].append(arrived - spoken_end)
        if report.speculative is None:
            stages["end_to_end_minus_hangover"].append(arrived - spoken_end - hangover)
            continue
        stages["first_result"].append(received.get(first.seq, arrived) - spoken_end)
        if result.utterance_seq in confirmed:
            stages["confirmation"].append(confirmed[result.utterance_seq] - spoken_end)
    report.stages = stages
    return report


def _finals(results: Sequence[EmotionResult]) -> list[tuple[EmotionResult, EmotionResult]]:
    """Per utterance, in order: its final result (the last revision by more speech, not a
    re-read) and its first one."""
    versions: dict[int, list[EmotionResult]] = {}
    for result in (r for r in results if not r.reread):  # a re-read comes with a later utterance
        versions.setdefault(result.utterance_seq, []).append(result)
    return [(max(v, key=lambda r: r.revision), v[0]) for v in versions.values()]


def _speculation(pipeline: Pipeline) -> dict[str, Any]:
    """With the speculative close: speculative results delivered, how many were revised (the
    speaker went on) and confirmed."""
    delivery = pipeline.delivery
    if not delivery.speculative:
        return {}
    return {
        "speculative_results": delivery.speculative,
        "revised": delivery.revised,
        "confirmed": delivery.confirmed,
        "revision_rate": delivery.revised / delivery.speculative,
    }


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
    script = turns * args.repeat
    # Both modes, one after the other with the same models, unless one was asked for.
    given = hasattr(args, "vad.speculative")
    modes = [config.vad.speculative] if given else [False, True]
    try:
        reports = _measure_modes(config, script, modes)
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("emotrack bench latency: interrupted; nothing measured", file=sys.stderr)
        return EXIT_INTERRUPTED
    print("\n\n".join(report.render() for report in reports))
    if len(reports) == 2:
        print(_comparison(*reports))
    if args.json:
        if len(reports) == 1:
            print(json.dumps(reports[0].to_dict()))
        else:
            without, with_ = (report.to_dict() for report in reports)
            print(json.dumps({"without_speculative": without, "with_speculative": with_}))
    return 0


def _measure_modes(
    config: Config, script: list[ScriptLine], modes: list[bool]
) -> list[LatencyReport]:
    """One latency run per speculative mode of ``modes``, the models loaded once for both."""
    reports: list[LatencyReport] = []
    with tempfile.TemporaryDirectory(prefix="emotrack-bench-") as tmp:
        conversation, audio_path = prepare_conversation(script, Path(tmp))
        transcriber, model = _load_models(config) if len(modes) > 1 else (None, None)
        for speculative in modes:
            run = config.with_overrides({"vad.speculative": speculative})
            _reset_counters(transcriber, model)
            reports.append(
                asyncio.run(
                    measure_latency(
                        run,
                        conversation,
                        audio_path,
                        Path(tmp),
                        transcriber=transcriber,
                        model=model,
                    )
                )
            )
    return reports


def _load_models(config: Config) -> tuple[Any, Any]:
    """Whisper and the emotion model, loaded once for both runs (blocking)."""
    from realtime.asr import Transcriber
    from realtime.inference import load_model

    transcriber, model = Transcriber.load(config.asr), load_model(config.inference)
    model.share_encoder(transcriber)
    return transcriber, model


def _reset_counters(transcriber: Any, model: Any) -> None:
    """Each run reports its own encoder use."""
    if transcriber is not None:
        transcriber.encoder_passes = 0
    if model is not None:
        model.shared_states = model.extracted = 0


def _comparison(without: LatencyReport, with_: LatencyReport) -> str:
    """One line: the final result's p50 / p95 end to end in both runs."""
    a, b = without.summary().get("end_to_end"), with_.summary().get("end_to_end")
    if a is None or b is None:
        return ""
    rate = with_.stats.get("revision_rate", 0.0)
    return (
        f"\nend of speech -> final result, p50 / p95: {a['p50']:.3f} / {a['p95']:.3f} s without "
        f"the speculative close, {b['p50']:.3f} / {b['p95']:.3f} s with it "
        f"(revision rate {rate:.1%})"
    )
