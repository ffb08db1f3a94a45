"""Replay of audio and video files, paced by the stream clock (real time, a factor, or max).

wav, flac and ogg are read with soundfile; mp3, m4a, aac, opus, mp4, mkv, webm, mov and avi with
PyAV (audio track, and the first video track for the camera frames). Audio is resampled to 16 kHz
(soxr for soundfile, FFmpeg's resampler for PyAV) and either mixed to mono (one speaker) or kept
one speaker per channel (``channels_as_speakers``). All decoding runs on the pipeline's executor,
one block ahead of what is being emitted. Damaged media: PyAV packets that cannot be decoded are
skipped and silence keeps the timeline (one warning says how much); libsndfile stops at the first
bad block; either way what was decoded before a fatal error is delivered first.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from realtime.frames import keep_after
from realtime.messages import SAMPLE_RATE, AudioChunk
from realtime.sources.base import MediaReadError, Source, SourceContext, SourceError

logger = logging.getLogger(__name__)

SOUNDFILE_SUFFIXES = (".wav", ".flac", ".ogg", ".oga")
PYAV_SUFFIXES = (".mp3", ".m4a", ".aac", ".opus", ".mp4", ".mkv", ".webm", ".mov", ".avi")
SUPPORTED_SUFFIXES = SOUNDFILE_SUFFIXES + PYAV_SUFFIXES
BLOCK_S = 1.0  # decoded per executor call
CHUNK_S = 0.02  # emitted per AudioChunk (like a 20 ms microphone block)


SUB_BLOCK_S = 0.1  # soundfile reads in pieces this long: a decoding error loses at most this
# A file whose decoded audio falls short of the duration its header gives gets a warning: by more
# than SHORT_BY_EXACT_S where the header counts samples (WAV, FLAC), by more than SHORT_BY_S plus
# SHORT_BY_SHARE of the duration where the container gives it (MP3, MP4, WebM: estimated there).
SHORT_BY_EXACT_S = 0.02
SHORT_BY_S = 0.5
SHORT_BY_SHARE = 0.02
# A packet PyAV cannot decode (MP3, AAC, ... with damaged bytes) is skipped, so the rest of the
# file still plays; this much undecodable audio in a row (or this many packets, where they give no
# duration) means the stream is not audio any more.
MAX_UNDECODABLE_S = 2.0
MAX_UNDECODABLE_PACKETS = 100
# Audio missing before a decoded frame (its timestamp ahead of where the audio so far ends: skipped
# packets, or a damaged cluster the demuxer passed over) becomes silence, so that later results
# keep their times; jumps up to this long where the header gives no duration to bound them.
TIMESTAMP_JITTER_S = 0.02
MAX_FILLED_GAP_S = 10.0
# Headers claiming more channels or another rate than this are damaged, not audio to resample.
MAX_CHANNELS = 64
RATES = range(1_000, 768_001)


class DecodeError(Exception):
    """A decoder cannot go on; the text is the library's reason (the source adds where)."""


def one_line(exc: BaseException) -> str:
    """An exception's message as one line (library messages may hold newlines or be empty).

    libsndfile's own text (``error_string``) and FFmpeg's (``strerror``) are preferred: the
    full messages repeat the path and add error numbers.
    """
    text = getattr(exc, "error_string", None) or getattr(exc, "strerror", None) or str(exc)
    text = " ".join(str(text).split()).removeprefix("Error : ").rstrip(".")
    return text or type(exc).__name__


def read_whole_audio(path: str | Path, what: str = "audio file") -> tuple[np.ndarray, int]:
    """A file's audio whole, as (frames, channels) float32, and its rate (blocking); a missing or
    unreadable file is a :class:`SourceError` in one line that names it as ``what``."""
    import soundfile as sf

    file = Path(path).expanduser()
    if not file.is_file():
        raise SourceError(f"no such {what}: {file}" if not file.exists() else f"not a file: {file}")
    try:
        audio, rate = sf.read(str(file), dtype="float32", always_2d=True)
    except (OSError, RuntimeError) as exc:  # soundfile's LibsndfileError is a RuntimeError
        raise SourceError(f"cannot read {what} {file}: {one_line(exc)}") from None
    return audio, int(rate)


def check_layout(channels: int, rate: int) -> None:
    """Raise ValueError for a channel count or sample rate that only a damaged header gives."""
    if not 1 <= channels <= MAX_CHANNELS or rate not in RATES:
        raise ValueError(f"implausible audio format ({channels} channels at {rate} Hz)")


