"""The stream protocol (realtime/serve/protocol.py), the MQTT audio source and the cross-session
batcher, without a broker: schemas, chunk checks, sequence numbers, backlog, batching."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from rt_support import FakePredictor, run_stages

from realtime.asr import Transcriber, TranscriptionResult
from realtime.channels import Channel, Policy
from realtime.clock import StreamClock
from realtime.config import AsrOptions, ConfigError
from realtime.inference import EmotionModel
from realtime.messages import AudioChunk, EndOfStream, PendingUtterance, Transcript, Utterance
from realtime.serve.batcher import CrossSessionBatcher
from realtime.serve.models import AsrBatching, SharedTranscriber, TooLate
from realtime.serve.pipeline import DeadlineTranscription
from realtime.serve.protocol import (
    SCHEMAS,
    EndRequest,
    ProtocolError,
    ServerStatus,
    StartRequest,
    Topics,
    check,
    decode_chunk,
    encode_chunk,
    encode_json,
    parse_end,
    parse_start,
    session_hint,
)
from realtime.serve.source import MqttAudioSource
from realtime.sources.base import SourceContext, SourceError
from unimse.inputs import ModelInput

START = StartRequest("s1", 16000, 1, False, ("ana",))


def pcm(ms: int, channels: int = 1, rate: int = 16000, value: int = 1000) -> np.ndarray:
    return np.full((rate * ms // 1000, channels), value, dtype=np.int16)


@pytest.mark.parametrize("name", ["stream_start", "stream_end", "stream_status"])
def test_schemas_are_valid_draft_2020_12(name: str) -> None:
    schema = json.loads((SCHEMAS / f"{name}.v1.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)


def test_messages_follow_their_schemas() -> None:
    start = StartRequest("call-1", 8000, 2, True, ("a", "b"), {"hangover": 0.4}, "pbx")
    assert parse_start(encode_json(start.to_dict())) == start
    resumed = StartRequest("call-1", 16000, 1, False, resume_at=12.3, first_seq=4)
    assert resumed.to_dict()["resume"] == {"at": 12.3, "first_seq": 4}
    assert parse_start(encode_json(resumed.to_dict())) == resumed
    assert resumed.utterance_offset == 4  # a client that does not say: one utterance per result
    numbered = StartRequest("c", 16000, 1, False, resume_at=2.0, first_seq=4, first_utterance_seq=6)
    check("stream_start", numbered.to_dict())
    assert numbered.to_dict()["resume"] == {"at": 2.0, "first_seq": 4, "first_utterance_seq": 6}
    assert parse_start(encode_json(numbered.to_dict())).utterance_offset == 6
    end = EndRequest("call-1", 41, "eof")
    assert parse_end(encode_json(end.to_dict())) == end
    check("stream_status", ServerStatus("call-1", "error", "x", "srv", "wrong_size").to_dict())


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "is not of type 'object'"),
        (b'{"protocol": 1, "session": "a/b", "sample_rate": 16000, "channels": 1}', "session"),
        (b'{"protocol": 1, "session": "a", "sample_rate": 11000, "channels": 1}', "sample_rate"),
        (b'{"protocol": 2, "session": "a", "sample_rate": 16000, "channels": 1}', "protocol"),
        (
            b'{"protocol": 1, "session": "a", "sample_rate": 16000, "channels": 1, '
            b'"options": {"vad_mode": 3}}',
            "vad_mode",
        ),
        (b"x" * 20_000, "bytes"),
    ],
)
def test_bad_start_messages_say_what_is_wrong(payload: bytes, needle: str) -> None:
    with pytest.raises(ProtocolError, match=needle) as caught:
        parse_start(payload)
    assert caught.value.code == "bad_start"
    assert "\n" not in str(caught.value)


def test_session_hint_only_for_a_usable_id() -> None:
    assert session_hint(b'{"session": "s9", "channels": 7}') == "s9"
    assert session_hint(b'{"session": "a/#"}') is None
    assert session_hint(b"garbage") is None


def test_topics() -> None:
    topics = Topics("org/emotrack")
    assert topics.shared_start("g") == "$share/g/org/emotrack/sessions/start"
    assert topics.session_of("org/emotrack/s1/audio") == ("s1", "audio")
    assert topics.session_of("org/emotrack/sessions/start") is None
    assert topics.session_of("other/s1/audio") is None


def test_chunk_round_trip_and_size_rules() -> None:
    stereo = StartRequest("s", 8000, 2, True)
    samples = np.arange(8000 * 2 // 50, dtype=np.int16).reshape(-1, 2)  # 20 ms
    chunk = decode_chunk(encode_chunk(7, samples), stereo)
    assert chunk.seq == 7
    np.testing.assert_allclose(chunk.samples * 32768.0, samples)
    with pytest.raises(ProtocolError, match="whole number") as odd:
        decode_chunk(encode_chunk(1, samples)[:-1], stereo)
    assert odd.value.code == "wrong_size"
    with pytest.raises(ProtocolError, match=r"10\.0 ms"):
        decode_chunk(encode_chunk(1, pcm(10)), START)
    with pytest.raises(ProtocolError, match=r"120\.0 ms"):
        decode_chunk(encode_chunk(1, pcm(120)), START)
    with pytest.raises(ProtocolError, match="not protocol 1") as garbage:
        decode_chunk(b"garbage!" + bytes(640), START)
    assert garbage.value.code == "bad_chunk"
    with pytest.raises(ProtocolError, match="no header"):
        decode_chunk(b"EA", START)


async def run_source(source: MqttAudioSource) -> list[AudioChunk]:
    """Run the source to its end; the chunks it emitted."""
    audio: Channel[AudioChunk] = Channel("audio", 10_000, Policy.BLOCK)
    with ThreadPoolExecutor(1) as executor:
        ctx = SourceContext("s1", StreamClock(1.0), executor, audio)  # type: ignore[arg-type]
        await asyncio.wait_for(source.run(ctx), 10)
    return [audio.get_nowait() for _ in range(audio.qsize())]


async def test_source_reports_bad_chunks_and_keeps_the_good_ones() -> None:
    errors: list[ProtocolError] = []
    source = MqttAudioSource(START, on_error=errors.append)
    source.feed(encode_chunk(0, pcm(20)))
    source.feed(b"\x00garbage")
    source.feed(encode_chunk(1, pcm(20))[:-1])  # wrong size
    source.feed(encode_chunk(1, pcm(40)))
    source.feed(encode_chunk(1, pcm(20)))  # again: late
    source.feed(encode_chunk(4, pcm(20)))  # 2 and 3 missing
    source.end(EndRequest("s1", 4))
    source.feed(encode_chunk(5, pcm(20)))  # after the end
    chunks = await run_source(source)
    assert [c.seq for c in chunks] == [0, 1, 2]
    assert [round(c.start, 3) for c in chunks] == [0.0, 0.02, 0.06]
    assert [e.code for e in errors] == [
        "bad_chunk",
        "wrong_size",
        "late_chunk",
        "out_of_order",
        "late_chunk",
    ]
    counters = source.counters
    assert (counters.chunks, counters.rejected, counters.late, counters.missing) == (3, 2, 2, 2)


async def test_source_waits_for_every_chunk_up_to_last_seq() -> None:
    source = MqttAudioSource(START, on_error=lambda exc: None)
    source.end(EndRequest("s1", 1))  # the end overtook the audio
    source.feed(encode_chunk(0, pcm(20)))
    running = asyncio.ensure_future(run_source(source))
    await asyncio.sleep(0.05)
    assert not running.done()
    source.feed(encode_chunk(1, pcm(20)))
    assert len(await running) == 2


async def test_source_resamples_and_keeps_channels_as_speakers() -> None:
    start = StartRequest("s1", 48000, 2, True)
    source = MqttAudioSource(start, on_error=lambda exc: None)
    for seq in range(10):
        source.feed(encode_chunk(seq, pcm(20, channels=2, rate=48000)))
    source.end(EndRequest("s1", 9))
    chunks = await run_source(source)
    assert {c.channel for c in chunks} == {0, 1}
    per_channel = sum(len(c.samples) for c in chunks if c.channel == 0)
    assert 0.15 * 16000 <= per_channel <= 0.2 * 16000  # 200 ms at 16 kHz, less the filter delay


async def test_source_drops_beyond_its_backlog_and_says_so() -> None:
    errors: list[ProtocolError] = []
    source = MqttAudioSource(START, on_error=errors.append, max_backlog=0.1)
    for seq in range(10):
        source.feed(encode_chunk(seq, pcm(20)))
    source.end(EndRequest("s1", 9))
    chunks = await run_source(source)
    assert len(chunks) == 5 and source.counters.dropped == 5
    assert [e.code for e in errors] == ["audio_dropped"]


async def test_idle_source_ends_with_an_error() -> None:
    errors: list[ProtocolError] = []
    source = MqttAudioSource(START, on_error=errors.append, idle_timeout=0.1)
    with pytest.raises(SourceError, match=r"no audio for 0\.1 s"):
        await run_source(source)
    assert [e.code for e in errors] == ["idle"]


def pending(text: str) -> PendingUtterance:
    utterance = Utterance("s", 0, 0.0, audio=np.zeros(160, np.float32))
    return PendingUtterance(Transcript("s", 0, 0.0, utterance, text), ModelInput(text=text))


def test_batcher_merges_waiting_requests_of_several_sessions() -> None:
    gate = threading.Event()
    predictor = FakePredictor(gate=gate)
    batcher = CrossSessionBatcher(EmotionModel(predictor), max_batch=8)
    try:
        with ThreadPoolExecutor(4) as pool:
            first = pool.submit(batcher.classify, [pending("hello")])
            time.sleep(0.1)  # the owner thread is now busy with the first request
            later = [pool.submit(batcher.classify, [pending(w), pending(w)]) for w in "abc"]
            time.sleep(0.1)
            gate.set()
            assert len(first.result(10)) == 1
            assert all(len(f.result(10)) == 2 for f in later)
        assert [len(b) for b in predictor.batches] == [1, 6]
        assert [i.text for i in predictor.batches[1]] == ["a", "a", "b", "b", "c", "c"]
        assert batcher.stats.to_dict()["merged_requests"] == 2
    finally:
        batcher.close()


def test_batcher_off_runs_one_request_per_pass_and_passes_errors_on() -> None:
    predictor = FakePredictor()
    batcher = CrossSessionBatcher(EmotionModel(predictor), max_batch=8, enabled=False)
    try:
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(batcher.classify, [pending(w)]) for w in "abcd"]
            assert all(len(f.result(10)) == 1 for f in futures)
        assert [len(b) for b in predictor.batches] == [1, 1, 1, 1]
        with pytest.raises(AttributeError):  # the model's error reaches the session that asked
            batcher.classify([None])  # type: ignore[list-item]
    finally:
        batcher.close()


class FakeTranscriber(Transcriber):
    """Says how many samples it heard; records the batches it was given."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        super().__init__(model=None, options=AsrOptions(), path=Path("."))
        self.gate = gate
        self.batches: list[list[int]] = []

    def transcribe_batch(self, audios: Sequence[np.ndarray]) -> list[TranscriptionResult]:
        if self.gate is not None:
            self.gate.wait(10)
        self.batches.append([len(audio) for audio in audios])
        return [TranscriptionResult(f"heard {len(a)}", "en", 0.0, "utterance") for a in audios]


