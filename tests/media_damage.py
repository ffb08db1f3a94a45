"""Damaged media for the fuzz test: good originals made with ffmpeg, and damaged copies of them.

Each damaged copy is one way a file gets hurt: cut short (in its header or its body), junk
written over part of its header or body, bytes flipped, a block zeroed, junk appended, a valid
header in front of random data, a file of random bytes, an empty file.
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "realtime" / "samples" / "conversation.flac"

#: ffmpeg output options per format (mono speech; MP4 audio with its index at the front).
FORMATS: dict[str, list[str]] = {
    "wav": ["-c:a", "pcm_s16le"],
    "flac": ["-c:a", "flac"],
    "mp3": ["-c:a", "libmp3lame", "-b:a", "64k"],
    "m4a": ["-c:a", "aac", "-b:a", "64k", "-movflags", "+faststart"],
    "webm": ["-c:a", "libopus", "-b:a", "32k"],
}


@dataclass(frozen=True)
class Damaged:
    path: Path
    original: Path
    kind: str  # truncate, header-junk, body-junk, flips, zeros, appended, random-body, ...


def make_originals(folder: Path, seconds: float) -> dict[str, Path]:
    """The first ``seconds`` of the bundled sample (mono, 16 kHz) in every format of FORMATS."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for ext, options in FORMATS.items():
        path = folder / f"original.{ext}"
        subprocess.run(
            [
                *("ffmpeg", "-v", "error", "-y", "-i", str(SAMPLE), "-t", str(seconds)),
                *("-ac", "1", "-ar", "16000", *options, str(path)),
            ],
            check=True,
        )
        out[ext] = path
    return out


def header_size(data: bytes, ext: str) -> int:
    """Bytes before the audio data (a rough bound for the compressed formats)."""
    if ext == "wav":
        index = data.find(b"data")
        return index + 8 if index >= 0 else 44
    return min(len(data) // 10, {"flac": 8192, "mp3": 1024, "m4a": 2048, "webm": 512}[ext])


def damage(data: bytes, ext: str, seed: int) -> Iterator[tuple[str, bytes]]:
    """(kind, damaged bytes) for one original."""
    rng = random.Random(seed)
    head = header_size(data, ext)
    body = len(data) - head

    def junk(n: int) -> bytes:
        return bytes(rng.randrange(256) for _ in range(n))

    def overwrite(at: int, piece: bytes) -> bytes:
        return data[:at] + piece + data[at + len(piece) :]

    for fraction in (0.3, 0.7):
        yield "truncate-header", data[: max(1, int(head * fraction))]
    for fraction in (0.05, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 0.98):
        yield "truncate-body", data[: head + int(body * fraction)]
    for _ in range(6):
        at = rng.randrange(0, max(1, head - 8))
        yield "header-junk", overwrite(at, junk(min(8, head - at)))
    for fraction in (0.1, 0.2, 0.35, 0.5, 0.6, 0.7, 0.8, 0.9):
        yield "body-junk", overwrite(head + int(body * fraction), junk(rng.randrange(256, 4096)))
    for count in (1, 10, 100):
        for _ in range(3):
            damaged = bytearray(data)
            for _ in range(count):
                at = rng.randrange(head, len(data))
                damaged[at] ^= 1 << rng.randrange(8)
            yield "flips", bytes(damaged)
    for fraction in (0.25, 0.5, 0.75):
        yield "zeros", overwrite(head + int(body * fraction), bytes(2048))
    yield "appended", data + junk(4096)
    yield "appended", data + data[: len(data) // 3]
    yield "random-body", data[:head] + junk(body)
    yield "random-body", data[:head] + junk(body // 2)
    yield "random-file", junk(len(data))
    yield "random-file", junk(64)
    yield "empty", b""


def make_corpus(folder: Path, seconds: float) -> tuple[dict[str, Path], list[Damaged]]:
    originals = make_originals(folder / "originals", seconds)
    corpus = []
    for index, (ext, original) in enumerate(sorted(originals.items())):
        data = original.read_bytes()
        for number, (kind, damaged) in enumerate(damage(data, ext, seed=index)):
            path = folder / f"{number:02d}-{kind}.{ext}"
            path.write_bytes(damaged)
            corpus.append(Damaged(path, original, kind))
    return originals, corpus