class AudioDecoder(Protocol):
    channels: int
    #: The duration the file's header gives (seconds), when it gives one, and by how much the
    #: decoded audio may fall short of it before the file counts as cut short.
    declared_seconds: float | None
    declared_tolerance: float
    #: Damaged packets skipped so far, and the seconds of missing audio silence stands in for.
    skipped_packets: int
    silenced_seconds: float

    def read(self, seconds: float) -> np.ndarray | None:
        """The next ``seconds`` of 16 kHz float32 audio, shape (n, channels); None at the end.

        When decoding fails, what was decoded before the failure is returned first and
        :class:`DecodeError` is raised by the next call.
        """
        ...

    def close(self) -> None: ...


def wav_declared_seconds(path: Path) -> float | None:
    """The duration a RIFF/WAVE header gives for its data chunk (None if it gives none)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
                return None
            order = "<" if head[:4] == b"RIFF" else ">"
            rate = block_align = 0
            for _ in range(64):  # chunks before the data
                chunk = fh.read(8)
                if len(chunk) < 8:
                    return None
                size = struct.unpack(order + "I", chunk[4:])[0]
                if chunk[:4] == b"data":
                    if not rate or not block_align or size in (0, 0xFFFFFFFF):
                        return None  # unknown (a header written before the data)
                    return float(size / block_align / rate)
                body = fh.read(size) if chunk[:4] == b"fmt " else b""
                if chunk[:4] == b"fmt ":
                    if len(body) < 14:
                        return None
                    rate, block_align = struct.unpack(order + "I4xH", body[4:14])
                else:
                    fh.seek(size, 1)
                if size % 2:
                    fh.seek(1, 1)
    except OSError:
        return None
    return None


class SoundFileAudio:
    def __init__(self, path: Path) -> None:
        import soundfile as sf
        import soxr

        try:
            self._file = sf.SoundFile(str(path))
            self.channels = int(self._file.channels)
            self._rate = int(self._file.samplerate)
            check_layout(self.channels, self._rate)
            self._resampler = (
                soxr.ResampleStream(self._rate, SAMPLE_RATE, self.channels, dtype="float32")
                if self._rate != SAMPLE_RATE
                else None
            )
        except Exception as exc:  # libsndfile and soxr reject damaged headers in many ways
            if hasattr(self, "_file"):
                self._file.close()
            raise SourceError(f"cannot read audio file {path}: {one_line(exc)}") from None
        if path.suffix.lower() == ".wav":
            self.declared_seconds = wav_declared_seconds(path)
        else:  # FLAC: STREAMINFO (0 when unknown); Ogg: found from the last page
            self.declared_seconds = self._file.frames / self._rate if self._file.frames else None
        self.declared_tolerance = SHORT_BY_EXACT_S
        self.skipped_packets = 0  # libsndfile has no packets to skip: it stops
        self.silenced_seconds = 0.0
        self._done = False
        self._error: DecodeError | None = None

    def read(self, seconds: float) -> np.ndarray | None:
        if self._error is not None:
            raise self._error
        if self._done:
            return None
        wanted = max(1, round(seconds * self._rate))
        step = max(1, round(SUB_BLOCK_S * self._rate))
        pieces: list[np.ndarray] = []
        got = 0
        last = False
        while got < wanted:
            size = min(step, wanted - got)
            try:
                piece = self._file.read(size, dtype="float32", always_2d=True)
            except Exception as exc:  # libsndfile: lost sync, truncated data, ...
                self._error = DecodeError(one_line(exc))
                last = True
                break
            pieces.append(piece)
            got += len(piece)
            if len(piece) < size:
                last = True
                break
        data = np.concatenate(pieces) if pieces else np.zeros((0, self.channels), np.float32)
        if self._resampler is not None:
            data = self._resampler.resample_chunk(data, last=last)
        self._done = last
        if len(data) == 0:
            if self._error is not None:
                raise self._error
            return None
        return np.ascontiguousarray(data, dtype=np.float32).reshape(len(data), self.channels)

    def close(self) -> None:
        self._file.close()


@dataclass
class _Undecodable:
    """A run of damaged packets: skipped while short, fatal once it is too long."""

    packets: int = 0
    seconds: float = 0.0
    reason: str = ""

    def add(self, seconds: float, reason: str) -> None:
        self.packets += 1
        self.seconds += seconds
        self.reason = self.reason or reason
        if self.seconds > MAX_UNDECODABLE_S or self.packets > MAX_UNDECODABLE_PACKETS:
            raise DecodeError(self.reason)


def _open_container(path: Path) -> Any:
    import av

    try:
        return av.open(str(path))
    except Exception as exc:  # FFmpegError, and e.g. UnicodeDecodeError of damaged metadata
        raise SourceError(f"cannot open media file {path}: {one_line(exc)}") from None


class PyAvAudio:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._container = _open_container(path)
        try:
            self._setup()
        except SourceError:
            self._container.close()
            raise
        except Exception as exc:  # a damaged stream header (no layout, no rate, ...)
            self._container.close()
            raise SourceError(f"cannot read the audio track of {path}: {one_line(exc)}") from None
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self._done = False
        self._error: DecodeError | None = None
        self.skipped_packets = 0
        self.silenced_seconds = 0.0
        self._gap = _Undecodable()  # damaged packets since the last good frame
        self._frame_s = 0.0  # the last good frame's duration (for packets that give none)
        self._ends_at: float | None = None  # where the decoded audio ends (stream time)

    def _setup(self) -> None:
        import av

        if not self._container.streams.audio:
            raise SourceError(f"{self.path} has no audio track")
        stream = self._container.streams.audio[0]
        self.channels = int(stream.codec_context.channels) or 1
        check_layout(self.channels, int(stream.codec_context.sample_rate or SAMPLE_RATE))
        self.start = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        if stream.duration and stream.time_base:
            self.declared_seconds: float | None = float(stream.duration * stream.time_base)
        elif self._container.duration:
            self.declared_seconds = self._container.duration / av.time_base
        else:
            self.declared_seconds = None
        self.declared_tolerance = SHORT_BY_S + SHORT_BY_SHARE * (self.declared_seconds or 0.0)
        layout = "mono" if self.channels == 1 else "stereo" if self.channels == 2 else None
        if layout is None:
            layout = stream.codec_context.layout.name
        self._resampler = av.AudioResampler(format="fltp", layout=layout, rate=SAMPLE_RATE)
        self._packets: Iterator[Any] = self._container.demux(stream)
        # Raw MP3 / ADTS streams count their timestamps frame by frame, so a skipped packet's
        # bytes tell its time better (at the nominal bit rate); containers index theirs.
        counted = self._container.format.name in ("mp3", "aac")
        self._bit_rate = int(stream.codec_context.bit_rate or 0) if counted else 0

    def _decode_more(self) -> None:
        """Demux one packet and decode it; a packet the decoder rejects is skipped (its time
        becomes silence once a good frame follows), unless too many are in a row."""
        try:
            packet = next(self._packets)
        except StopIteration:
            self._done = True
            self._end_gap(0.0)  # junk after the audio: no silence for it
            self._add(None)  # flush the resampler
            return
        except Exception as exc:  # FFmpegError from the demuxer: no way to resync
            raise DecodeError(one_line(exc)) from None
        try:
            frames = packet.decode()
        except Exception as exc:  # FFmpegError on a damaged packet
            seconds = float(packet.duration * packet.time_base) if packet.duration else 0.0
            # An MP3 demuxer resyncing on junk makes one packet of many frames' bytes.
            bytes_s = packet.size * 8 / self._bit_rate if self._bit_rate else 0.0
            self._gap.add(max(seconds or self._frame_s, bytes_s), one_line(exc))
            return
        for frame in frames:
            self._fill_gap_before(frame)
            self._add(frame)

    def _fill_gap_before(self, frame: Any) -> None:
        """Silence for the audio missing before ``frame``: what its timestamp says is missing,
        or (without timestamps) the skipped packets' durations."""
        start = frame.time
        duration = frame.samples / frame.sample_rate if frame.sample_rate else 0.0
        missing = self._gap.seconds
        if start is not None and self._ends_at is not None:
            missing = max(start - self._ends_at, missing)
            room = (self.declared_seconds or 0.0) + self.declared_tolerance - self._ends_at
            if missing > (room if self.declared_seconds else MAX_FILLED_GAP_S):
                missing = 0.0  # a damaged timestamp, not missing audio
        if self._gap.packets or missing > TIMESTAMP_JITTER_S:
            self._end_gap(max(missing, 0.0))
        self._frame_s = duration
        ends = self._ends_at or 0.0
        self._ends_at = (start if start is not None else ends) + duration

    def _end_gap(self, silence_s: float) -> None:
        """Count the run of damaged packets as skipped; ``silence_s`` of silence takes the
        missing audio's place."""
        self.skipped_packets += self._gap.packets
        self._gap = _Undecodable()
        self.silenced_seconds += silence_s
        silence = np.zeros((round(silence_s * SAMPLE_RATE), self.channels), np.float32)
        self._buffer.append(silence)
        self._buffered += len(silence)

    def _add(self, frame: Any) -> None:
        try:
            resampled = self._resampler.resample(frame)
        except Exception as exc:  # e.g. a frame whose layout or rate changed mid-stream
            raise DecodeError(one_line(exc)) from None
        for out in resampled:
            array = out.to_ndarray().reshape(self.channels, -1).T.astype(np.float32)
            self._buffer.append(array)
            self._buffered += len(array)

    def read(self, seconds: float) -> np.ndarray | None:
        if self._error is not None and not self._buffered:
            raise self._error
        wanted = max(1, round(seconds * SAMPLE_RATE))
        while self._buffered < wanted and not self._done:
            try:
                self._decode_more()
            except DecodeError as exc:
                self._error = exc
                self._done = True
        if not self._buffered:
            if self._error is not None:
                raise self._error
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

        while self._ahead is None and not self._done:
            try:
                frame = next(self._frames)
            except StopIteration:
                self._done = True
                break
            except Exception as exc:  # FFmpegError, or PyAV on a damaged packet
                raise SourceError(f"cannot decode video of {self.path}: {one_line(exc)}") from None
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


