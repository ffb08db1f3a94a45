"""Soak test: an hour of the bundled sample in one stream must segment like its first minute.

    python benchmarks/soak.py --vad-only [--minutes 60] [--no-renewal]
    python benchmarks/soak.py [--minutes 60] [--warmup-copies 2] [--keep DIR] [-- EXTRA REPLAY ARGS]

The bundled sample (``realtime/samples/conversation.flac``: 42.9 s, eight turns, exact digital
silence between them) is repeated back to back for ``--minutes`` (default 60: 84 copies).

``--vad-only`` feeds its mono mix (as ``emotrack replay`` mixes it) through the speech segmenter
alone (``realtime.vad.VadSegmenter`` with the default options and the real webrtcvad), in 1 s
blocks, as fast as it goes; ``--no-renewal`` uses one webrtcvad instance for the whole stream, as
before the fix for issue 11 (it merges the first two turns of every copy from minute 20 on).

Without ``--vad-only`` the repeated audio is written to a FLAC file and replayed through the whole
pipeline by the real command, ``python -m realtime replay FILE --speed max --sink jsonl --output
OUT --no-video`` (Whisper, context, UniMSE; arguments after ``--`` are passed on), in a subprocess
whose resident memory (VmRSS from /proc) is sampled every 0.5 s. "After warm-up" is the moment the
results of the first ``--warmup-copies`` copies have been written.

Reported: utterances per copy (first vs last; which copies differ from the first), resident memory
after warm-up and at the end (growth target <= 50 MB), and audio seconds per wall second. The exit
status is 1 when a copy's utterance count differs from the first's or memory grew more than the
target.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from realtime.config import VadOptions  # noqa: E402
from realtime.messages import SAMPLE_RATE  # noqa: E402
from realtime.vad import SpeechSegment, VadSegmenter, WebRtcVadAnalyzer  # noqa: E402

SAMPLE = ROOT / "realtime" / "samples" / "conversation.flac"
RSS_GROWTH_TARGET_MB = 50.0
POLL_S = 0.5


@dataclass
class Soak:
    counts: list[int]  # utterances per copy
    copy_s: float
    audio_s: float
    wall_s: float
    rss_warm: float | None  # MB
    rss_end: float | None
    rss_peak: float | None = None
    after_warmup_rate: float | None = None  # audio seconds per wall second after warm-up
    renewals: int | None = None
    first: list[tuple[float, float]] = field(default_factory=list)  # segments, copy time
    last: list[tuple[float, float]] = field(default_factory=list)
    log: Path | None = None


def read_sample() -> np.ndarray:
    """The sample as float32, shape (samples, channels)."""
    import soundfile as sf

    audio, rate = sf.read(str(SAMPLE), dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE:
        raise SystemExit(f"{SAMPLE} is {rate} Hz, expected {SAMPLE_RATE}")
    return audio


def copies_for(minutes: float, copy_s: float) -> int:
    return max(1, math.ceil(minutes * 60 / copy_s - 1e-9))


def rss_mb(pid: int | str = "self") -> float | None:
    """Resident memory of a process in MB (Linux /proc), None where it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def runs(values: Sequence[int]) -> str:
    """Run-length summary of per-copy counts: "8 (copies 0-27), 7 (copies 28-83)"."""
    parts, start = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            span = f"copy {start}" if i - 1 == start else f"copies {start}-{i - 1}"
            parts.append(f"{values[start]} ({span})")
            start = i
    return ", ".join(parts)


def first_starts(lines: list[str]) -> list[float]:
    """The start of each result among JSON ``lines`` (not of its later versions, re-reads)."""
    results = [json.loads(line) for line in lines]
    return [float(r["start"]) for r in results if not r.get("revision")]


