"""``--record DIR``: keep a session so that ``emotrack replay DIR`` reproduces it.

The folder holds ``audio.wav`` (16 kHz 32-bit float, one channel per speaker channel: a bit-exact
copy of what the VAD and Whisper saw, so a replay transcribes exactly the same audio),
``video.mp4`` (H.264 at the capped camera rate, when a camera ran), ``results.jsonl`` (the
published results) and ``manifest.json`` (what replay needs to segment the audio the same way: VAD
options, speakers, channel layout; plus a summary of the utterances). The manifest is written when
recording starts and again when it ends: ``complete`` is true only when the stream ended at the end
of its input or when it was stopped (``end`` says which: ``eof``, ``stopped``, or ``error: ...``
when the input failed; a recording that never saw the end of its stream ends as ``aborted``).
The folder must be new or empty: one that holds anything (a recorded session, or the user's own
files, which the recording would overwrite or append to) is refused when the recorder is made,
before any sink opens.

The recorder is a sink for results, and the segmentation stage hands it every audio chunk and
video frame. Those calls only queue data; a writer task encodes it on the recorder's own worker
thread, so the event loop never waits on disk or on the video encoder.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from realtime.config import Config
from realtime.messages import (
    SAMPLE_RATE,
    AudioChunk,
    EmotionResult,
    EndOfStream,
    SpeakerRevision,
    StatsSnapshot,
    UtteranceConfirmed,
    VideoFrame,
)
from realtime.serialize import utc_timestamp
from realtime.sinks.base import Sink, SinkError
from realtime.sinks.jsonl import JsonlSink
from realtime.stage import Inbox, Stage

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
AUDIO = "audio.wav"
VIDEO = "video.mp4"
RESULTS = "results.jsonl"
FORMAT = "emotrack-session"
FORMAT_VERSION = 1
WRITE_EVERY_S = 0.5  # audio is written in blocks of about this length
MAX_PENDING_FRAMES = 150  # video frames waiting for the encoder; beyond, the oldest are dropped


class _VideoWriter:
    """H.264 in MP4 with millisecond timestamps (the camera rate is variable). Blocking."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path = path
        self.fps = fps
        self._container: Any = None
        self._stream: Any = None
        self._last_pts = -1
        self.frames = 0

    def _open(self, image: np.ndarray) -> None:
        import av

        height, width = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
        self._container = av.open(str(self.path), "w")
        stream = self._container.add_stream("libx264", rate=max(1, round(self.fps)))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, 1000)
        stream.options = {"preset": "veryfast", "crf": "23"}
        self._stream = stream

    def write(self, time: float, image: np.ndarray) -> None:
        import av

        if self._container is None:
            self._open(image)
        pts = round(time * 1000)
        if pts <= self._last_pts:
            return  # two frames in the same millisecond: keep the first
        self._last_pts = pts
        image = image[: self._stream.height, : self._stream.width]
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        frame.pts = pts
        frame.time_base = Fraction(1, 1000)
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._container is None:
            return
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()


class _AudioWriter:
    """32-bit float WAV: the samples exactly as the pipeline had them. Blocking."""

    def __init__(self, path: Path, channels: int) -> None:
        import soundfile as sf

        self.channels = channels
        self.samples = 0
        self._file = sf.SoundFile(
            str(path), "w", samplerate=SAMPLE_RATE, channels=channels, subtype="FLOAT"
        )

    def write(self, block: np.ndarray) -> None:
        self._file.write(block.astype(np.float32, copy=False))
        self.samples += len(block)

    def close(self) -> None:
        self._file.close()


