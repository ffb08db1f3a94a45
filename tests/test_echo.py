"""Echo of the remote side on the microphone during a live call (issue 12): detected and dropped,
while the local speaker's own utterances, alone or over the remote voice, are kept."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from realtime.config import VadOptions
from realtime.echo import EchoFilterStage, EchoOptions, ReferenceAudio, echo_match
from realtime.messages import SAMPLE_RATE, AudioChunk, EndOfStream, Utterance

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


def chunk(start: float, samples: np.ndarray, channel: int = 1) -> AudioChunk:
    return AudioChunk("s", 0, 0.0, samples=samples, start=start, channel=channel)


def test_reference_audio_keeps_its_last_seconds_on_the_stream_clock() -> None:
    reference = ReferenceAudio(keep=1.5)
    for second in range(3):
        reference.add(chunk(second, np.full(SAMPLE_RATE, second + 1, np.float32)))
    span = reference.span(0.5, 2.5)
    assert len(span) == 2 * SAMPLE_RATE
    assert span[0] == 0.0  # second 0 is forgotten: silence
    assert span[SAMPLE_RATE // 2 + 10] == 2.0 and span[-1] == 3.0


def test_a_silent_reference_matches_nothing() -> None:
    noise = np.random.default_rng(0).standard_normal(SAMPLE_RATE).astype(np.float32) * 0.1
    assert echo_match(noise, np.zeros(SAMPLE_RATE + 4800, np.float32)) == 0.0
    assert echo_match(noise, np.concatenate([np.zeros(3200, np.float32), noise])) > 0.99


def test_the_stage_passes_other_channels_and_messages() -> None:
    reference = ReferenceAudio(keep=5.0)
    stage = EchoFilterStage(reference, VadOptions().pre_roll)
    remote = Utterance("s", 0, 0.0, audio=np.ones(SAMPLE_RATE, np.float32), channel=1)
    pushed: list[object] = []

    async def push(item: object) -> None:
        pushed.append(item)

    stage.push = push  # type: ignore[method-assign]
    asyncio.run(stage.process(remote))
    asyncio.run(stage.process(EndOfStream("s", 1, 0.0)))
    assert pushed == [remote, EndOfStream("s", 1, 0.0)]


@needs_espeak
@pytest.mark.parametrize("reference_lag", [0.0, 0.4])
def test_echo_is_dropped_and_the_local_speaker_kept(reference_lag: float) -> None:
    """Also where the remote side's capture lags the microphone's (0.4 s: every echo was kept
    before EchoOptions.max_lag)."""
    import echo as bench  # benchmarks/echo.py: the same calls the measurement uses

    call = bench.build_call(bench.SETS["test"], 0.3, 0.5, 0.12)
    counts = bench.measure(call, EchoOptions(), reference_lag)
    assert counts[("echo only", "dropped")] >= 2 and counts[("echo only", "kept")] == 0
    assert counts[("local only", "kept")] == 2 and counts[("local only", "dropped")] == 0
    assert counts[("local + echo", "dropped")] == 0
