"""Replay of audio and video files, paced by the stream clock (real time, a factor, or max).

wav, flac and ogg are read with soundfile; mp3, m4a, aac, opus, mp4, mkv, webm, mov and avi with
PyAV (audio track, and the first video track for the camera frames). Audio is resampled to 16 kHz
(soxr for soundfile, FFmpeg's resampler for PyAV) and either mixed to mono (one speaker) or kept
one speaker per channel (``channels_as_speakers``). All decoding runs on the pipeline's executor,
one block ahead of what is being emitted.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from realtime.frames import keep_after
from realtime.messages import SAMPLE_RATE, AudioChunk, VideoFrame
from realtime.sources.base import Source, SourceContext, SourceError

logger = logging.getLogger(__name__)

SOUNDFILE_SUFFIXES = (".wav", ".flac", ".ogg", ".oga")
PYAV_SUFFIXES = (".mp3", ".m4a", ".aac", ".opus", ".mp4", ".mkv", ".webm", ".mov", ".avi")
SUPPORTED_SUFFIXES = SOUNDFILE_SUFFIXES + PYAV_SUFFIXES
BLOCK_S = 1.0  # decoded per executor call
CHUNK_S = 0.02  # emitted per AudioChunk (like a 20 ms microphone block)


class AudioDecoder(Protocol):
    channels: int

    def read(self, seconds: float) -> np.ndarray | None:
        """The next ``seconds`` of 16 kHz float32 audio, shape (n, channels); None at the end."""
        ...

    def close(self) -> None: ...


class SoundFileAudio:
    def __init__(self, path: Path) -> None:
        import soundfile as sf
        import soxr

        try:
            self._file = sf.SoundFile(str(path))
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise SourceError(f"cannot read audio file {path}: {exc}") from None
        self.channels = int(self._file.channels)
        self._rate = int(self._file.samplerate)
        self._resampler = (
            soxr.ResampleStream(self._rate, SAMPLE_RATE, self.channels, dtype="float32")
            if self._rate != SAMPLE_RATE
            else None
        )
        self._done = False

    def read(self, seconds: float) -> np.ndarray | None:
        if self._done:
            return None
        wanted = max(1, round(seconds * self._rate))
        data = self._file.read(wanted, dtype="float32", always_2d=True)
        last = len(data) < wanted
        if self._resampler is not None:
            data = self._resampler.resample_chunk(data, last=last)
        self._done = last
        if len(data) == 0:
            return None
        return np.ascontiguousarray(data, dtype=np.float32).reshape(len(data), self.channels)

    def close(self) -> None:
        self._file.close()


def _open_container(path: Path) -> Any:
    import av

    try:
        return av.open(str(path))
    except av.error.FFmpegError as exc:
        raise SourceError(f"cannot open media file {path}: {exc}") from None


class PyAvAudio:
    def __init__(self, path: Path) -> None:
        import av

        self.path = path
        self._container = _open_container(path)
        if not self._container.streams.audio:
            self._container.close()
            raise SourceError(f"{path} has no audio track")
        stream = self._container.streams.audio[0]
        self.channels = int(stream.codec_context.channels) or 1
        self.start = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        layout = "mono" if self.channels == 1 else "stereo" if self.channels == 2 else None
        if layout is None:
            layout = stream.codec_context.layout.name
        self._resampler = av.AudioResampler(format="fltp", layout=layout, rate=SAMPLE_RATE)
        self._frames: Iterator[Any] = self._container.decode(stream)
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self._done = False

    def _decode_more(self) -> None:
        import av

        try:
            frame = next(self._frames)
        except StopIteration:
            frame = None
            self._done = True
        except av.error.FFmpegError as exc:
            raise SourceError(f"cannot decode audio of {self.path}: {exc}") from None
        for out in self._resampler.resample(frame):
            array = out.to_ndarray().reshape(self.channels, -1).T.astype(np.float32)
            self._buffer.append(array)
            self._buffered += len(array)

    def read(self, seconds: float) -> np.ndarray | None:
        wanted = max(1, round(seconds * SAMPLE_RATE))
        while self._buffered < wanted and not self._done:
            self._decode_more()
        if not self._buffered:
            return None
        data = np.concatenate(self._buffer)
        block, rest = data[:wanted], data[wanted:]
        self._buffer = [rest] if len(rest) else []
        self._buffered = len(rest)
        return np.ascontiguousarray(block)

    def close(self) -> None:
        self._container.close()


class PyAvVideo:
    """Video frames (BGR) thinned to at most ``fps`` per second, read up to a stream time."""

    def __init__(self, path: Path, fps: float, offset: float = 0.0) -> None:
        self.path = path
        self._container = _open_container(path)
        streams = [
            s
            for s in self._container.streams.video
            if not s.disposition & 0x400  # attached_pic
        ]
        if not streams:
            self._container.close()
            raise SourceError(f"{path} has no video track")
        self._period = 1.0 / fps
        self._offset = offset
        self._frames: Iterator[Any] = self._container.decode(streams[0])
        self._next_keep = 0.0
        self._ahead: tuple[float, Any] | None = None
        self._done = False
        self.decoded = 0

    def _peek(self) -> tuple[float, Any] | None:
        import av

        while self._ahead is None and not self._done:
            try:
                frame = next(self._frames)
            except StopIteration:
                self._done = True
                break
            except av.error.FFmpegError as exc:
                raise SourceError(f"cannot decode video of {self.path}: {exc}") from None
            if frame.time is None:
                continue
            time = float(frame.time) - self._offset
            if time >= self._next_keep - 1e-3:
                self._ahead = (time, frame)
        return self._ahead

    def read(self, until: float) -> list[tuple[float, np.ndarray]]:
        """Frames with stream time before ``until``, in order."""
        out = []
        while (ahead := self._peek()) is not None and ahead[0] < until:
            time, frame = ahead
            self._ahead = None
            self._next_keep = keep_after(self._next_keep, time, self._period)
            out.append((max(0.0, time), frame.to_ndarray(format="bgr24")))
            self.decoded += 1
        return out

    def close(self) -> None:
        self._container.close()


def check_media_path(path: str | Path) -> Path:
    """The path, if it names a readable media file of a supported type (else SourceError)."""
    file = Path(path).expanduser()
    if not file.exists():
        raise SourceError(f"no such file: {file}")
    if not file.is_file():
        raise SourceError(f"not a file: {file}")
    if file.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise SourceError(
            f"unsupported file type {file.suffix or '(none)'}: use one of "
            + ", ".join(s.lstrip(".") for s in SUPPORTED_SUFFIXES)
        )
    return file


def open_audio(path: Path) -> AudioDecoder:
    if path.suffix.lower() in SOUNDFILE_SUFFIXES:
        return SoundFileAudio(path)
    return PyAvAudio(path)


class FileSource(Source):
    """Replays an audio or video file (optionally with video from a second file)."""

    live = False

    def __init__(
        self,
        path: str | Path,
        *,
        channels_as_speakers: bool = False,
        video: bool = True,
        video_path: str | Path | None = None,
        fps: float = 5.0,
    ) -> None:
        super().__init__()
        self.path = check_media_path(path)
        self.video_path = check_media_path(video_path) if video_path is not None else None
        self.channels_as_speakers = channels_as_speakers
        self.want_video = video
        self.fps = fps
        self._channels = 1
        self.frames_emitted = 0
        self._seq = itertools.count()
        self._frame_seq = itertools.count()

    @property
    def description(self) -> str:
        extra = f" + video {self.video_path.name}" if self.video_path else ""
        return f"file {self.path.name}{extra}"

    @property
    def channels(self) -> int:
        return self._channels

    def _open_video(self, audio: AudioDecoder) -> PyAvVideo | None:
        if not self.want_video:
            return None
        if self.video_path is not None:
            return PyAvVideo(self.video_path, self.fps)
        if self.path.suffix.lower() in SOUNDFILE_SUFFIXES:
            return None
        offset = audio.start if isinstance(audio, PyAvAudio) else 0.0
        try:
            return PyAvVideo(self.path, self.fps, offset)
        except SourceError:
            return None  # an audio-only container

    async def run(self, ctx: SourceContext) -> None:
        loop = asyncio.get_running_loop()
        audio = await loop.run_in_executor(ctx.executor, open_audio, self.path)
        video: PyAvVideo | None = None
        pending: asyncio.Future[np.ndarray | None] | None = None
        try:
            if ctx.video is not None:
                video = await loop.run_in_executor(ctx.executor, self._open_video, audio)
            if self.channels_as_speakers and audio.channels == 1:
                logger.warning("%s has one channel: one speaker only", self.path.name)
            self._channels = audio.channels if self.channels_as_speakers else 1
            logger.info(
                "replaying %s (%d channel%s%s)",
                self.path,
                audio.channels,
                "" if audio.channels == 1 else "s",
                ", with video" if video else "",
            )
            position = 0
            pending = loop.run_in_executor(ctx.executor, audio.read, BLOCK_S)
            while not self.stopping:
                block = await pending
                pending = None
                if block is None:
                    break
                pending = loop.run_in_executor(ctx.executor, audio.read, BLOCK_S)  # read ahead
                end = (position + len(block)) / SAMPLE_RATE
                frames = await loop.run_in_executor(ctx.executor, video.read, end) if video else []
                if not self.channels_as_speakers and block.shape[1] > 1:
                    block = block.mean(axis=1, keepdims=True)
                position = await self._emit(ctx, block, position, frames)
        finally:
            if pending is not None:  # let the read ahead finish before closing its decoder
                await asyncio.wait([pending])
                if not pending.cancelled() and pending.exception() is not None:
                    logger.debug("read ahead failed: %s", pending.exception())
            await loop.run_in_executor(ctx.executor, audio.close)
            if video is not None:
                await loop.run_in_executor(ctx.executor, video.close)

    async def _emit(
        self,
        ctx: SourceContext,
        block: np.ndarray,
        position: int,
        frames: list[tuple[float, np.ndarray]],
    ) -> int:
        """Emit ``block`` (from sample ``position``) in chunks, frames interleaved by time."""
        step = round(CHUNK_S * SAMPLE_RATE)
        queued = iter(frames)
        frame = next(queued, None)
        for offset in range(0, len(block), step):
            chunk = block[offset : offset + step]
            start = (position + offset) / SAMPLE_RATE
            end = start + len(chunk) / SAMPLE_RATE
            while frame is not None and frame[0] < end:
                await ctx.clock.wait_until(frame[0])
                self._put_frame(ctx, *frame)
                frame = next(queued, None)
            await ctx.clock.wait_until(end)
            if self.stopping:
                return position + offset
            now = ctx.clock.now()
            for channel in range(chunk.shape[1]):
                await ctx.audio.put(
                    AudioChunk(
                        session=ctx.session,
                        seq=next(self._seq),
                        monotonic=now,
                        samples=np.ascontiguousarray(chunk[:, channel]),
                        start=start,
                        channel=channel,
                    )
                )
        while frame is not None:
            self._put_frame(ctx, *frame)
            frame = next(queued, None)
        return position + len(block)

    def _put_frame(self, ctx: SourceContext, time: float, image: np.ndarray) -> None:
        if ctx.video is None:
            return
        ctx.video.put_nowait(
            VideoFrame(
                session=ctx.session,
                seq=next(self._frame_seq),
                monotonic=ctx.clock.now(),
                image=image,
                time=time,
            )
        )
        self.frames_emitted += 1
