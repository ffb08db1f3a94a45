"""A server's one Whisper owner batches the utterances of its sessions, with the real tiny.en model
on espeak-ng speech: every transcript, and the encoder states the emotion model reads, are the
ones the utterance gets alone."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from realtime.asr import Transcriber, TranscriptionResult
from realtime.config import AsrOptions
from realtime.messages import SAMPLE_RATE
from realtime.serve.models import AsrBatching, SharedTranscriber

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing"),
]

LINES = [
    ("Good morning. Did you get my message about the launch?", "en-us+m3"),
    ("Yes, I read it last night.", "en-gb+f2"),
    ("Really?", "en-us+m3"),
    ("I am really worried that we will miss the deadline this quarter.", "en-gb+f2"),
    ("Honestly, I think we are in much better shape than last time.", "en-us+m3"),
    ("No way!", "en-gb+f2"),
]


@pytest.fixture(scope="module")
def utterances() -> list[np.ndarray]:
    from unimse.synth import speak

    pad = np.zeros(SAMPLE_RATE // 4, np.float32)
    spoken = [np.concatenate([pad, speak(text, voice), pad]) for text, voice in LINES]
    # A 12 s utterance (a longer encoder window than the others) and 2 s of silence (no words:
    # decoded again the standard way).
    long = np.concatenate([spoken[0], spoken[3], spoken[4], spoken[1]])
    assert len(long) > 11 * SAMPLE_RATE
    return [*spoken, long, np.zeros(2 * SAMPLE_RATE, np.float32)]


@pytest.fixture(scope="module")
def transcriber() -> Transcriber:
    return Transcriber.load(AsrOptions(model="tiny.en", cpu_threads=1))


def same(batched: TranscriptionResult, alone: TranscriptionResult) -> bool:
    states_equal = (batched.states is None and alone.states is None) or (
        batched.states is not None
        and alone.states is not None
        and batched.states.dtype == alone.states.dtype
        and np.array_equal(batched.states, alone.states)
    )
    return (batched.text, batched.language, batched.window) == (
        alone.text,
        alone.language,
        alone.window,
    ) and states_equal


def test_a_batch_transcribes_each_utterance_as_alone(
    transcriber: Transcriber, utterances: list[np.ndarray]
) -> None:
    alone = [transcriber.transcribe(audio) for audio in utterances]
    assert alone[0].text.startswith("Good morning")
    assert alone[-1].text == "" and alone[-1].window == "whisper"
    assert all(r.states is not None for r in alone)  # one encoder pass: text and states
    passes = transcriber.encoder_passes
    batched = transcriber.transcribe_batch(utterances[::-1])[::-1]
    assert [r.text for r in batched] == [r.text for r in alone]
    assert all(same(b, a) for b, a in zip(batched, alone, strict=True))
    assert transcriber.encoder_passes - passes == len(utterances) + 1  # + silence's 30 s window


def test_the_server_whisper_batches_sessions_and_keeps_every_transcript(
    transcriber: Transcriber, utterances: list[np.ndarray]
) -> None:
    alone = [transcriber.transcribe(audio) for audio in utterances]
    # The first utterance waits up to 1 s for the others, sent at once from 8 sessions' threads.
    shared = SharedTranscriber(transcriber, AsrBatching(max_batch=8, max_wait=1.0))
    try:
        with ThreadPoolExecutor(len(utterances)) as pool:
            batched = list(pool.map(shared.transcribe, utterances))
    finally:
        shared.close()
    assert all(same(b, a) for b, a in zip(batched, alone, strict=True)), [
        (b.text, a.text) for b, a in zip(batched, alone, strict=True)
    ]
    stats = shared.stats.to_dict()
    assert stats["utterances"] == len(utterances)
    assert stats["max_batch"] >= 4, stats  # utterances of several sessions went in one batch


def test_a_batch_of_a_tapped_encoder_gives_each_utterance_its_own_states(
    utterances: list[np.ndarray],
) -> None:
    """With the inner layers tapped for the emotion model (the default checkpoint since 1f81006),
    a batch still gives every utterance the text and states it gets alone."""
    tapped = Transcriber.load(AsrOptions(model="tiny.en", cpu_threads=1))
    tapped.tap_encoder((1, 2))
    sample = [utterances[0], utterances[3], utterances[2]]
    alone = [tapped.transcribe(audio) for audio in sample]
    assert all(r.states is not None and r.states.shape[1] == 768 for r in alone)
    batched = tapped.transcribe_batch(sample)
    assert all(same(b, a) for b, a in zip(batched, alone, strict=True))
