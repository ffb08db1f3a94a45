"""Synthetic conversations with espeak-ng: a script with known pauses -> audio + true speech times.

Used to make the bundled sample conversation, by ``emotrack bench latency`` (which needs speech end
times it can trust) and by the tests. A script is plain text, one turn per line::

    # comment
    Maya: Hi Tom, how was your weekend?
    [pause 1.5]
    Tom: It was wonderful.

``[pause S]`` sets the silence after the previous turn (default :data:`DEFAULT_PAUSE`). The true
start and end of each turn are measured on the synthesised audio (espeak-ng pads its output with
silence), so they mark where speech really begins and ends.
"""

from __future__ import annotations

import io
import math
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from unimse.whisper import SAMPLE_RATE

DEFAULT_PAUSE = 1.2
LEAD_IN = 0.5  # silence before the first turn
TAIL = 1.0  # silence after the last turn
# Two clearly different espeak-ng voices, in order of first appearance of each speaker.
DEFAULT_VOICES = ("en-us+m3", "en-gb+f2", "en-us+m7", "en-gb+f4")

_PAUSE = re.compile(r"^\[pause\s+(\S+)\]$", re.IGNORECASE)
_TURN = re.compile(r"^([^:\[\]#]{1,40}):\s*(.+)$")


class SynthesisError(RuntimeError):
    """espeak-ng is missing or failed; the message says which."""


@dataclass(frozen=True)
class ScriptLine:
    speaker: str
    text: str
    pause_after: float = DEFAULT_PAUSE


@dataclass(frozen=True)
class SpokenLine:
    """A synthesised turn: where its speech truly starts and ends in the conversation audio."""

    speaker: str
    text: str
    start: float
    end: float
    channel: int = 0