class AudioSurvey:
    """What the decoded audio looks like, for the warnings at the end of a file.

    Noise: a frame of :data:`FRAME` samples louder than :data:`LOUD_RMS` whose spectrum is flat
    (spectral flatness above :data:`FLAT`: white noise is about 0.56, voiced speech below 0.01).
    When at least :data:`NOISE_SHARE` of the loud frames (and :data:`MIN_LOUD_FRAMES` at least)
    are flat, the file is noise rather than speech: random bytes behind a valid header, or a
    decoder turning damaged data into hiss. Samples that are not numbers (NaN, infinity: damaged
    float data) are replaced by silence and counted; others are clipped to [-1, 1] and counted:
    float audio scaled wrong (e.g. in PCM units) clips almost everywhere (:attr:`badly_scaled`).
    """

    FRAME = 512
    LOUD_RMS = 0.03  # -30 dBFS
    FLAT = 0.35
    NOISE_SHARE = 0.9
    MIN_LOUD_FRAMES = 32  # about 1 s
    CLIPPED_SHARE = 0.001  # more of the samples beyond [-1, 1] than this: scaled wrong

    def __init__(self) -> None:
        self.loud = 0
        self.flat = 0
        self.not_numbers = 0
        self.samples = 0
        self.clipped = 0
        self._window = np.hanning(self.FRAME).astype(np.float32)

    def clean(self, block: np.ndarray) -> np.ndarray:
        """``block`` with samples that are not numbers silenced and the rest clipped."""
        finite = np.isfinite(block)
        if not finite.all():
            self.not_numbers += int(block.size - np.count_nonzero(finite))
            block = np.where(finite, block, np.float32(0.0))
        self.samples += block.size
        if block.size and float(np.abs(block).max()) > 1.0:
            self.clipped += int(np.count_nonzero(np.abs(block) > 1.0))
            block = np.clip(block, -1.0, 1.0)
        return block

    def add(self, mono: np.ndarray) -> None:
        usable = len(mono) // self.FRAME * self.FRAME
        frames = mono[:usable].reshape(-1, self.FRAME).astype(np.float32, copy=False)
        loud = frames[np.sqrt(np.mean(frames**2, axis=1)) > self.LOUD_RMS]
        if not len(loud):
            return
        power = np.abs(np.fft.rfft(loud * self._window, axis=1)) ** 2 + 1e-12
        flatness = np.exp(np.mean(np.log(power), axis=1)) / np.mean(power, axis=1)
        self.loud += len(loud)
        self.flat += int(np.count_nonzero(flatness > self.FLAT))

    @property
    def badly_scaled(self) -> bool:
        return self.clipped > self.CLIPPED_SHARE * self.samples

    @property
    def noise_like(self) -> bool:
        return self.loud >= self.MIN_LOUD_FRAMES and self.flat >= self.NOISE_SHARE * self.loud