async def test_a_server_session_drops_utterances_that_waited_too_long_for_whisper() -> None:
    now = time.monotonic()
    late = Utterance("s", 0, now, audio=np.zeros(160, np.float32), speech_ended_at=now - 9.0)
    timely = Utterance("s", 1, now, audio=np.zeros(160, np.float32), speech_ended_at=now)
    inbox: Channel[object] = Channel("utterances", 10, Policy.BLOCK)
    for item in (late, timely, EndOfStream("s", 0, now)):
        inbox.put_nowait(item)
    with ThreadPoolExecutor(1) as executor:
        stage = DeadlineTranscription(FakeTranscriber(), executor, max_delay=4.0)
        out = await run_stages([stage], inbox)
    assert [m.utterance.seq for m in out if isinstance(m, Transcript)] == [1]
    assert stage.expired == 1


async def test_chunks_are_timed_as_due_in_real_time_and_lag_is_measured() -> None:
    source = MqttAudioSource(START, on_error=lambda exc: None)
    source.feed(encode_chunk(0, pcm(20)), arrived=100.0)
    source.feed(encode_chunk(1, pcm(40)), arrived=100.5)  # read late: due at 100.02
    assert source.lag == pytest.approx(0.48)
    source.feed(encode_chunk(2, pcm(20)), arrived=100.01)  # early (a burst): its arrival
    assert source.lag == 0.0
    source.end(EndRequest("s1", 2))
    chunks = await run_source(source)
    assert [c.monotonic for c in chunks] == pytest.approx([100.0, 100.02, 100.01])


