"""Diarisation through the whole product: ``emotrack replay --diarize`` of RAVDESS mono mixes.

Unlike ``speaker_assign.py`` (known utterance boundaries, voice prints and assignment only), this
replays each mix through the real command: the VAD cuts the utterances, Whisper transcribes, the
speaker stage labels and revises, and the JSON lines are scored. The mixes are
``speaker_assign.build`` conversations (2 male and 2 female actors, shuffled clips, 0.8-1.5 s
pauses) with a -70 dBFS noise floor added (a room is never digital silence, which webrtcvad
handles badly: see ``realtime/vad.py``). Each result is matched to the clip it overlaps most;
accuracy is over the results, best one-to-one mapping of labels, as emitted and after the
``speaker_revised`` lines.

    .venv/bin/python benchmarks/diarize_replay.py                  # dev actors 01-16, 2 seeds
    .venv/bin/python benchmarks/diarize_replay.py --clips 25 --seeds 1 --max-speakers 0
    .venv/bin/python benchmarks/diarize_replay.py --sets sample --max-speakers 2
    .venv/bin/python benchmarks/diarize_replay.py --sets test      # actors 17-20: once
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from speaker_assign import (  # noqa: E402
    RATE,
    RAVDESS_DEV,
    RAVDESS_TEST,
    accuracy,
    build,
    sample_conversation,
)

from train.datadir import DEFAULT_DATA_DIR  # noqa: E402

NOISE_DBFS = -70.0
MIXED_S = 0.2  # a result holds a turn when it overlaps this much of it


def ravdess_mix(
    data: Path, actors: Sequence[str], seed: int, clips: int, path: Path
) -> list[tuple[str, float, float]]:
    """Write a mono mix of ``actors`` to ``path``; returns its turns: (actor, start s, end s)."""
    import soundfile as sf

    conversation = build(data, "ravdess", actors, seed, clips)
    rng = np.random.default_rng(1000 + seed)
    noise = rng.normal(0.0, 10 ** (NOISE_DBFS / 20), len(conversation.audio))
    sf.write(str(path), (conversation.audio + noise).astype(np.float32), RATE)
    return [(t.speaker, t.start / RATE, t.end / RATE) for t in conversation.turns]


def sample_mix(path: Path) -> list[tuple[str, float, float]]:
    """The bundled sample mixed to mono (its own noise floor); turns from each channel's energy."""
    import soundfile as sf

    conversation = sample_conversation()
    sf.write(str(path), conversation.audio.astype(np.float32), RATE)
    return [(t.speaker, t.start / RATE, t.end / RATE) for t in conversation.turns]


def score(
    lines: Sequence[dict[str, Any]], turns: Sequence[tuple[str, float, float]]
) -> dict[str, Any]:
    """Accuracy as emitted and after revisions, speakers found, revisions, results (a re-read,
    ``realtime/reread.py``, is a later version of a result, not another one)."""
    results = [line for line in lines if "kind" not in line and not line.get("reread")]
    revisions = [line for line in lines if line.get("kind") == "speaker_revised"]
    emitted = {r["utterance_seq"]: r["speaker"] for r in results}
    final = dict(emitted)
    for line in revisions:
        final[line["utterance_seq"]] = line["speaker"]
    truth, mixed = [], 0
    for r in results:
        overlap = [min(r["end"], end) - max(r["start"], start) for _, start, end in turns]
        truth.append(turns[int(np.argmax(overlap))][0])
        voices = {turns[i][0] for i, seconds in enumerate(overlap) if seconds > MIXED_S}
        mixed += len(voices) > 1
    order = [r["utterance_seq"] for r in results]
    return {
        "turns": len(turns),
        "results": len(results),
        "emitted": accuracy(truth, [emitted[s] for s in order]),
        "final": accuracy(truth, [final[s] for s in order]),
        "speakers": len(set(final.values())),
        "revisions": len(revisions),
        "mixed": mixed,  # results holding speech of two speakers (turns the VAD joined)
    }


def replay(media: Path, out: Path, *extra: str) -> list[dict[str, Any]]:
    """``emotrack replay MEDIA --speed max --sink jsonl --output OUT --diarize *extra``."""
    out.unlink(missing_ok=True)
    command = [sys.executable, "-m", "realtime", "-q", "replay", str(media), "--speed", "max"]
    command += ["--sink", "jsonl", "--output", str(out), "--diarize", *extra]
    subprocess.run(command, check=True, cwd=HERE.parent)
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def mix_list(sets: str, seeds: int) -> list[tuple[str, Sequence[str], int]]:
    """(name, actors, seed) of each mix; no actors: the bundled sample."""
    if sets == "sample":
        return [("bundled sample (mono mix)", (), 0)]
    groups = RAVDESS_DEV if sets == "dev" else RAVDESS_TEST
    return [(f"RAVDESS {'-'.join(a)} seed {s}", a, s) for a in groups for s in range(seeds)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parent / DEFAULT_DATA_DIR)
    parser.add_argument("--clips", type=int, default=12, help="clips per actor (default 12)")
    parser.add_argument("--seeds", type=int, default=2, help="mixes per actor set (default 2)")
    parser.add_argument("--max-speakers", type=int, default=4, help="0: no cap (default 4)")
    parser.add_argument("--sets", choices=("dev", "test", "sample"), default="dev")
    args = parser.parse_args(argv)
    extra = ["--max-speakers", str(args.max_speakers)] if args.max_speakers else []
    rows = []
    with tempfile.TemporaryDirectory(prefix="diarize-") as tmp:
        media, out = Path(tmp) / "mix.wav", Path(tmp) / "out.jsonl"
        for name, actors, seed in mix_list(args.sets, args.seeds):
            if actors:
                turns = ravdess_mix(args.data, actors, seed, args.clips, media)
            else:
                turns = sample_mix(media)
            row = score(replay(media, out, *extra), turns)
            rows.append(row)
            print(f"{name}: {json.dumps(row)}", flush=True)
    for key in ("emitted", "final"):
        values = [row[key] for row in rows]
        print(f"{key}: mean {np.mean(values):.3f}, min {min(values):.3f} over {len(rows)} mixes")
    found = [row["speakers"] for row in rows]
    print(f"speakers found: {found}; revisions per mix: {[row['revisions'] for row in rows]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
