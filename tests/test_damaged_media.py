"""Damaged media: what was read is kept and delivered, the damage is one line, never a traceback.

The pipeline runs with the real file decoders, resampling and VAD, and with stand-ins for Whisper
and the emotion model (one result per utterance), so hundreds of files take seconds. The real
command on a corrupt FLAC is in ``test_exit_codes.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from media_damage import SAMPLE, make_corpus
from rt_support import FakePredictor

from realtime.asr import TranscriptionResult
from realtime.config import AsrOptions, Config
from realtime.inference import EmotionModel
from realtime.messages import EmotionResult, StatsSnapshot
from realtime.pipeline import Pipeline
from realtime.recorder import MANIFEST, SessionRecorder
from realtime.sinks.base import Sink
from realtime.sources.base import MediaReadError, SourceError
from realtime.sources.files import FileSource, open_audio

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg missing")

HANGOVER = Config().vad.hangover


class FakeTranscriber:
    """Whisper's stand-in: every utterance says the same words, at once."""

    options = AsrOptions()
    states_key = "none"  # it gives no encoder states: the emotion model computes its own

    def tap_encoder(self, layers: tuple[int, ...]) -> None:
        """No encoder to tap."""

    def transcribe(self, audio: np.ndarray) -> TranscriptionResult:
        return TranscriptionResult("some words", "en", 0.0, "utterance", None)


class Collect(Sink):
    name = "collect"

    def __init__(self) -> None:
        self.results: list[EmotionResult] = []

    async def open(self) -> None:
        return None

    async def publish(self, result: EmotionResult) -> None:
        self.results.append(result)

    async def close(self, stats: StatsSnapshot) -> None:
        return None


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@dataclass
class Outcome:
    spans: list[tuple[float, float]] = field(default_factory=list)  # (start, end) per result
    error: SourceError | None = None
    warnings: list[str] = field(default_factory=list)
    end_reason: str | None = None
    manifest: dict | None = None  # type: ignore[type-arg]


def replay(
    path: Path, *, speed: str = "max", record: Path | None = None, config: Config | None = None
) -> Outcome:
    """Replay ``path`` as the command does (check, then run); anything but a SourceError
    propagates, and so fails the test."""
    config = (config or Config()).with_overrides({"replay.speed": speed})
    sink = Collect()
    handler = Records()
    logging.getLogger("realtime").addHandler(handler)
    outcome = Outcome()
    try:
        source = FileSource(path, video=False)
        recorder = (
            SessionRecorder(
                record, session="t", config=config, source="t", channels_as_speakers=False
            )
            if record is not None
            else None
        )
        pipeline = Pipeline(
            config,
            source=source,
            sinks=[sink],
            session="t",
            recorder=recorder,
            transcriber=FakeTranscriber(),  # type: ignore[arg-type]
            model=EmotionModel.for_predictor(FakePredictor()),
        )
        try:
            asyncio.run(pipeline.run())
        finally:
            outcome.end_reason = pipeline.end_reason
    except SourceError as exc:
        outcome.error = exc
    finally:
        logging.getLogger("realtime").removeHandler(handler)
    outcome.spans = [(r.start, r.end) for r in sink.results]
    outcome.warnings = handler.messages
    if record is not None and (record / MANIFEST).is_file():
        outcome.manifest = json.loads((record / MANIFEST).read_text())
    return outcome


def decoded(path: Path) -> np.ndarray:
    """The 16 kHz mono audio the source emits for ``path``, up to where decoding fails."""
    blocks = []
    try:
        audio = open_audio(path)
    except SourceError:
        return np.zeros(0, np.float32)
    try:
        while (block := audio.read(1.0)) is not None:
            blocks.append(block.mean(axis=1))
    except Exception:
        pass
    finally:
        audio.close()
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def good_until(damaged: np.ndarray, original: np.ndarray) -> float:
    """Seconds of ``damaged`` that equal the original, from the start."""
    n = min(len(damaged), len(original))
    differs = np.flatnonzero(np.abs(damaged[:n] - original[:n]) > 1e-6)
    return (differs[0] if len(differs) else n) / 16_000