def test_the_shared_whisper_refuses_a_call_that_got_it_after_its_deadline() -> None:
    shared = SharedTranscriber(FakeTranscriber())
    audio = np.zeros(160, np.float32)
    assert shared.transcribe(audio, deadline=time.monotonic() + 10).text == "heard 160"
    with pytest.raises(TooLate):
        shared.transcribe(audio, deadline=time.monotonic() - 0.1)
    assert shared.stats.expired == 1
    shared.close()


def test_the_shared_whisper_says_how_long_calls_wait_now() -> None:
    gate = threading.Event()
    shared = SharedTranscriber(FakeTranscriber(gate))
    audio = np.zeros(160, np.float32)
    assert shared.waiting_for() == 0.0
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(shared.transcribe, audio)
        time.sleep(0.05)
        second = pool.submit(shared.transcribe, audio)  # waits for the first
        time.sleep(0.2)
        assert shared.waiting_for() >= 0.15
        gate.set()
        first.result(10), second.result(10)
    assert shared.waiting_for() == 0.0  # nothing waits: no stale figure
    shared.close()


def test_the_shared_whisper_batches_the_utterances_of_sessions_waiting() -> None:
    gate = threading.Event()
    fake = FakeTranscriber(gate)
    shared = SharedTranscriber(fake, AsrBatching(max_batch=3, max_wait=0.0))
    now = time.monotonic()
    try:
        with ThreadPoolExecutor(6) as pool:
            first = pool.submit(shared.transcribe, np.zeros(100, np.float32))
            time.sleep(0.1)  # the owner is busy with the first utterance
            sizes = (101, 102, 103, 104, 105)
            later = []
            for n in sizes:  # one utterance per session, in this order
                later.append(pool.submit(shared.transcribe, np.zeros(n, np.float32), now + 30))
                time.sleep(0.02)
            late = pool.submit(shared.transcribe, np.zeros(106, np.float32), now - 1)
            time.sleep(0.1)
            gate.set()
            assert first.result(10).text == "heard 100"
            assert [f.result(10).text for f in later] == [f"heard {n}" for n in sizes]
            with pytest.raises(TooLate):
                late.result(10)
        assert fake.batches == [[100], [101, 102, 103], [104, 105]]  # in order, at most 3
        stats = shared.stats.to_dict()
        assert (stats["mean_batch"], stats["max_batch"], stats["expired"]) == (2.0, 3, 1)
    finally:
        shared.close()


