"""Sources: video containers through PyAV, the webcam path through OpenCV, the microphone through
sounddevice on a PulseAudio null sink, and `emotrack live` falling back to the bundled sample."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from rt_support import (
    REPO,
    SCRIPT,
    FakePredictor,
    emotrack_command,
    emotrack_env,
    make_conversation,
    word_error_rate,
)

from realtime.bench import ResultCollector
from realtime.channels import Channel, Policy
from realtime.clock import StreamClock
from realtime.config import AsrOptions, Config
from realtime.inference import EmotionModel
from realtime.messages import SAMPLE_RATE, VideoFrame
from realtime.pipeline import Pipeline
from realtime.sources.base import SourceContext, SourceError
from realtime.sources.files import FileSource
from realtime.sources.webcam import WebcamSource
from unimse.synth import Conversation, parse_script

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing")
TURNS = parse_script(SCRIPT)


@pytest.fixture(scope="module")
def conversation(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Conversation]:
    path = tmp_path_factory.mktemp("conversation") / "conversation.wav"
    return path, make_conversation(path)


@pytest.fixture(scope="module")
def transcriber():  # type: ignore[no-untyped-def]
    from realtime.asr import Transcriber

    return Transcriber.load(AsrOptions())


class FrameCounter:
    """A visual feature extractor stand-in: one 3-d row per frame, remembering frame counts."""

    def __init__(self) -> None:
        self.counts: list[int] = []

    def __call__(self, frames):  # type: ignore[no-untyped-def]
        self.counts.append(len(frames))
        return np.ones((len(frames), 3), np.float32)


def write_movie(
    path: Path,
    audio: np.ndarray,
    *,
    video_codec: str | None = "libx264",
    audio_codec: str = "aac",
    rate: int = 44_100,
    fps: int = 10,
) -> None:
    """Stereo audio (the same speech on both channels) and optionally a video track, with PyAV.

    The video shows a frame counter in its pixels.
    """
    import av
    import soxr

    seconds = len(audio) / SAMPLE_RATE
    resampled = soxr.resample(audio, SAMPLE_RATE, rate).astype(np.float32)
    stereo = np.stack([resampled, resampled])
    with av.open(str(path), "w") as container:  # every stream exists before the first packet
        video = container.add_stream(video_codec, rate=fps) if video_codec else None
        sound = container.add_stream(audio_codec, rate=rate)
        sound.layout = "stereo"
        if video is not None:
            video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
            for i in range(int(seconds * fps)):
                image = np.full((48, 64, 3), i % 250, np.uint8)
                frame = av.VideoFrame.from_ndarray(image, format="bgr24")
                frame.pts, frame.time_base = i, Fraction(1, fps)
                container.mux(video.encode(frame))
            container.mux(video.encode())
        size = sound.codec_context.frame_size or 1024
        sample_format = sound.codec_context.format.name
        for start in range(0, stereo.shape[1], size):
            block = np.zeros((2, size), np.float32)
            piece = stereo[:, start : start + size]
            block[:, : piece.shape[1]] = piece
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = rate, start
            if sample_format != "fltp":
                frame = av.AudioResampler(
                    format=sample_format, layout="stereo", rate=rate
                ).resample(frame)[0]
            container.mux(sound.encode(frame))
        container.mux(sound.encode())


def write_camera_file(path: Path, seconds: float, fps: int = 30) -> None:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    assert writer.isOpened()
    for i in range(int(seconds * fps)):
        writer.write(np.full((48, 64, 3), i % 250, np.uint8))
    writer.release()


@pytest.mark.slow
async def test_video_file_replay_attaches_frames(
    conversation: tuple[Path, Conversation],
    transcriber,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    audio_path, spoken = conversation
    import soundfile as sf

    movie = tmp_path / "talk.mp4"
    write_movie(movie, sf.read(str(audio_path), dtype="float32")[0])
    visual = FrameCounter()
    collector = ResultCollector()
    config = Config().with_overrides({"replay.speed": "max"})
    stats = await Pipeline(
        config,
        source=FileSource(movie),  # PyAV: stereo AAC mixed to mono, H.264 thinned to 5 fps
        sinks=[collector],
        session="movie",
        transcriber=transcriber,
        model=EmotionModel(FakePredictor(visual_dim=3), visual=visual),
    ).run()
    assert stats.utterances == len(TURNS)
    assert all("video" in r.modalities for r in collector.results)
    for count, line in zip(visual.counts, spoken.lines, strict=True):
        expected = (line.end - line.start) * config.sources.camera_fps
        assert abs(count - expected) <= 2
    text = " ".join(r.text for r in collector.results)
    assert word_error_rate(" ".join(t.text for t in TURNS), text) <= 0.25


@pytest.mark.parametrize(
    ("name", "video_codec", "audio_codec", "rate"),
    [
        ("talk.mp4", "libx264", "aac", 44_100),
        ("talk.mkv", "libx264", "aac", 48_000),
        ("talk.webm", "libvpx", "libopus", 48_000),
        ("talk.m4a", None, "aac", 44_100),
        ("talk.mp3", None, "libmp3lame", 44_100),
    ],
)
def test_containers_decode_to_16_khz(
    conversation: tuple[Path, Conversation],
    tmp_path: Path,
    name: str,
    video_codec: str | None,
    audio_codec: str,
    rate: int,
) -> None:
    import soundfile as sf

    from realtime.sources.files import PyAvVideo, open_audio
    from unimse.synth import speech_bounds

    original = sf.read(str(conversation[0]), dtype="float32")[0]
    path = tmp_path / name
    write_movie(path, original, video_codec=video_codec, audio_codec=audio_codec, rate=rate)
    decoder = open_audio(path)
    blocks = []
    while (block := decoder.read(1.0)) is not None:
        blocks.append(block)
    decoder.close()
    decoded = np.concatenate(blocks)
    assert decoded.shape[1] == 2 and decoder.channels == 2
    assert abs(len(decoded) - len(original)) / SAMPLE_RATE < 0.1  # codec padding only
    # The speech sits where it was (codec delay is a few tens of milliseconds).
    first, last = speech_bounds(decoded[:, 0])
    expected_first, expected_last = speech_bounds(original)
    assert abs(first - expected_first) / SAMPLE_RATE < 0.08
    assert abs(last - expected_last) / SAMPLE_RATE < 0.08
    if video_codec is not None:
        video = PyAvVideo(path, fps=5)
        frames = video.read(until=1e9)
        video.close()
        assert abs(len(frames) - int(len(original) / SAMPLE_RATE * 5)) <= 1
        assert frames[0][1].shape == (48, 64, 3)


@pytest.mark.slow
async def test_record_video_then_replay_the_session(
    conversation: tuple[Path, Conversation],
    transcriber,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    import soundfile as sf

    from realtime.recorder import SessionRecorder
    from realtime.sources.session import SessionSource, read_manifest

    movie = tmp_path / "talk.mp4"
    write_movie(movie, sf.read(str(conversation[0]), dtype="float32")[0])
    config = Config().with_overrides({"replay.speed": "max"})
    runs = []
    for source_of in (
        lambda: FileSource(movie),
        lambda: SessionSource(read_manifest(tmp_path / "session")),
    ):
        visual, collector = FrameCounter(), ResultCollector()
        first = not runs
        recorder = (
            SessionRecorder(
                tmp_path / "session",
                session="rec",
                config=config,
                source="talk.mp4",
                channels_as_speakers=False,
            )
            if first
            else None
        )
        await Pipeline(
            config,
            source=source_of(),
            sinks=[collector],
            session="rec",
            recorder=recorder,
            transcriber=transcriber,
            model=EmotionModel(FakePredictor(visual_dim=3), visual=visual),
        ).run()
        runs.append(([(r.start, r.end, r.text) for r in collector.results], visual.counts))
    (recorded, recorded_frames), (replayed, replayed_frames) = runs
    assert len(recorded) == len(TURNS)
    assert replayed == recorded
    assert all(abs(a - b) <= 1 for a, b in zip(recorded_frames, replayed_frames, strict=True))
    manifest = read_manifest(tmp_path / "session")
    assert manifest.video is not None and manifest.video.is_file()


async def test_webcam_reads_a_video_file_at_the_capped_rate(tmp_path: Path) -> None:
    path = tmp_path / "camera.avi"
    write_camera_file(path, seconds=2.0)
    video: Channel[VideoFrame] = Channel("video", 100, Policy.DROP_OLDEST)
    audio: Channel = Channel("audio", 1, Policy.BLOCK)  # type: ignore[type-arg]
    camera = WebcamSource(str(path), fps=5)
    with ThreadPoolExecutor(1) as executor:
        clock = StreamClock(None)
        clock.start()
        await camera.run(SourceContext("cam", clock, executor, audio, video))
    frames = [video.get_nowait() for _ in range(video.qsize())]
    assert camera.frames_read == 60
    assert len(frames) == camera.frames_emitted == 10
    times = [f.time for f in frames]
    assert all(b - a == pytest.approx(0.2, abs=0.034) for a, b in itertools.pairwise(times))
    assert frames[0].image.shape == (48, 64, 3)


async def test_webcam_keeps_only_the_latest_frames(tmp_path: Path) -> None:
    path = tmp_path / "camera.avi"
    write_camera_file(path, seconds=2.0)
    video: Channel[VideoFrame] = Channel("video", 3, Policy.DROP_OLDEST)
    audio: Channel = Channel("audio", 1, Policy.BLOCK)  # type: ignore[type-arg]
    with ThreadPoolExecutor(1) as executor:
        clock = StreamClock(None)
        clock.start()
        await WebcamSource(str(path), fps=5).run(SourceContext("c", clock, executor, audio, video))
    kept = [video.get_nowait().time for _ in range(video.qsize())]
    assert video.dropped == 7
    assert kept == sorted(kept) and kept[-1] > 1.7


async def test_a_missing_camera_is_one_clear_error(tmp_path: Path) -> None:
    audio: Channel = Channel("audio", 1, Policy.BLOCK)  # type: ignore[type-arg]
    video: Channel[VideoFrame] = Channel("video", 1, Policy.DROP_OLDEST)
    with ThreadPoolExecutor(1) as executor:
        ctx = SourceContext("c", StreamClock(1.0), executor, audio, video)
        with pytest.raises(SourceError, match="no such camera or video file"):
            await WebcamSource(str(tmp_path / "nope.avi")).run(ctx)

    with pytest.raises(SourceError, match="no such camera or video file"):  # before models load
        WebcamSource(str(tmp_path / "nope.avi")).check()
    (tmp_path / "notes.avi").write_text("not a video")
    with pytest.raises(SourceError, match="OpenCV cannot read video file"):
        WebcamSource(str(tmp_path / "notes.avi")).check()


@pytest.mark.slow
async def test_camera_frames_reach_the_model(
    conversation: tuple[Path, Conversation],
    transcriber,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """The live camera path (OpenCV) with a video file standing in for the device."""
    audio_path, spoken = conversation
    camera_file = tmp_path / "camera.avi"
    write_camera_file(camera_file, seconds=spoken.duration + 1, fps=10)
    visual = FrameCounter()
    collector = ResultCollector()
    await Pipeline(
        Config().with_overrides({"replay.speed": "4"}),
        source=FileSource(audio_path, video=False),
        camera=WebcamSource(str(camera_file), fps=5),
        sinks=[collector],
        session="camera",
        transcriber=transcriber,
        model=EmotionModel(FakePredictor(visual_dim=3), visual=visual),
    ).run()
    assert len(collector.results) == len(TURNS)
    assert all(r.modalities == ("text", "video") for r in collector.results)
    assert all(count >= 3 for count in visual.counts)


# -- microphone: sounddevice on a PulseAudio null sink ------------------------------------------


@pytest.fixture
def pulse_null_sink() -> Iterator[dict[str, str]]:
    """A private PulseAudio server whose default source is the monitor of a null sink."""
    for tool in ("pulseaudio", "pactl", "paplay"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed: no virtual audio input can be made")
    # A short path: the server's socket lives in it (unix socket paths are limited to ~100 bytes).
    with tempfile.TemporaryDirectory(prefix="pa-") as folder:
        yield from _pulse_server(Path(folder))


def _pulse_server(runtime: Path) -> Iterator[dict[str, str]]:
    runtime.chmod(0o700)
    env = emotrack_env(XDG_RUNTIME_DIR=str(runtime))  # clients find the server through it
    started = subprocess.run(
        [
            "pulseaudio",
            "--start",
            "-n",
            "--exit-idle-time=-1",
            "--daemonize=yes",
            "--load=module-native-protocol-unix",
            "--load=module-null-sink sink_name=emotrack_test",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if started.returncode != 0:
        pytest.skip(f"PulseAudio cannot be started here: {started.stderr.strip()[-300:]}")
    try:
        subprocess.run(
            ["pactl", "set-default-source", "emotrack_test.monitor"],
            env=env,
            check=True,
            timeout=10,
        )
        yield env
    finally:
        subprocess.run(["pulseaudio", "--kill"], env=env, timeout=10, check=False)


@pytest.mark.slow
def test_microphone_through_sounddevice(
    pulse_null_sink: dict[str, str],
    conversation: tuple[Path, Conversation],
    tiny_checkpoint: Path,
    tmp_path: Path,
) -> None:
    audio_path, spoken = conversation
    out = tmp_path / "mic.jsonl"

    async def scenario() -> tuple[int | None, str]:
        process = await asyncio.create_subprocess_exec(
            *emotrack_command(
                "-v",
                "live",
                "--audio-device",
                "pulse",
                "--duration",
                str(spoken.duration + 4),
                "--sink",
                "jsonl",
                "--output",
                str(out),
                "--checkpoint",
                str(tiny_checkpoint),
            ),
            cwd=REPO,
            env=pulse_null_sink,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stderr is not None
        log = []
        while line := (await process.stderr.readline()).decode():
            log.append(line)
            if "capturing" in line:  # the input stream is open: start talking
                break
        else:
            await process.wait()
            return process.returncode, "".join(log)
        player = await asyncio.create_subprocess_exec(
            "paplay", "--device=emotrack_test", str(audio_path), env=pulse_null_sink
        )
        await player.wait()
        rest = await asyncio.wait_for(process.stderr.read(), timeout=60)
        await process.wait()
        return process.returncode, "".join(log) + rest.decode()

    code, log = asyncio.run(scenario())
    assert code == 0, log
    assert "capturing pulse" in log
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(results) == len(TURNS), [r["text"] for r in results]
    text = " ".join(r["text"] for r in results)
    assert word_error_rate(" ".join(t.text for t in TURNS), text) <= 0.25


@pytest.mark.slow
def test_live_without_a_microphone_replays_the_sample(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """No input device here: `live` says so, replays the bundled conversation, and Ctrl-C ends
    it cleanly with what was already said processed, a summary and exit code 130."""
    out = tmp_path / "live.jsonl"
    env = emotrack_env(XDG_RUNTIME_DIR=str(tmp_path))  # no PulseAudio server to be found
    process = subprocess.Popen(
        emotrack_command(
            "-v",
            "live",
            "--sink",
            "jsonl",
            "--output",
            str(out),
            "--checkpoint",
            str(tiny_checkpoint),
        ),
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    try:
        log = []
        for line in process.stderr:
            log.append(line)
            if "session" in line and "conversation.flac" in line:
                break
        # The sample's first turn ends 5.5 s into the stream.
        try:
            process.wait(timeout=7.5)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGINT)
        rest = process.stderr.read()
        # Ended by Ctrl-C after flushing: exit 130 (see `emotrack --help`).
        assert process.wait(timeout=60) == 130, "".join(log) + rest
    finally:
        if process.poll() is None:
            process.kill()
    text = "".join(log) + rest
    assert "no audio input device found; replaying the bundled sample conversation" in text
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert results and results[0]["speaker"] == "Maya"
    assert "utterances" in text and "results" in text  # the closing summary


async def test_any_source_stops_after_its_duration_as_if_its_input_ended() -> None:
    from realtime.sources.base import Source, SourceContext

    class Endless(Source):
        description = "endless"

        async def run(self, ctx: SourceContext) -> None:
            await self._stop.wait()  # a capture device: only a stop ends it

    source = Endless()
    source.duration = 0.05
    ctx = SourceContext("s", StreamClock(), None, Channel("audio", 4, Policy.BLOCK))  # type: ignore[arg-type]
    await asyncio.wait_for(source.capture(ctx), 5.0)
    assert source.stopping
    unlimited = Endless()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(unlimited.capture(ctx), 0.2)