class SessionRecorder(Sink):
    name = "record"

    def __init__(
        self,
        folder: str | Path,
        *,
        session: str,
        config: Config,
        source: str,
        channels_as_speakers: bool,
    ) -> None:
        self.folder = Path(folder).expanduser()
        self._check_folder()
        self.session = session
        self.config = config
        self.source = source
        self.channels_as_speakers = channels_as_speakers
        self.dropped_frames = 0
        self._results = JsonlSink(path=self.folder / RESULTS, name="record-results")
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._pending_audio: dict[int, list[np.ndarray]] = {}
        self._pending_frames: deque[VideoFrame] = deque()
        self._audio: _AudioWriter | None = None
        self._video = _VideoWriter(self.folder / VIDEO, config.sources.camera_fps)
        self._first_start: float | None = None
        self._pending_seconds = 0.0
        self._channels: int | None = None
        self._utterances: list[dict[str, Any]] = []
        self._model_version: str | None = None
        self._created = utc_timestamp()
        self.end_reason: str | None = None  # the stream's EndOfStream reason, once it passed

    def stream_ended(self, reason: str) -> None:
        """The stream ended (``eof``, ``stopped``, ``error: ...``): the manifest will say so."""
        self.end_reason = reason

    @property
    def complete(self) -> bool:
        """Whether the recording holds the whole stream: it ended at the end of its input, or
        because it was stopped; not after an input error or a crash."""
        return self.end_reason in ("eof", "stopped")

    # -- taps (called on the event loop; never block) ------------------------------------------

    def add_audio(self, chunk: AudioChunk) -> None:
        if self._first_start is None:
            self._first_start = chunk.start
        elif self._channels is None and chunk.start > self._first_start:
            # Sources emit every channel of a time step together: by the second step, all known.
            self._channels = max(self._pending_audio) + 1
        self._pending_audio.setdefault(chunk.channel, []).append(chunk.samples)
        if chunk.channel == 0:
            self._pending_seconds += chunk.duration
            if self._pending_seconds >= WRITE_EVERY_S:
                self._pending_seconds = 0.0
                self._wake.set()

    def add_frame(self, frame: VideoFrame) -> None:
        if len(self._pending_frames) >= MAX_PENDING_FRAMES:
            self._pending_frames.popleft()
            self.dropped_frames += 1
        self._pending_frames.append(frame)
        self._wake.set()

    # -- sink interface ----------------------------------------------------------------------

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recorder")
        await loop.run_in_executor(self._executor, self._prepare_folder)
        await self._results.open()
        await loop.run_in_executor(self._executor, self._write_manifest, False, None)
        self._task = asyncio.create_task(self._writer(), name="recorder")
        logger.info("recording session to %s", self.folder)

    def _check_folder(self) -> None:
        """Refuse a folder that is not new or empty (blocking, a few file system reads)."""
        folder = self.folder
        if folder.exists() and not folder.is_dir():
            raise SinkError(f"{folder} is a file, not a folder (choose a new folder to record to)")
        if (folder / MANIFEST).exists():
            raise SinkError(f"{folder} already holds a recorded session; choose a new folder")
        try:
            used = folder.is_dir() and any(folder.iterdir())
        except OSError as exc:
            raise SinkError(f"cannot read session folder {folder}: {exc.strerror}") from None
        if used:
            raise SinkError(
                f"{folder} is not empty: recording there would overwrite or append to its files "
                "(choose a new or empty folder)"
            )

    def _prepare_folder(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"cannot create session folder {self.folder}: {exc.strerror}") from None
        if (self.folder / MANIFEST).exists():  # written since the recorder was made
            raise SinkError(f"{self.folder} already holds a recorded session; choose a new folder")

    async def publish(self, result: EmotionResult) -> None:
        """The result goes to results.jsonl; the manifest's summary gets the utterance, or, for a
        revision of a speculative result, its entry is replaced."""
        await self._results.publish(result)
        self._model_version = result.model_version
        summary = {
            "utterance_seq": result.utterance_seq,
            "speaker": result.speaker,
            "start": round(result.start, 3),
            "end": round(result.end, 3),
            "text": result.text,
            "emotion": result.emotion,
        }
        seqs = [u["utterance_seq"] for u in self._utterances] if result.revision else []
        if result.utterance_seq in seqs:
            self._utterances[seqs.index(result.utterance_seq)] = summary
        else:
            self._utterances.append(summary)

    async def confirm(self, confirmation: UtteranceConfirmed) -> None:
        """The confirmation goes to results.jsonl as its own line."""
        await self._results.confirm(confirmation)

    async def revise(self, revision: SpeakerRevision) -> None:
        """The revision goes to results.jsonl as its own line; the manifest's summary of the
        utterance takes the new speaker."""
        await self._results.revise(revision)
        for utterance in self._utterances:
            if utterance["utterance_seq"] == revision.utterance_seq:
                utterance["speaker"] = revision.new

    async def close(self, stats: StatsSnapshot) -> None:
        if self._executor is None:
            return
        loop = asyncio.get_running_loop()
        self._closing = True
        self._wake.set()
        try:
            if self._task is not None:
                await self._task
        finally:
            await loop.run_in_executor(self._executor, self._finish)
            await self._results.close(stats)
            await loop.run_in_executor(self._executor, self._write_manifest, self.complete, stats)
            self._executor.shutdown(wait=False)
            self._executor = None
        logger.info("session recorded in %s", self.folder)

    # -- writing (worker thread) ---------------------------------------------------------------

    def _take_audio(self, final: bool) -> np.ndarray | None:
        if not self._pending_audio:
            return None
        channels = self._channels or max(self._pending_audio) + 1
        if self._channels is None and not final:
            return None  # channel layout not known yet
        self._channels = channels
        empty = [np.zeros(0, dtype=np.float32)]
        columns = [np.concatenate(self._pending_audio.get(c) or empty) for c in range(channels)]
        lengths = [len(column) for column in columns]
        length = max(lengths) if final else min(lengths)
        block = np.zeros((length, channels), dtype=np.float32)
        for c, column in enumerate(columns):
            block[: min(length, len(column)), c] = column[:length]
            rest = column[length:]
            self._pending_audio[c] = [rest] if len(rest) else []
        return block if length else None

    async def _writer(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._executor is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            final = self._closing
            block = self._take_audio(final)
            frames = list(self._pending_frames)
            self._pending_frames.clear()
            if block is not None or frames:
                await loop.run_in_executor(self._executor, self._write, block, frames)
            if final:
                return

    def _write(self, block: np.ndarray | None, frames: list[VideoFrame]) -> None:
        try:
            if block is not None:
                if self._audio is None:
                    self._audio = _AudioWriter(self.folder / AUDIO, block.shape[1])
                self._audio.write(block)
            for frame in frames:
                self._video.write(frame.time, frame.image)
        except OSError as exc:
            raise SinkError(f"cannot write the session recording: {exc.strerror}") from None

    def _finish(self) -> None:
        if self._audio is not None:
            self._audio.close()
        self._video.close()

    def _write_manifest(self, complete: bool, stats: StatsSnapshot | None) -> None:
        config = self.config
        audio = self._audio
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "session": self.session,
            "created": self._created,
            "complete": complete,
            "end": None if stats is None else self.end_reason or "aborted",
            "source": self.source,
            "audio": {
                "file": AUDIO,
                "sample_rate": SAMPLE_RATE,
                "channels": audio.channels if audio else self._channels,
                "seconds": round(audio.samples / SAMPLE_RATE, 3) if audio else 0.0,
            },
            "video": {"file": VIDEO, "frames": self._video.frames, "fps": config.sources.camera_fps}
            if self._video.frames
            else None,
            "results": RESULTS,
            "channels_as_speakers": self.channels_as_speakers,
            "speakers": list(config.sources.speakers),
            "diarization": {
                "diarize": config.speakers.diarize,
                "max_speakers": config.speakers.max_speakers,
                "names": list(config.speakers.names),
                "enroll": list(config.speakers.enroll),
            },
            "vad": asdict(config.vad),
            "asr": {"model": config.asr.model, "window": config.asr.window},
            "model_version": self._model_version,
            "dropped_video_frames": self.dropped_frames,
            "stats": None
            if stats is None
            else {
                "utterances": stats.utterances,
                "results": stats.results,
                "dropped": stats.dropped,
            },
            "utterances": self._utterances,
        }
        path = self.folder / MANIFEST
        partial = path.with_suffix(".json.partial")
        partial.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        partial.replace(path)


class RecorderTapStage(Stage):
    """Hands every audio chunk and video frame to the session recorder and passes it on."""

    inbox_spec = Inbox("record", 64)

    def __init__(self, recorder: SessionRecorder) -> None:
        super().__init__()
        self.recorder = recorder

    async def process(self, item: Any) -> None:
        if isinstance(item, AudioChunk):
            self.recorder.add_audio(item)
        elif isinstance(item, VideoFrame):
            self.recorder.add_frame(item)
        await self.push(item)

    async def finish(self, end: EndOfStream) -> None:
        self.recorder.stream_ended(end.reason)
