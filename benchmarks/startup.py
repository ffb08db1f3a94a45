"""Start-up cost: ``emotrack replay`` of a 1 s file against the bare import of its heavy libraries.

Each round runs, in fresh processes and one after the other (so both see the same machine load):

- ``import``: ``python -c "import torch, transformers, faster_whisper, cv2"``;
- ``replay``: ``emotrack -q replay ONE_SECOND.wav --speed max --sink jsonl --output /dev/null``
  (Whisper and the default checkpoint loaded, the file segmented, transcribed, classified).

Prints every round and the medians; the figure of merit is median(replay) / median(import)
(issue 10: at most 1.6). The 1 s file is cut from the bundled sample (2-3 s, both channels).

    .venv/bin/python benchmarks/startup.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "realtime" / "samples" / "conversation.flac"
BARE_IMPORT = "import torch, transformers, faster_whisper, cv2"


def one_second_file(folder: Path) -> Path:
    audio, rate = sf.read(SAMPLE, dtype="float32")
    path = folder / "one_second.wav"
    sf.write(path, audio[2 * rate : 3 * rate], rate)
    return path


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        media = one_second_file(Path(tmp))
        replay = [sys.executable, "-m", "realtime", "-q", "replay", str(media)]
        replay += ["--speed", "max", "--sink", "jsonl", "--output", "/dev/null"]
        bare = [sys.executable, "-c", BARE_IMPORT]
        timed(bare)  # warm the file cache for both
        imports: list[float] = []
        replays: list[float] = []
        print(f"{'round':>5} {'import s':>9} {'replay s':>9} {'ratio':>6}")
        for round_ in range(1, args.rounds + 1):
            imports.append(timed(bare))
            replays.append(timed(replay))
            print(
                f"{round_:>5} {imports[-1]:>9.2f} {replays[-1]:>9.2f} "
                f"{replays[-1] / imports[-1]:>6.2f}"
            )
    ratio = statistics.median(replays) / statistics.median(imports)
    print(
        f"median import {statistics.median(imports):.2f} s, median replay "
        f"{statistics.median(replays):.2f} s, ratio {ratio:.2f} (target <= 1.6)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
