"""The inference stage: batches what is ready, one owner of the model, features, latency."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest
from rt_support import FakePredictor, run_stages

from realtime.channels import Channel, Policy
from realtime.inference import EmotionModel, InferenceStage
from realtime.messages import (
    EmotionResult,
    EndOfStream,
    PendingUtterance,
    Transcript,
    Utterance,
    VideoFrame,
)
from unimse.inputs import ModelInput


def pending(
    seq: int, text: str = "hello", *, frames: int = 0, t0: float = 100.0
) -> PendingUtterance:
    images = tuple(
        VideoFrame("s", i, t0, image=np.zeros((2, 2, 3), np.uint8), time=seq + 0.1 * i)
        for i in range(frames)
    )
    utterance = Utterance(
        "s",
        seq,
        t0,
        audio=np.zeros(16_000, np.float32),
        start=float(seq),
        end=seq + 0.8,
        speaker="ana",
        frames=images,
        segmented_at=t0 + 0.6,
        speech_ended_at=t0,
    )
    transcript = Transcript(
        "s", seq, t0 + 0.8, utterance=utterance, text=text, transcribed_at=t0 + 0.8
    )
    return PendingUtterance(transcript, ModelInput(text=text, speaker="ana"))


async def run_stage(stage: InferenceStage, inbox: Channel) -> list[EmotionResult | EndOfStream]:  # type: ignore[type-arg]
    return await run_stages([stage], inbox)


@pytest.fixture
def executor():  # type: ignore[no-untyped-def]
    with ThreadPoolExecutor(2) as pool:
        yield pool


async def test_ready_utterances_are_batched_up_to_max_batch(executor: ThreadPoolExecutor) -> None:
    predictor = FakePredictor()
    stage = InferenceStage(EmotionModel(predictor), executor, max_batch=3)
    inbox: Channel[PendingUtterance | EndOfStream] = Channel("inference", 16, Policy.BLOCK)
    for seq in range(5):
        inbox.put_nowait(pending(seq, f"utterance {seq}"))
    inbox.put_nowait(EndOfStream("s", 0, 0.0))
    out = await run_stage(stage, inbox)
    assert stage.batches == [3, 2]
    assert [len(b) for b in predictor.batches] == [3, 2]
    results = [r for r in out if isinstance(r, EmotionResult)]
    assert [r.utterance_seq for r in results] == [0, 1, 2, 3, 4]
    assert [r.seq for r in results] == [0, 1, 2, 3, 4]
    assert isinstance(out[-1], EndOfStream)


async def test_a_backlog_is_classified_in_one_batch(executor: ThreadPoolExecutor) -> None:
    gate = threading.Event()
    predictor = FakePredictor(gate=gate)
    stage = InferenceStage(EmotionModel(predictor), executor, max_batch=8)
    inbox: Channel[PendingUtterance | EndOfStream] = Channel("inference", 16, Policy.BLOCK)
    inbox.put_nowait(pending(0))
    task = asyncio.create_task(run_stage(stage, inbox))
    await asyncio.sleep(0.05)  # the first utterance is now in the model, which is held
    for seq in range(1, 5):
        inbox.put_nowait(pending(seq))
    inbox.put_nowait(EndOfStream("s", 0, 0.0))
    gate.set()
    await task
    assert stage.batches == [1, 4]


async def test_live_overload_drops_the_oldest_and_counts(executor: ThreadPoolExecutor) -> None:
    gate = threading.Event()
    stage = InferenceStage(EmotionModel(FakePredictor(gate=gate)), executor, max_batch=2)
    inbox: Channel[PendingUtterance | EndOfStream] = Channel("inference", 3, Policy.DROP_OLDEST)
    inbox.put_nowait(pending(0))
    task = asyncio.create_task(run_stage(stage, inbox))
    await asyncio.sleep(0.05)
    for seq in range(1, 8):
        await inbox.put(pending(seq))  # never waits: the model is busy, the oldest go
    inbox.put_nowait(EndOfStream("s", 0, 0.0))
    gate.set()
    out = await task
    assert inbox.dropped == 5
    kept = [r.utterance_seq for r in out if isinstance(r, EmotionResult)]
    assert kept == [0, 6, 7]  # the newest survive, in order


async def test_latency_per_stage(executor: ThreadPoolExecutor) -> None:
    stage = InferenceStage(EmotionModel(FakePredictor()), executor, max_batch=4)
    inbox: Channel[PendingUtterance | EndOfStream] = Channel("inference", 4, Policy.BLOCK)
    import time

    t0 = time.monotonic() - 1.0
    inbox.put_nowait(pending(0, "I am so angry", t0=t0))
    inbox.put_nowait(EndOfStream("s", 0, 0.0))
    [result, _end] = await run_stage(stage, inbox)
    assert isinstance(result, EmotionResult)
    assert result.latency["vad"] == pytest.approx(0.6)
    assert result.latency["asr"] == pytest.approx(0.2)
    assert 0.2 - 0.01 <= result.latency["inference"] < 1.0
    assert result.latency["total"] == pytest.approx(
        result.latency["vad"] + result.latency["asr"] + result.latency["inference"]
    )
    assert result.emotion == "anger" and result.model_version == "fake-1"
    assert sum(result.emotion_probs.values()) == pytest.approx(1.0)


async def test_features_only_for_the_modalities_the_checkpoint_uses(
    executor: ThreadPoolExecutor,
) -> None:
    seen_frames: list[int] = []

    def acoustic(audio: np.ndarray) -> np.ndarray:
        return np.ones((len(audio) // 320, 4), np.float32)

    def visual(frames):  # type: ignore[no-untyped-def]
        seen_frames.append(len(frames))
        return np.ones((len(frames), 3), np.float32)

    predictor = FakePredictor(acoustic_dim=4, visual_dim=3)
    stage = InferenceStage(EmotionModel(predictor, acoustic, visual), executor, max_batch=4)
    inbox: Channel[PendingUtterance | EndOfStream] = Channel("inference", 4, Policy.BLOCK)
    inbox.put_nowait(pending(0, frames=3))
    inbox.put_nowait(pending(1, frames=0))  # camera saw nothing: video is masked
    inbox.put_nowait(EndOfStream("s", 0, 0.0))
    out = await run_stage(stage, inbox)
    [first, second] = predictor.batches[0]
    assert first.acoustic is not None and first.acoustic.shape == (50, 4)
    assert first.visual is not None and first.visual.shape == (3, 3)
    assert second.visual is None
    assert seen_frames == [3]
    modalities = [r.modalities for r in out if isinstance(r, EmotionResult)]
    assert modalities == [("text", "audio", "video"), ("text", "audio")]


def test_a_text_only_checkpoint_gets_no_extractors() -> None:
    model = EmotionModel.for_predictor(FakePredictor())
    assert model.acoustic is None and model.visual is None
    assert not model.uses_audio and not model.uses_video


def test_audio_features_can_be_switched_off() -> None:
    from unimse.features import ACOUSTIC_SPEC, VISUAL_SPEC

    predictor = FakePredictor()
    predictor.config = replace(predictor.config, acoustic=ACOUSTIC_SPEC, visual=VISUAL_SPEC)
    assert EmotionModel.for_predictor(predictor).uses_audio
    muted = EmotionModel.for_predictor(predictor, audio=False)
    assert not muted.uses_audio and muted.uses_video


def test_no_audio_features_flag_reaches_the_config() -> None:
    from realtime.cli import build_parser
    from realtime.cli.commands import build_config

    args = build_parser().parse_args(["replay", "x.wav", "--no-audio-features"])
    assert build_config(args).inference.audio is False
    args = build_parser().parse_args(["replay", "x.wav"])
    assert build_config(args).inference.audio is True