def test_the_shared_whisper_waits_a_bounded_time_for_a_batch_to_fill() -> None:
    fake = FakeTranscriber()
    shared = SharedTranscriber(fake, AsrBatching(max_batch=4, max_wait=0.3))
    try:
        with ThreadPoolExecutor(2) as pool:
            started = time.perf_counter()
            first = pool.submit(shared.transcribe, np.zeros(100, np.float32))
            time.sleep(0.1)  # joins the first one's batch: the owner waits 0.3 s for company
            second = pool.submit(shared.transcribe, np.zeros(101, np.float32))
            first.result(10), second.result(10)
            waited = time.perf_counter() - started
        assert fake.batches == [[100, 101]]
        assert 0.25 <= waited < 2.0  # waited for the batch to fill, but not beyond max_wait
        alone = time.perf_counter()
        shared.transcribe(np.zeros(102, np.float32))
        assert 0.25 <= time.perf_counter() - alone < 2.0
    finally:
        shared.close()
    unbatched = SharedTranscriber(fake := FakeTranscriber(), AsrBatching(enabled=False))
    try:
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(unbatched.transcribe, [np.zeros(n, np.float32) for n in (1, 2, 3)]))
        assert [len(b) for b in fake.batches] == [1, 1, 1]
    finally:
        unbatched.close()


@pytest.mark.parametrize(("max_batch", "max_wait"), [(0, 0.02), (4, -0.01), (4, 5.0)])
def test_whisper_batching_options_are_checked(max_batch: int, max_wait: float) -> None:
    with pytest.raises(ConfigError, match="--asr-batch"):
        AsrBatching(max_batch=max_batch, max_wait=max_wait)