def per_copy_counts(starts: Sequence[float], copies: int, copy_s: float) -> list[int]:
    counts = [0] * copies
    for start in starts:
        counts[min(int(start // copy_s), copies - 1)] += 1
    return counts


def soak_vad(copies: int, renewal: bool) -> Soak:
    mono = read_sample().mean(axis=1).astype(np.float32)  # as the file source mixes channels
    copy_s = len(mono) / SAMPLE_RATE
    analyzer = WebRtcVadAnalyzer(renew_after=1e9) if not renewal else None
    segmenter = VadSegmenter(VadOptions(), analyzer)
    times: list[tuple[float, float]] = []  # (start, end); the audio is dropped, as ASR would
    rss_warm: float | None = None
    started = time.perf_counter()
    for copy in range(copies):
        for offset in range(0, len(mono), SAMPLE_RATE):
            t = (copy * len(mono) + offset) / SAMPLE_RATE
            closed = segmenter.push(mono[offset : offset + SAMPLE_RATE], t, arrived=t)
            times += [(s.start, s.end) for s in closed if isinstance(s, SpeechSegment)]
        if copy == 0:
            rss_warm = rss_mb()
    times += [(s.start, s.end) for s in segmenter.flush() if isinstance(s, SpeechSegment)]
    wall = time.perf_counter() - started
    last = (copies - 1) * copy_s
    return Soak(
        counts=per_copy_counts([start for start, _ in times], copies, copy_s),
        copy_s=copy_s,
        audio_s=copies * copy_s,
        wall_s=wall,
        rss_warm=rss_warm,
        rss_end=rss_mb(),
        renewals=getattr(segmenter.analyzer, "renewals", None),
        first=[(start, end) for start, end in times if start < copy_s],
        last=[
            (round(start - last, 2), round(end - last, 2)) for start, end in times if start >= last
        ],
    )


def write_repeated(path: Path, copies: int) -> float:
    """Write ``copies`` copies of the sample back to back (16-bit FLAC, as the sample is)."""
    import soundfile as sf

    audio = read_sample()
    with sf.SoundFile(
        str(path), "w", SAMPLE_RATE, audio.shape[1], subtype="PCM_16", format="FLAC"
    ) as out:
        for _ in range(copies):
            out.write(audio)
    return len(audio) / SAMPLE_RATE


def read_new_lines(path: Path, offset: int, partial: str) -> tuple[list[str], int, str]:
    """Complete lines appended to ``path`` since ``offset`` (the rest is kept as ``partial``)."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset, partial
    text = partial + data.decode("utf-8", errors="replace")
    *lines, partial = text.split("\n")
    return [line for line in lines if line.strip()], offset + len(data), partial


def soak_pipeline(copies: int, warmup_copies: int, keep: Path | None, extra: list[str]) -> Soak:
    with tempfile.TemporaryDirectory(prefix="emotrack-soak-") as tmp:
        folder = keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        media, output, log = folder / "soak.flac", folder / "results.jsonl", folder / "replay.log"
        output.unlink(missing_ok=True)
        copy_s = write_repeated(media, copies)
        options = ["--speed", "max", "--sink", "jsonl", "--no-video"]
        command = [sys.executable, "-m", "realtime", "replay", str(media), *options]
        command += ["--output", str(output), *extra]
        print("running:", " ".join(command), flush=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        warm_s = warmup_copies * copy_s  # results past this stream time: warmed up
        starts: list[float] = []
        samples: list[tuple[float, float]] = []  # (seconds since start, RSS MB)
        warm: tuple[float, float, float] | None = None  # (seconds, RSS MB, audio seconds done)
        offset, partial = 0, ""
        started = time.perf_counter()
        with log.open("w") as log_file:
            process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT
            )
            while True:
                done = process.poll() is not None
                now = time.perf_counter() - started
                rss = rss_mb(process.pid) if not done else None
                if rss is not None:
                    samples.append((now, rss))
                lines, offset, partial = read_new_lines(output, offset, partial)
                starts += first_starts(lines)
                if warm is None and rss is not None and starts and max(starts) >= warm_s:
                    warm = (now, rss, max(starts))
                if done:
                    break
                time.sleep(POLL_S)
        wall = time.perf_counter() - started
        if process.returncode != 0:
            tail = log.read_text(errors="replace")[-3000:]
            raise SystemExit(f"replay failed (exit {process.returncode}):\n{tail}")
        lines, offset, partial = read_new_lines(output, offset, partial + "\n")
        starts += first_starts(lines)
        audio_s = copies * copy_s
        after = None
        if warm is not None and wall > warm[0]:
            after = (audio_s - warm[2]) / (wall - warm[0])
        return Soak(
            counts=per_copy_counts(starts, copies, copy_s),
            copy_s=copy_s,
            audio_s=audio_s,
            wall_s=wall,
            rss_warm=warm[1] if warm else None,
            rss_end=samples[-1][1] if samples else None,
            rss_peak=max((rss for _, rss in samples), default=None),
            after_warmup_rate=after,
            log=log if keep else None,
        )


def mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} MB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Arguments after -- are passed to `emotrack replay` (full-pipeline mode only).",
    )
    parser.add_argument(
        "--minutes", type=float, default=60.0, help="length of the stream (default 60)"
    )
    parser.add_argument(
        "--vad-only", action="store_true", help="only the speech segmenter (fast), no pipeline"
    )
    parser.add_argument(
        "--no-renewal",
        action="store_true",
        help="--vad-only: one webrtcvad instance for the whole stream (the behaviour before the "
        "fix, for comparison)",
    )
    parser.add_argument(
        "--warmup-copies",
        type=int,
        default=2,
        metavar="N",
        help="memory 'after warm-up' is read once results of N copies are out (default 2)",
    )
    parser.add_argument(
        "--keep", type=Path, metavar="DIR", help="keep the audio, results and log in DIR"
    )
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    args = parser.parse_args(argv)
    if args.minutes <= 0:
        parser.error("--minutes must be > 0")
    if args.no_renewal and not args.vad_only:
        parser.error("--no-renewal needs --vad-only")

    copy_s = len(read_sample()) / SAMPLE_RATE
    copies = copies_for(args.minutes, copy_s)
    if copies <= args.warmup_copies and not args.vad_only:
        parser.error("--minutes must cover more copies than --warmup-copies")
    mode = "speech segmenter only" if args.vad_only else "full pipeline (emotrack replay)"
    if args.vad_only:
        mode += ", one webrtcvad instance" if args.no_renewal else ", webrtcvad renewed"
    print(f"soak: {copies} copies of {SAMPLE.name} ({copy_s:.2f} s each), {mode}", flush=True)
    if args.vad_only:
        result = soak_vad(copies, renewal=not args.no_renewal)
    else:
        result = soak_pipeline(copies, args.warmup_copies, args.keep, extra)

    counts = result.counts
    differing = [i for i, c in enumerate(counts) if c != counts[0]]
    rss_warm, rss_end = result.rss_warm, result.rss_end
    growth = rss_end - rss_warm if rss_warm is not None and rss_end is not None else None
    warm_label = "after the first copy" if args.vad_only else f"after {args.warmup_copies} copies"
    rows = [
        ("audio", f"{copies} copies, {result.audio_s / 60:.1f} min"),
        ("utterances", f"{sum(counts)}"),
        ("utterances per copy, first / last", f"{counts[0]} / {counts[-1]}"),
        ("utterances per copy, all", runs(counts)),
        (
            "copies whose count differs from the first",
            "none" if not differing else f"{len(differing)} (first: copy {differing[0]})",
        ),
        (f"resident memory {warm_label} / end", f"{mb(rss_warm)} / {mb(rss_end)}"),
        (
            f"memory growth (target <= {RSS_GROWTH_TARGET_MB:.0f} MB)",
            "n/a" if growth is None else f"{growth:+.1f} MB",
        ),
        ("wall time", f"{result.wall_s:.1f} s"),
        ("audio seconds per wall second", f"{result.audio_s / result.wall_s:.1f}"),
    ]
    if result.after_warmup_rate is not None:
        rows.append(
            ("audio seconds per wall second after warm-up", f"{result.after_warmup_rate:.1f}")
        )
    if result.rss_peak is not None:
        rows.append(("peak resident memory", mb(result.rss_peak)))
    if result.renewals is not None:
        rows.append(("webrtcvad renewals", f"{result.renewals}"))
    print()
    print("| what | measured |")
    print("|---|---|")
    for what, value in rows:
        print(f"| {what} | {value} |")
    if args.vad_only:
        print(f"\nsegments of the first copy: {result.first}")
        print(f"segments of the last copy:  {result.last}")
    if result.log is not None:
        print(f"\nreplay log: {result.log}")
    if args.vad_only:
        print(
            "\nThe whole pipeline (Whisper + UniMSE on every utterance) for the same length: "
            f"python benchmarks/soak.py --minutes {args.minutes:g}"
        )
    ok = not differing and (growth is None or growth <= RSS_GROWTH_TARGET_MB)
    print("\nresult:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