@dataclass(frozen=True)
class Conversation:
    audio: np.ndarray = field(repr=False)  # float32 16 kHz, (n,) mono or (n, speakers) stereo
    lines: tuple[SpokenLine, ...]
    speakers: tuple[str, ...]  # in order of first appearance (= channel order when stereo)

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def _seconds(text: str, number: int) -> float:
    """A pause's length: a number of seconds >= 0, else ValueError naming script line ``number``."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not seconds >= 0 or math.isinf(seconds):
        raise ValueError(f"script line {number}: a pause takes seconds >= 0, got {text!r}")
    return seconds


def parse_script(text: str) -> list[ScriptLine]:
    """Parse the script format described in the module docstring; raises ValueError on bad lines."""
    lines: list[ScriptLine] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pause = _PAUSE.match(line)
        if pause:
            if not lines:
                raise ValueError(f"script line {number}: a pause needs a turn before it")
            last = lines[-1]
            lines[-1] = ScriptLine(last.speaker, last.text, _seconds(pause.group(1), number))
            continue
        turn = _TURN.match(line)
        if not turn:
            raise ValueError(f"script line {number}: expected 'Speaker: text', got {line!r}")
        lines.append(ScriptLine(turn.group(1).strip(), turn.group(2).strip()))
    if not lines:
        raise ValueError("the script has no turns")
    return lines


def speak(text: str, voice: str, *, words_per_minute: int = 165) -> np.ndarray:
    """``text`` spoken by espeak-ng voice ``voice``, as 16 kHz mono float32."""
    import soundfile as sf
    import soxr

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SynthesisError("espeak-ng is not installed (apt-get install espeak-ng)")
    proc = subprocess.run(  # text on stdin: a line like "-Yeah." is not an option
        [exe, "-v", voice, "-s", str(words_per_minute), "--stdout", "--stdin"],
        input=text.encode("utf-8"),
        capture_output=True,
        check=False,
        timeout=60,
    )
    if proc.returncode != 0 or not proc.stdout:
        message = proc.stderr.decode(errors="replace").strip() or f"exit code {proc.returncode}"
        raise SynthesisError(f"espeak-ng failed for voice {voice!r}: {message}")
    audio, rate = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        audio = soxr.resample(audio, rate, SAMPLE_RATE).astype(np.float32)
    return np.asarray(audio, dtype=np.float32)


def speech_bounds(
    audio: np.ndarray, threshold: float = 0.01, window: float = 0.01
) -> tuple[int, int]:
    """First and last sample of the windows whose RMS exceeds ``threshold`` (the real speech)."""
    size = max(1, int(window * SAMPLE_RATE))
    count = len(audio) // size
    rms = np.sqrt(np.mean(audio[: count * size].reshape(count, size) ** 2, axis=1))
    loud = np.flatnonzero(rms > threshold)
    if len(loud) == 0:
        raise SynthesisError("synthesised audio is silent")
    return int(loud[0] * size), int((loud[-1] + 1) * size)


def synthesize(
    script: Sequence[ScriptLine],
    *,
    voices: dict[str, str] | None = None,
    stereo: bool = False,
    lead_in: float = LEAD_IN,
    tail: float = TAIL,
) -> Conversation:
    """Speak every turn with its speaker's voice, separated by the script's pauses.

    The pause after a turn is measured from the end of its real speech to the start of the next
    turn's speech. ``stereo`` puts each speaker on its own channel (like a call recording).
    """
    speakers = tuple(dict.fromkeys(line.speaker for line in script))
    chosen = dict(voices or {})
    for i, speaker in enumerate(speakers):
        chosen.setdefault(speaker, DEFAULT_VOICES[i % len(DEFAULT_VOICES)])
    pieces: list[tuple[int, np.ndarray, int]] = []  # (offset, speech, channel)
    spoken: list[SpokenLine] = []
    cursor = lead_in
    for line in script:
        audio = speak(line.text, chosen[line.speaker])
        first, last = speech_bounds(audio)
        speech = audio[first:last]
        offset = round(cursor * SAMPLE_RATE)
        channel = speakers.index(line.speaker) if stereo else 0
        pieces.append((offset, speech, channel))
        start = offset / SAMPLE_RATE
        end = (offset + len(speech)) / SAMPLE_RATE
        spoken.append(SpokenLine(line.speaker, line.text, start, end, channel))
        cursor = end + line.pause_after
    total = round((spoken[-1].end + tail) * SAMPLE_RATE)
    mix = np.zeros((total, len(speakers) if stereo else 1), dtype=np.float32)
    for offset, speech, channel in pieces:
        mix[offset : offset + len(speech), channel] += speech
    audio_out = mix if stereo else mix[:, 0]
    return Conversation(np.clip(audio_out, -1.0, 1.0), tuple(spoken), speakers)


def write_audio(path: str | Path, audio: np.ndarray) -> Path:
    """Write 16 kHz audio; the format follows the suffix (.wav, .flac, .ogg)."""
    import soundfile as sf

    out = Path(path)
    subtype = "VORBIS" if out.suffix.lower() == ".ogg" else "PCM_16"
    sf.write(str(out), audio, SAMPLE_RATE, subtype=subtype)
    return out


def write_video(path: str | Path, image: np.ndarray, audio: np.ndarray, fps: int = 10) -> Path:
    """An mp4 (H.264 + AAC, via PyAV) showing ``image`` (BGR) while ``audio`` (16 kHz mono) plays.

    Used to replay a face with speech when no recorded video exists (tests, the camera benchmark).
    """
    from fractions import Fraction

    import av

    height, width = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2  # yuv420p needs even sizes
    picture = np.ascontiguousarray(image[:height, :width])
    out = Path(path)
    with av.open(str(out), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound = container.add_stream("aac", rate=SAMPLE_RATE)
        sound.layout = "mono"
        for i in range(int(len(audio) / SAMPLE_RATE * fps) + 1):
            frame = av.VideoFrame.from_ndarray(picture, format="bgr24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            container.mux(video.encode(frame))
        container.mux(video.encode())
        size = sound.codec_context.frame_size or 1024
        resampler = av.AudioResampler(format=sound.codec_context.format.name, layout="mono")
        for start in range(0, len(audio), size):
            block = np.zeros((1, size), np.float32)
            piece = audio[start : start + size]
            block[0, : len(piece)] = piece
            chunk = av.AudioFrame.from_ndarray(block, format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = SAMPLE_RATE, start
            for converted in resampler.resample(chunk):
                container.mux(sound.encode(converted))
        container.mux(sound.encode())
    return out


def script_text(lines: Iterable[ScriptLine]) -> str:
    """The script format for ``lines`` (the inverse of :func:`parse_script`)."""
    out = []
    for line in lines:
        out.append(f"{line.speaker}: {line.text}")
        out.append(f"[pause {line.pause_after:g}]")
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m unimse.synth SCRIPT OUT [--stereo]``: synthesise a script to an audio file."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m unimse.synth",
        description="Synthesise a conversation script with espeak-ng (16 kHz; .wav, .flac, .ogg).",
    )
    parser.add_argument("script", type=Path, help="'Speaker: text' lines and '[pause S]' lines")
    parser.add_argument("output", type=Path, help="audio file to write")
    parser.add_argument("--stereo", action="store_true", help="one speaker per channel")
    args = parser.parse_args(argv)
    conversation = synthesize(
        parse_script(args.script.read_text(encoding="utf-8")), stereo=args.stereo
    )
    write_audio(args.output, conversation.audio)
    for line in conversation.lines:
        print(f"{line.start:7.2f} {line.end:7.2f}  {line.speaker}: {line.text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
