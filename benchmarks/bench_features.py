"""Feature-extraction cost: acoustic per second of audio, visual per video frame.

    python benchmarks/bench_features.py [--runs 7] [--threads 1] [--no-write]

Each number is the median wall time over ``--runs`` timed runs after one warm-up run. Audio is
real speech from ``../shared/data`` (EMO-DB and speech_av clips joined) when present, otherwise a
synthetic harmonic tone with noise; frames are 640x480 BGR images with a drawn face (the same kind
the tests use) or without one. Results go to ``docs/BENCHMARKS.md`` under "## Feature extraction"
(replacing that section only) unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from train.datadir import DEFAULT_DATA_DIR  # noqa: E402
from unimse.features import (  # noqa: E402
    ACOUSTIC_SPEC,
    SAMPLE_RATE,
    VISUAL_SPEC,
    acoustic_extractor,
    visual_extractor,
)

SHARED_DATA = ROOT / DEFAULT_DATA_DIR
HEADING = "## Feature extraction"


def median_seconds(function: Callable[[], object], runs: int) -> float:
    function()  # warm-up (imports, JIT, caches)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def speech(seconds: float) -> tuple[np.ndarray, str]:
    """``seconds`` of real speech if the shared data is present, else a voice-like tone."""
    folders = [SHARED_DATA / "speech_av", SHARED_DATA / "emodb"]
    files = sorted(p for folder in folders if folder.is_dir() for p in folder.glob("*.wav"))
    if files:
        from train.audio_data import read_audio

        clips, total = [], 0
        for path in files:
            clips.append(read_audio(path))
            total += len(clips[-1])
            if total >= seconds * SAMPLE_RATE:
                break
        audio = np.concatenate(clips)[: int(seconds * SAMPLE_RATE)]
        return audio, "real speech (speech_av / EMO-DB clips joined)"
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    wave = sum(np.sin(k * phase) / k for k in range(1, 8))
    noise = np.random.default_rng(0).standard_normal(len(t))
    return (0.05 * wave + 0.005 * noise).astype(np.float32), "synthetic harmonic tone + noise"


def face_frame(size: tuple[int, int] = (480, 640)) -> np.ndarray:
    """A 640x480 BGR frame with a drawn smiling face that the Haar cascade finds."""
    img = np.full((*size, 3), (90, 110, 120), np.uint8)
    cx, cy = size[1] // 2, size[0] // 2
    cv2.ellipse(img, (cx, cy), (95, 125), 0, 0, 360, (150, 175, 215), -1)
    cv2.ellipse(img, (cx, cy - 120), (100, 45), 0, 180, 360, (40, 50, 60), -1)
    for dx in (-40, 40):
        cv2.ellipse(img, (cx + dx, cy - 50), (28, 8), 0, 180, 360, (50, 60, 70), 6)
        cv2.ellipse(img, (cx + dx, cy - 25), (20, 11), 0, 0, 360, (235, 235, 235), -1)
        cv2.circle(img, (cx + dx, cy - 25), 8, (40, 30, 30), -1)
    cv2.line(img, (cx, cy - 15), (cx - 8, cy + 30), (120, 140, 180), 4)
    cv2.ellipse(img, (cx, cy + 32), (18, 7), 0, 0, 360, (110, 130, 170), -1)
    cv2.ellipse(img, (cx, cy + 55), (42, 22), 0, 0, 180, (60, 60, 150), -1)
    cv2.ellipse(img, (cx, cy + 55), (36, 10), 0, 0, 180, (240, 240, 240), -1)
    return cv2.GaussianBlur(img, (0, 0), 3)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, load average {load} at start; "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"numpy {np.__version__}, torch {torch.__version__}, OpenCV {cv2.__version__}"
    )


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per measurement (>= 5)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch and OpenCV threads (0: library defaults)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if args.runs < 5:
        parser.error("--runs must be at least 5")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    threads = f"torch {torch.get_num_threads()} / OpenCV {cv2.getNumThreads()} threads"

    acoustic = acoustic_extractor(ACOUSTIC_SPEC)
    rows = []
    for seconds in (1.0, 5.0, 20.0):
        audio, source = speech(seconds)
        duration = len(audio) / SAMPLE_RATE
        t = median_seconds(functools.partial(acoustic, audio), args.runs)
        rows.append(
            f"| acoustic `{ACOUSTIC_SPEC.name}`, {duration:.0f} s utterance | "
            f"{t * 1000:.1f} ms | **{t / duration * 1000:.1f} ms per second of audio** "
            f"(real-time factor {t / duration:.4f}) |"
        )

    visual = visual_extractor(VISUAL_SPEC)
    face = face_frame()
    rng = np.random.default_rng(0)
    empty = cv2.GaussianBlur(rng.integers(0, 256, face.shape, dtype=np.uint8), (0, 0), 2)
    batch = [face] * 15
    measurements = [
        ("visual, 1 frame with a face (detect + align + crop + network)", [face]),
        (
            "visual, 15 frames with a face (0.5 s at 30 fps; face followed, one network batch)",
            batch,
        ),
        ("visual, 1 textured frame without a face (detection only)", [empty]),
    ]
    for label, frames in measurements:
        t = median_seconds(functools.partial(visual, frames), args.runs)
        rows.append(
            f"| {label} | {t * 1000:.1f} ms | **{t / len(frames) * 1000:.1f} ms per frame** |"
        )
    gray = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY)
    box = visual.detect(gray)
    if box is None:
        raise RuntimeError("the drawn face was not detected; cannot time the network on its crop")
    crops = np.stack([visual.crop(gray, box)] * 16)
    t = median_seconds(lambda: visual.classify(crops), args.runs)
    rows.append(
        f"| FER network alone, batch of 16 faces | {t * 1000:.1f} ms | "
        f"{t / 16 * 1000:.2f} ms per face |"
    )

    section = "\n".join(
        [
            HEADING,
            "",
            f"`python benchmarks/bench_features.py --runs {args.runs} --threads {args.threads}`: "
            f"median of {args.runs} runs after a warm-up, {threads}.",
            "",
            f"Machine: {machine()}.",
            f"Audio: {source}. Frames: 640x480 BGR, drawn face of about 250 px.",
            "",
            "| what | median time | per unit |",
            "|---|---|---|",
            *rows,
            "",
            "A load average above the CPU count means other processes shared the cores, and "
            "the times include waiting for them. On such a CPU, torch's default intra-op "
            "threads can make the tiny FER network many times slower (its threads wait for "
            "each other), which is why this benchmark uses one thread by default.",
            "",
        ]
    )
    print(section)
    if not args.no_write:
        write_section(ROOT / "docs" / "BENCHMARKS.md", section)
    return section


def write_section(path: Path, section: str) -> None:
    """Replace the "## Feature extraction" section of ``path`` (or append it), keeping the rest."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == HEADING), None)
    if start is None:
        updated = text.rstrip("\n") + "\n\n" + section
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        before = "\n".join(lines[:start]).rstrip("\n")
        after = "\n".join(lines[end:])
        updated = (before + "\n\n" if before else "") + section + ("\n" + after if after else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(updated.rstrip("\n") + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
