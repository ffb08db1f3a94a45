"""Enrolment: known voices from short clips (``--enroll NAME=FILE``), as voice prints.

Blocking (file reads, the model): call it on the executor, or before the pipeline starts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from realtime.config import ConfigError
from realtime.sources.base import SourceError
from realtime.sources.files import read_whole_audio
from realtime.speakers.embedding import SAMPLE_RATE, SpeakerEmbedder


class EnrolmentError(ConfigError):
    """A bad ``NAME=FILE`` or an unreadable clip; the message says which (a user error: one
    line, exit 2)."""


def parse_enrolment(spec: str) -> tuple[str, Path]:
    """``"Ana=clips/ana.wav"`` -> ``("Ana", Path("clips/ana.wav"))``."""
    name, sep, path = spec.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise EnrolmentError(f"expected NAME=FILE, got {spec!r}")
    return name.strip(), Path(path.strip())


def read_clip(path: str | Path) -> np.ndarray:
    """An audio file as 16 kHz mono float32 (channels averaged, resampled when needed)."""
    try:
        audio, rate = read_whole_audio(path, "enrolment clip")
    except SourceError as error:
        raise EnrolmentError(str(error)) from None
    mono = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        import soxr

        mono = soxr.resample(mono, rate, SAMPLE_RATE)
    if len(mono) == 0:
        raise EnrolmentError(f"enrolment clip {path} is empty")
    return np.asarray(mono, dtype=np.float32)


def voice_prints(
    embedder: SpeakerEmbedder, clips: Mapping[str, str | Path | np.ndarray]
) -> dict[str, np.ndarray]:
    """Name -> voice print, for clips given as files or as 16 kHz mono audio."""
    out: dict[str, np.ndarray] = {}
    for name, clip in clips.items():
        audio = clip if isinstance(clip, np.ndarray) else read_clip(clip)
        out[name] = embedder.embed(audio)
    return out


def enrolment_prints(embedder: SpeakerEmbedder, specs: Sequence[str]) -> dict[str, np.ndarray]:
    """Name -> voice print for ``NAME=FILE`` specs (``--enroll``); a name given twice fails."""
    clips: dict[str, Path] = {}
    for spec in specs:
        name, path = parse_enrolment(spec)
        if name in clips:
            raise EnrolmentError(f"speaker {name!r} is enrolled twice")
        clips[name] = path.expanduser()
    return voice_prints(embedder, clips)
