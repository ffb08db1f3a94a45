"""The VAD segmenter on synthetic PCM: onset, pre-roll, hangover, minimum and maximum length."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
from rt_support import run_stages

from realtime.channels import Channel, Policy
from realtime.config import VadOptions
from realtime.frames import FrameAttachStage, VideoMergeStage
from realtime.messages import SAMPLE_RATE, AudioChunk, EndOfStream, Utterance, VideoFrame
from realtime.recorder import RecorderTapStage
from realtime.vad import (
    QUIET_S,
    SegmentationStage,
    SpeechSegment,
    VadSegmenter,
    WebRtcVadAnalyzer,
    to_pcm16,
)

FRAME_S = 0.03


class EnergyAnalyzer:
    """Deterministic stand-in for webrtcvad: a 30 ms frame is speech when it is loud."""

    frame_samples = int(SAMPLE_RATE * FRAME_S)

    def is_speech(self, frame: np.ndarray) -> bool:
        return float(np.abs(frame.astype(np.float32)).mean()) > 1000.0


def pcm(*parts: tuple[float, bool]) -> np.ndarray:
    """Concatenated (seconds, loud?) parts: a 220 Hz tone at 0.3 or silence."""
    out = []
    for seconds, loud in parts:
        n = round(seconds * SAMPLE_RATE)
        t = np.arange(n) / SAMPLE_RATE
        out.append((0.3 * np.sin(2 * np.pi * 220 * t) if loud else np.zeros(n)).astype(np.float32))
    return np.concatenate(out)


def segment(audio: np.ndarray, options: VadOptions, chunk_s: float = 0.02) -> list[SpeechSegment]:
    vad = VadSegmenter(options, EnergyAnalyzer())
    step = round(chunk_s * SAMPLE_RATE)
    out: list[SpeechSegment] = []
    for start in range(0, len(audio), step):
        chunk = audio[start : start + step]
        out += vad.push(chunk, start / SAMPLE_RATE, arrived=(start + len(chunk)) / SAMPLE_RATE)
    return out + vad.flush()


OPTIONS = VadOptions(onset=0.09, pre_roll=0.3, hangover=0.6, min_speech=0.25, max_utterance=12.0)


def test_true_times_and_pre_roll() -> None:
    audio = pcm((0.99, False), (1.5, True), (1.5, False))
    [seg] = segment(audio, OPTIONS)
    assert seg.start == pytest.approx(0.99)
    assert seg.end == pytest.approx(2.49)
    # The audio holds 0.3 s of pre-roll, the speech, and 0.3 s of trailing padding.
    assert len(seg.audio) == round((0.3 + 1.5 + 0.3) * SAMPLE_RATE)
    assert np.abs(seg.audio[: round(0.3 * SAMPLE_RATE)]).max() == 0.0
    assert np.abs(seg.audio[round(0.3 * SAMPLE_RATE) :][:480]).max() > 0.2


def test_pre_roll_is_limited_by_the_audio_before_speech() -> None:
    [seg] = segment(pcm((0.06, False), (1.2, True), (1.0, False)), OPTIONS)
    assert seg.start == pytest.approx(0.06)
    assert len(seg.audio) == round((0.06 + 1.2 + 0.3) * SAMPLE_RATE)


def test_pauses_shorter_than_the_hangover_stay_in_one_utterance() -> None:
    audio = pcm((0.3, False), (0.9, True), (0.45, False), (0.9, True), (1.5, False))
    [seg] = segment(audio, OPTIONS)
    assert (seg.start, seg.end) == (pytest.approx(0.3), pytest.approx(2.55))


def test_a_pause_longer_than_the_hangover_splits() -> None:
    audio = pcm((0.3, False), (0.9, True), (0.9, False), (0.9, True), (1.5, False))
    first, second = segment(audio, OPTIONS)
    assert (first.start, first.end) == (pytest.approx(0.3), pytest.approx(1.2))
    assert (second.start, second.end) == (pytest.approx(2.1), pytest.approx(3.0))


def test_the_utterance_closes_exactly_one_hangover_after_speech() -> None:
    audio = pcm((0.3, False), (0.9, True), (2.0, False))
    vad = VadSegmenter(OPTIONS, EnergyAnalyzer())
    step = 320  # 20 ms chunks, arriving at their end time
    closed_at = None
    for start in range(0, len(audio), step):
        chunk = audio[start : start + step]
        now = (start + len(chunk)) / SAMPLE_RATE
        if vad.push(chunk, start / SAMPLE_RATE, arrived=now):
            closed_at, seg = now, vad
            break
    assert closed_at is not None
    end = 1.2
    assert end + 0.6 <= closed_at < end + 0.6 + FRAME_S + 0.02
    assert not seg.speaking


def test_end_of_speech_arrival_time_is_kept() -> None:
    [seg] = segment(pcm((0.3, False), (0.9, True), (1.5, False)), OPTIONS)
    # Chunks "arrive" at their end time: the last voiced frame came with the chunk ending at 1.2 s.
    assert seg.speech_ended_at == pytest.approx(1.2, abs=0.021)


def test_short_bursts_are_discarded_and_counted() -> None:
    vad = VadSegmenter(OPTIONS, EnergyAnalyzer())
    audio = pcm((0.3, False), (0.15, True), (1.5, False))
    assert vad.push(audio, 0.0, 0.0) == []
    assert vad.discarded == 1


def test_isolated_voiced_frames_do_not_open_an_utterance() -> None:
    parts: list[tuple[float, bool]] = []
    for _ in range(10):
        parts += [(0.03, True), (0.27, False)]
    vad = VadSegmenter(OPTIONS, EnergyAnalyzer())
    assert vad.push(pcm(*parts), 0.0, 0.0) == []
    assert not vad.speaking and vad.discarded == 0


def test_long_monologues_are_split_at_the_maximum_length() -> None:
    options = VadOptions(hangover=0.6, max_utterance=3.0)
    segments = segment(pcm((0.3, False), (9.99, True), (1.0, False)), options)
    assert len(segments) == 4
    assert all(s.duration <= 3.0 + 1e-9 for s in segments)
    assert [s.split for s in segments] == [True, True, True, False]
    for before, after in itertools.pairwise(segments):
        assert after.start == pytest.approx(before.end)  # nothing lost between the parts
    assert segments[0].start == pytest.approx(0.3) and segments[-1].end == pytest.approx(10.29)


def test_long_monologues_are_split_at_a_short_pause() -> None:
    options = VadOptions(hangover=0.6, max_utterance=3.0)
    parts: list[tuple[float, bool]] = [(0.3, False)]
    for _ in range(8):
        parts += [(0.81, True), (0.12, False)]  # pauses far shorter than the hangover
    segments = segment(pcm(*parts, (1.0, False)), options)
    assert len(segments) >= 3
    gaps = [(0.3 + k * 0.93 + 0.81, 0.3 + (k + 1) * 0.93) for k in range(8)]
    for before, after in itertools.pairwise(segments):
        # Each cut lies inside a pause: the first part ends where a pause begins.
        assert any(abs(before.end - g0) < 1e-6 and g0 < after.start <= g1 + 1e-6 for g0, g1 in gaps)
        assert before.duration <= 3.0 + 1e-9


def test_chunk_size_does_not_change_the_result() -> None:
    audio = pcm((0.5, False), (1.0, True), (0.3, False), (0.8, True), (1.2, False), (0.7, True))
    reference = [(s.start, s.end, len(s.audio)) for s in segment(audio, OPTIONS, chunk_s=1.0)]
    for chunk_s in (0.007, 0.02, 0.25):
        assert [
            (s.start, s.end, len(s.audio)) for s in segment(audio, OPTIONS, chunk_s)
        ] == reference
    assert len(reference) == 2  # the last burst ends the stream and is closed by flush()


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_webrtcvad_separates_speech_from_silence() -> None:
    from unimse.synth import speak

    analyzer = WebRtcVadAnalyzer(aggressiveness=2, frame_ms=30)
    speech = (speak("The quick brown fox jumps over the lazy dog.", "en-us") * 32767).astype(
        np.int16
    )
    n = analyzer.frame_samples
    frames = [speech[i : i + n] for i in range(0, len(speech) - n, n)]
    voiced = sum(analyzer.is_speech(f) for f in frames) / len(frames)
    assert voiced > 0.6
    assert not analyzer.is_speech(np.zeros(n, dtype=np.int16))


SAMPLE = Path(__file__).resolve().parents[1] / "realtime" / "samples" / "conversation.flac"
# The bundled sample mixed to mono, as webrtcvad (aggressiveness 2, 30 ms) segmented it before its
# models were renewed: the renewal must not change a short stream.
SAMPLE_SEGMENTS = [
    (0.48, 5.58),
    (6.96, 11.22),
    (12.6, 16.74),
    (18.12, 21.48),
    (22.86, 27.9),
    (29.28, 32.07),
    (33.45, 37.26),
    (38.67, 42.03),
]


def sample_mono() -> np.ndarray:
    import soundfile as sf

    audio, rate = sf.read(str(SAMPLE), dtype="float32", always_2d=True)
    assert rate == SAMPLE_RATE
    return audio.mean(axis=1).astype(np.float32)  # as the file source mixes it


def segment_copies(audio: np.ndarray, copies: int) -> list[list[tuple[float, float]]]:
    """(start, end) of the segments of each copy, in copy time, ``copies`` copies in one stream."""
    vad = VadSegmenter(VadOptions())  # the real webrtcvad analyser
    n = len(audio)
    segments: list[SpeechSegment] = []
    for copy in range(copies):
        for offset in range(0, n, SAMPLE_RATE):
            t = (copy * n + offset) / SAMPLE_RATE
            segments += vad.push(audio[offset : offset + SAMPLE_RATE], t, arrived=t)
    segments += vad.flush()
    length = n / SAMPLE_RATE
    per_copy: list[list[tuple[float, float]]] = [[] for _ in range(copies)]
    for s in segments:
        copy = int(s.start // length)
        per_copy[copy].append((round(s.start - copy * length, 2), round(s.end - copy * length, 2)))
    return per_copy


def test_the_bundled_sample_segments_as_before() -> None:
    assert segment_copies(sample_mono(), 1) == [SAMPLE_SEGMENTS]


def test_webrtcvad_does_not_drift_on_digital_silence_in_a_long_stream() -> None:
    """23 minutes of the sample in one stream: every copy splits into the same eight turns.

    Without renewal, webrtcvad's models drifted on the sample's digital silence until copy 28
    (minute 20) on merged the first two turns (all 49 frames of silence between them "speech").
    """
    per_copy = segment_copies(sample_mono(), 32)
    assert [len(segments) for segments in per_copy] == [len(SAMPLE_SEGMENTS)] * 32
    assert per_copy[0] == SAMPLE_SEGMENTS
    # From the second copy on, webrtcvad has adapted to the stream (one end moves by a frame) and
    # stays there.
    assert per_copy[-1] == per_copy[1]


def test_webrtcvad_is_renewed_only_after_digital_silence() -> None:
    import webrtcvad

    tone = to_pcm16(pcm((1.0, True)))
    silence = np.zeros(round(0.5 * SAMPLE_RATE), np.int16)
    stream = np.concatenate([tone, silence] * 20)  # 30 s
    analyzer = WebRtcVadAnalyzer(renew_after=4.0)
    plain = webrtcvad.Vad(2)
    n = analyzer.frame_samples
    frames = [stream[i : i + n] for i in range(0, len(stream) - n + 1, n)]
    renewed_at = []
    same_until_renewed = True
    for index, frame in enumerate(frames):
        before = analyzer.renewals
        decision = analyzer.is_speech(frame)
        if analyzer.renewals > before:
            renewed_at.append(index)
        if not renewed_at:
            same_until_renewed &= decision == plain.is_speech(frame.tobytes(), SAMPLE_RATE)
    assert same_until_renewed
    assert len(renewed_at) >= 5
    quiet = round(QUIET_S / FRAME_S)
    for index in renewed_at:  # inside a silence, at least QUIET_S after it began
        assert not any(frame.any() for frame in frames[index - quiet + 1 : index + 1])
    # The one in use had seen at least 4 s, the standby 2 s, and there is a quiet point every 1.5 s.
    assert 4.0 <= renewed_at[0] * FRAME_S < 4.0 + 2 * 1.5

    always_loud = WebRtcVadAnalyzer(renew_after=4.0)
    for frame in [f for f in frames if f.any()]:
        always_loud.is_speech(frame)
    assert always_loud.renewals == 0


class TapRecorder:
    """Stands in for the session recorder: keeps what the recorder tap hands it."""

    def __init__(self) -> None:
        self.chunks: list[AudioChunk] = []
        self.frames: list[VideoFrame] = []

    def add_audio(self, chunk: AudioChunk) -> None:
        self.chunks.append(chunk)

    def add_frame(self, frame: VideoFrame) -> None:
        self.frames.append(frame)

    def stream_ended(self, reason: str) -> None:
        self.ended = reason


async def test_segmentation_stage_per_channel_speakers_and_frames() -> None:
    """Stereo input: one segmenter per channel; utterances get the frames seen while spoken."""
    left = pcm((0.6, False), (1.2, True), (3.0, False))
    right = pcm((2.4, False), (1.2, True), (1.2, False))
    audio: Channel[AudioChunk | EndOfStream] = Channel("audio", 10_000, Policy.BLOCK)
    video: Channel[VideoFrame] = Channel("video", 100, Policy.DROP_OLDEST)
    recorder = TapRecorder()
    stage = SegmentationStage(
        OPTIONS,
        session="s",
        speaker_of=lambda channel: ("left", "right")[channel],
        analyzer_factory=EnergyAnalyzer,
    )
    stages = [VideoMergeStage(video), RecorderTapStage(recorder), stage, FrameAttachStage(20.0)]
    step, seq = 320, 0
    frame_times = iter(np.arange(0.0, 5.0, 0.2))
    next_frame = next(frame_times)
    for start in range(0, len(left), step):
        t = start / SAMPLE_RATE
        while next_frame is not None and next_frame <= t:
            image = np.zeros((4, 4, 3), np.uint8)
            video.put_nowait(VideoFrame("s", seq, 0.0, image=image, time=float(next_frame)))
            next_frame = next(frame_times, None)
        for channel, signal in enumerate((left, right)):
            chunk = signal[start : start + step]
            audio.put_nowait(AudioChunk("s", seq, t, samples=chunk, start=t, channel=channel))
            seq += 1
    audio.put_nowait(EndOfStream("s", seq, 0.0))
    items = await run_stages(stages, audio)
    assert isinstance(items[-1], EndOfStream)
    utterances = [u for u in items if isinstance(u, Utterance)]
    assert [(u.speaker, u.channel) for u in utterances] == [("left", 0), ("right", 1)]
    assert [u.seq for u in utterances] == [0, 1]
    for u in utterances:
        assert u.frames, "frames seen during the utterance are attached"
        assert all(u.start <= f.time <= u.end for f in u.frames)
        assert u.segmented_at >= u.speech_ended_at > 0
    assert len(recorder.chunks) == seq  # the recorder sees every chunk and frame, and the end
    assert recorder.ended == "eof"
    assert [f.time for f in recorder.frames] == pytest.approx(np.arange(0.0, 4.8, 0.2))
    assert stage.utterances == 2
    assert stage.position == pytest.approx(len(left) / SAMPLE_RATE)