def one_line(text: str) -> bool:
    return bool(text) and "\n" not in text and len(text) < 400


# --- the corrupt FLAC of the issue ----------------------------------------------------------------


@pytest.fixture(scope="module")
def corrupt_flac(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled sample with junk over 4 KB in the middle (about 20 s in)."""
    data = bytearray(SAMPLE.read_bytes())
    rng = np.random.default_rng(1)
    middle = len(data) // 2
    data[middle : middle + 4000] = rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()
    path = tmp_path_factory.mktemp("corrupt") / "corrupt.flac"
    path.write_bytes(bytes(data))
    return path


def test_corrupt_flac_delivers_the_good_part_then_fails(corrupt_flac: Path, tmp_path: Path) -> None:
    reference = replay(SAMPLE)
    assert reference.error is None and len(reference.spans) == 8
    outcome = replay(corrupt_flac, record=tmp_path / "session")
    assert isinstance(outcome.error, MediaReadError) and one_line(str(outcome.error))
    at = outcome.error.at
    assert 15 < at < 25, at
    before = [span for span in reference.spans if span[1] + HANGOVER < at]
    assert len(before) >= 3 and outcome.spans[: len(before)] == before
    assert outcome.end_reason == f"error: {outcome.error}"
    assert outcome.manifest is not None
    assert outcome.manifest["complete"] is False
    assert outcome.manifest["end"] == outcome.end_reason
    assert outcome.manifest["audio"]["seconds"] == pytest.approx(at, abs=0.05)
    assert len(outcome.manifest["utterances"]) == len(outcome.spans)


def test_corrupt_flac_at_a_paced_speed_marks_the_recording_incomplete(
    corrupt_flac: Path, tmp_path: Path
) -> None:
    """Paced replay (the issue saw ``complete: true`` at real time): same outcome."""
    fast = replay(corrupt_flac)
    paced = replay(corrupt_flac, speed="20", record=tmp_path / "session")
    assert isinstance(paced.error, MediaReadError)
    assert paced.spans == fast.spans and paced.spans
    assert paced.manifest is not None and paced.manifest["complete"] is False


def test_a_clean_file_records_a_complete_session(tmp_path: Path) -> None:
    outcome = replay(SAMPLE, record=tmp_path / "session")
    assert outcome.error is None and outcome.warnings == []
    assert outcome.manifest is not None
    assert outcome.manifest["complete"] is True and outcome.manifest["end"] == "eof"


# --- suspicious input: a one-line warning ---------------------------------------------------------


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from media_damage import make_originals

    return make_originals(tmp_path_factory.mktemp("originals"), 12.0)


def test_a_wav_header_in_front_of_random_data_is_noise(
    originals: dict[str, Path], tmp_path: Path
) -> None:
    data = originals["wav"].read_bytes()
    start = data.index(b"data") + 8
    path = tmp_path / "random.wav"
    path.write_bytes(data[:start] + np.random.default_rng(0).bytes(len(data) - start))
    outcome = replay(path)
    assert outcome.error is None
    assert [w for w in outcome.warnings if "sounds like noise, not speech" in w]
    assert all(one_line(w) for w in outcome.warnings)
    assert replay(originals["wav"]).warnings == []  # speech is not noise


@pytest.mark.parametrize("ext", ["wav", "mp3", "webm"])
def test_a_file_cut_short_says_so(originals: dict[str, Path], tmp_path: Path, ext: str) -> None:
    """The header says 12 s, the file holds about 6: results for what is there, and a warning."""
    data = originals[ext].read_bytes()
    path = tmp_path / f"half.{ext}"
    path.write_bytes(data[: len(data) // 2])
    outcome = replay(path)
    assert outcome.error is None and outcome.spans
    short = [w for w in outcome.warnings if "but its header says 12.0 s" in w]
    assert len(short) == 1 and one_line(short[0]), outcome.warnings


@pytest.mark.parametrize("ext", ["mp3", "m4a"])
@pytest.mark.parametrize("at", [0.1, 0.5, 0.9])
def test_junk_in_a_compressed_stream_is_skipped_and_the_rest_plays(
    originals: dict[str, Path], tmp_path: Path, ext: str, at: float
) -> None:
    """1.5 KB of junk inside an MP3 or AAC stream: the packets it hits are skipped, silence
    takes their time, and every result of the undamaged file is there, at its time (but one
    whose speech the damage hit)."""
    data = originals[ext].read_bytes()
    where = int(len(data) * at)
    junk = bytes(random.Random(where).randrange(256) for _ in range(1500))
    path = tmp_path / f"junk{at}.{ext}"
    path.write_bytes(data[:where] + junk + data[where + len(junk) :])
    outcome = replay(path)
    assert outcome.error is None
    audio, reference = decoded(path), decoded(originals[ext])
    n = min(len(audio), len(reference))
    differs = np.flatnonzero(np.abs(audio[:n] - reference[:n]) > 1e-6) / 16_000
    hit = (differs[0] - HANGOVER - 0.1, differs[-1] + 0.1) if len(differs) else (0.0, 0.0)
    spans = replay(originals[ext]).spans
    assert len(outcome.spans) == len(spans)
    for got, want in zip(outcome.spans, spans, strict=True):
        assert got == want or (want[0] < hit[1] and hit[0] < want[1]), (got, want, hit)
    damaged = [w for w in outcome.warnings if "could not be decoded" in w]
    assert len(damaged) == 1 and one_line(damaged[0]), outcome.warnings
    assert "silence stands in for it" in damaged[0]
    assert len(audio) == pytest.approx(len(reference), abs=0.1 * 16_000)


def test_damaged_float_samples_are_silenced_with_a_warning(tmp_path: Path) -> None:
    import soundfile as sf

    audio = np.zeros(16_000 * 2, np.float32)
    audio[100:200] = np.nan
    audio[300:400] = np.inf
    path = tmp_path / "float.wav"
    sf.write(path, audio, 16_000, subtype="FLOAT")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy warning about casting NaN
        outcome = replay(path)
    assert outcome.error is None
    assert [w for w in outcome.warnings if "200 samples are not numbers" in w]


def test_float_audio_in_the_wrong_units_is_clipped_with_a_warning(tmp_path: Path) -> None:
    """Float samples in PCM units (x 1000 here) clip almost everywhere: said, not silent."""
    import soundfile as sf

    t = np.arange(16_000 * 2) / 16_000
    speechlike = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    for scale, warned in ((1000.0, True), (1.0, False)):
        path = tmp_path / f"scaled{scale:g}.wav"
        sf.write(path, speechlike * scale, 16_000, subtype="FLOAT")
        outcome = replay(path)
        assert outcome.error is None
        clipped = [w for w in outcome.warnings if "beyond full scale" in w]
        assert bool(clipped) is warned, outcome.warnings


# --- fail fast: checked before anything opens or loads --------------------------------------------


def test_unusable_media_fail_before_sinks_open_or_models_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "junk.flac"
    path.write_bytes(b"not a flac file at all" * 10)
    opened = []

    class Watch(Collect):
        async def open(self) -> None:
            opened.append(True)

    async def no_models(*args: object) -> None:
        raise AssertionError("models loaded for unusable media")

    monkeypatch.setattr(Pipeline, "_load_models", no_models)
    pipeline = Pipeline(Config(), source=FileSource(path), sinks=[Watch()], session="t")
    started = time.perf_counter()
    with pytest.raises(SourceError, match=r"cannot read audio file .*junk\.flac"):
        asyncio.run(pipeline.run())
    assert time.perf_counter() - started < 2.0 and not opened


def test_a_header_without_audio_is_an_error(originals: dict[str, Path], tmp_path: Path) -> None:
    data = originals["wav"].read_bytes()
    path = tmp_path / "header-only.wav"
    path.write_bytes(data[: data.index(b"data") + 8])
    with pytest.raises(SourceError, match=r"holds no audio|cannot read audio file"):
        FileSource(path).check()


def test_a_folder_that_is_no_session_says_what_a_session_holds(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as error:
        FileSource(tmp_path)
    message = str(error.value)
    assert message.startswith(f"not a file: {tmp_path}")
    for name in ("manifest.json", "audio.wav", "results.jsonl"):
        assert name in message


# --- the fuzz test --------------------------------------------------------------------------------


@pytest.mark.slow
def test_fuzz_damaged_media(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Over 200 damaged WAV, FLAC, MP3, M4A and WebM files: never anything but a SourceError
    (so never a traceback), every warning and error one line, and every result of the audio
    before the damage kept, as the undamaged original gave it."""
    originals, corpus = make_corpus(tmp_path, seconds=12.0)
    assert len(corpus) >= 200
    reference = {}
    for ext, path in originals.items():
        outcome = replay(path)
        assert outcome.error is None and outcome.warnings == [], (ext, outcome)
        assert len(outcome.spans) == 2, (ext, outcome.spans)
        reference[path] = (outcome.spans, decoded(path))
    counts = {"files": len(corpus), "ok": 0, "warned": 0, "errored": 0, "error at start": 0}
    per_format = {ext: [0, 0, 0] for ext in originals}  # errored / warned / silent
    kept = after = 0  # the original's results before the damage, and after it
    started = time.perf_counter()
    for item in corpus:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a Python warning would be more lines on stderr
            outcome = replay(item.path)
        name = item.path.name
        assert all(one_line(w) for w in outcome.warnings), (name, outcome.warnings)
        if outcome.error is not None:
            assert one_line(str(outcome.error)), name
            counts["errored"] += 1
            per_format[item.path.suffix[1:]][0] += 1
            if not isinstance(outcome.error, MediaReadError):
                counts["error at start"] += 1
                assert not outcome.spans, name
        elif outcome.warnings:
            counts["warned"] += 1
            per_format[item.path.suffix[1:]][1] += 1
        else:
            counts["ok"] += 1
            per_format[item.path.suffix[1:]][2] += 1
        spans, audio = reference[item.original]
        good = good_until(decoded(item.path), audio)
        before = [span for span in spans if span[1] + HANGOVER + 0.1 < good]
        assert outcome.spans[: len(before)] == before, (name, good, outcome)
        kept += len(before)
        after += len([span for span in spans[len(before) :] if span in outcome.spans])
    elapsed = time.perf_counter() - started
    with capsys.disabled():
        print(
            f"\nfuzz: {counts}, results before the damage kept: {kept}, after it: {after}, "
            f"{elapsed:.1f} s; errored / warned / silent per format: {per_format}"
        )


def test_a_whole_audio_file_missing_or_unreadable_is_named_in_one_line(tmp_path: Path) -> None:
    """`emotrack stream FILE` and `--enroll NAME=FILE` read their files whole: "System error"
    was all libsndfile said of a missing one."""
    from realtime.serve.audio_input import read_pcm
    from realtime.speakers.enrol import EnrolmentError, read_clip

    junk = tmp_path / "notes.wav"
    junk.write_text("not audio")
    cases = [
        (tmp_path / "gone.wav", f"no such audio file: {tmp_path / 'gone.wav'}"),
        (tmp_path, f"not a file: {tmp_path}"),
        (junk, f"cannot read audio file {junk}: "),
    ]
    for path, message in cases:
        with pytest.raises(SourceError) as error:
            read_pcm(path)
        assert str(error.value).startswith(message) and "\n" not in str(error.value)
    with pytest.raises(EnrolmentError, match=r"^no such enrolment clip: "):
        read_clip(tmp_path / "gone.wav")
