"""How often a speculative result is revised on real speech: ``emotrack replay --speculative``.

The speculative close (``--speculative``) publishes an utterance's result after a short silence;
if the speaker goes on, a revision replaces it. How often that happens depends on the pauses
inside a turn, so it is measured on real speech: the RAVDESS mono mixes of
``diarize_replay.py`` (dev actors, 4 per mix, 12 clips each, 0.8-1.5 s between turns, -70 dBFS
noise floor), replayed through the command for each silence asked for (the VAD decides on stream
time, so ``--speed max`` decides as real time would). Reported per silence: speculative results,
how many were revised (the revision rate), and whether the final utterances (the last version of
each) have the same start and end as without the speculative close.

    .venv/bin/python benchmarks/speculative_revisions.py --silences 0.18,0.21,0.24,0.3
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from diarize_replay import mix_list, ravdess_mix  # noqa: E402

from realtime.serialize import final_results  # noqa: E402
from train.datadir import DEFAULT_DATA_DIR  # noqa: E402


def replay(media: Path, out: Path, *extra: str) -> list[dict[str, Any]]:
    """``emotrack replay MEDIA --speed max --sink jsonl --output OUT *extra``: its results."""
    out.unlink(missing_ok=True)
    command = [sys.executable, "-m", "realtime", "-q", "replay", str(media), "--speed", "max"]
    command += ["--sink", "jsonl", "--output", str(out), *extra]
    subprocess.run(command, check=True, cwd=HERE.parent)
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if "kind" not in line]


def finals(results: Sequence[dict[str, Any]]) -> list[tuple[float, float]]:
    """(start, end) of the last version of each utterance, in order."""
    return [(r["start"], r["end"]) for r in final_results(results)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parent / DEFAULT_DATA_DIR)
    parser.add_argument("--clips", type=int, default=12, help="clips per actor (default 12)")
    parser.add_argument("--seeds", type=int, default=1, help="mixes per actor set (default 1)")
    parser.add_argument("--silences", default="0.21,0.24", help="comma-separated seconds")
    args = parser.parse_args(argv)
    silences = [float(s) for s in args.silences.split(",")]
    totals = {s: {"speculative": 0, "revised": 0, "same": 0, "utterances": 0} for s in silences}
    with tempfile.TemporaryDirectory(prefix="speculative-") as tmp:
        media, out = Path(tmp) / "mix.wav", Path(tmp) / "out.jsonl"
        for name, actors, seed in mix_list("dev", args.seeds):
            ravdess_mix(args.data, actors, seed, args.clips, media)
            plain = finals(replay(media, out, "--no-speculative"))
            for silence in silences:
                results = replay(media, out, "--speculative", "--speculative-silence", str(silence))
                # Utterances whose first version was speculative, and those revised.
                first = {
                    r["utterance_seq"]
                    for r in results
                    if r.get("speculative") and not r.get("revision")
                }
                revised = {  # by more speech, not by a re-read (realtime/reread.py)
                    r["utterance_seq"] for r in results if r.get("revision") and not r.get("reread")
                }
                total = totals[silence]
                total["speculative"] += len(first)
                total["revised"] += len(revised & first)
                total["same"] += finals(results) == plain
                total["utterances"] += len(plain)
                row = {"silence": silence, "speculative": len(first), "revised": len(revised)}
                print(f"{name}: {json.dumps(row)}", flush=True)
    for silence, total in totals.items():
        rate = total["revised"] / max(1, total["speculative"])
        print(
            f"silence {silence:.2f} s: {total['speculative']} speculative results of "
            f"{total['utterances']} utterances, {total['revised']} revised ({rate:.1%}); final "
            f"utterances as without it in {total['same']} of {len(mix_list('dev', args.seeds))} "
            "mixes"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