def check_media_path(path: str | Path) -> Path:
    """The path, if it names a readable media file of a supported type (else SourceError)."""
    file = Path(path).expanduser()
    if not file.exists():
        raise SourceError(f"no such file: {file}")
    if file.is_dir():
        from realtime.recorder import AUDIO, MANIFEST, RESULTS, VIDEO

        raise SourceError(
            f"not a file: {file} (a folder replays only when it is a session written by "
            f"--record: {MANIFEST}, {AUDIO}, {RESULTS} and, with a camera, {VIDEO})"
        )
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
        self._seq = itertools.count()

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

    def check(self) -> None:
        """Open the file, decode its first block and close it: unusable media fail here, before
        any model loads (blocking)."""
        audio = open_audio(self.path)
        try:
            if audio.read(BLOCK_S) is None:
                raise SourceError(f"{self.path} holds no audio")
        except DecodeError as exc:
            raise SourceError(f"cannot decode {self.path}: {exc}") from None
        finally:
            audio.close()
        if self.video_path is not None:
            PyAvVideo(self.video_path, self.fps).close()

    def _read(self, audio: AudioDecoder, survey: AudioSurvey) -> np.ndarray | None:
        """The next block, cleaned and surveyed (blocking: runs on the executor)."""
        block = audio.read(BLOCK_S)
        if block is None:
            return None
        block = survey.clean(block)
        survey.add(block.mean(axis=1) if block.shape[1] > 1 else block[:, 0])
        return block

    def _read_error(self, error: DecodeError, position: int) -> SourceError:
        if not position:
            return SourceError(f"cannot decode {self.path}: {error}")
        at = position / SAMPLE_RATE
        return MediaReadError(f"cannot decode {self.path} after {at:.1f} s: {error}", at=at)

    def _warn_about(
        self, audio: AudioDecoder, survey: AudioSurvey, position: int, *, read_to_end: bool
    ) -> None:
        """One line per suspicious trait of the audio read (the length only when read to the
        end: a read error says why it is short)."""
        name = self.path.name
        seconds = position / SAMPLE_RATE
        declared = audio.declared_seconds
        if read_to_end and declared and seconds + audio.declared_tolerance < declared:
            logger.warning(
                "%s holds %.1f s of audio but its header says %.1f s: it is cut short or damaged",
                name,
                seconds,
                declared,
            )
        if audio.silenced_seconds or audio.skipped_packets:
            logger.warning(
                "%s is damaged: %.2f s of its audio could not be decoded (%d packet%s skipped); "
                "silence stands in for it",
                name,
                audio.silenced_seconds,
                audio.skipped_packets,
                "" if audio.skipped_packets == 1 else "s",
            )
        if survey.not_numbers:
            logger.warning(
                "%s: %d samples are not numbers (damaged float data?); they were replaced by "
                "silence",
                name,
                survey.not_numbers,
            )
        if survey.badly_scaled:
            logger.warning(
                "%s: %.1f%% of its samples lie beyond full scale and were clipped (float audio "
                "in the wrong units?); the results will be unreliable",
                name,
                100 * survey.clipped / survey.samples,
            )
        if survey.noise_like:
            logger.warning(
                "%s sounds like noise, not speech (%d%% of its loud parts have a flat "
                "spectrum): is it damaged, or not audio at all?",
                name,
                round(100 * survey.flat / survey.loud),
            )

    async def _video_frames(
        self, ctx: SourceContext, video: PyAvVideo, until: float
    ) -> list[tuple[float, np.ndarray]] | None:
        """Frames up to ``until``; None (and a warning) once the video cannot be decoded."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(ctx.executor, video.read, until)
        except SourceError as exc:
            logger.warning("%s; going on with the audio only", exc)
            return None

    async def run(self, ctx: SourceContext) -> None:
        loop = asyncio.get_running_loop()
        audio = await loop.run_in_executor(ctx.executor, open_audio, self.path)
        video: PyAvVideo | None = None
        pending: asyncio.Future[np.ndarray | None] | None = None
        survey = AudioSurvey()
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
            pending = loop.run_in_executor(ctx.executor, self._read, audio, survey)
            while not self.stopping:
                try:
                    block = await pending
                except DecodeError as exc:
                    pending = None
                    self._warn_about(audio, survey, position, read_to_end=False)
                    raise self._read_error(exc, position) from None
                pending = None
                if block is None:
                    self._warn_about(audio, survey, position, read_to_end=True)
                    break
                pending = loop.run_in_executor(ctx.executor, self._read, audio, survey)  # ahead
                frames: list[tuple[float, np.ndarray]] = []
                if video is not None:
                    end = (position + len(block)) / SAMPLE_RATE
                    got = await self._video_frames(ctx, video, end)
                    if got is None:
                        await loop.run_in_executor(ctx.executor, video.close)
                        video = None
                    frames = got or []
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
                self.emit_frame(ctx, *frame)
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
            self.emit_frame(ctx, *frame)
            frame = next(queued, None)
        return position + len(block)
