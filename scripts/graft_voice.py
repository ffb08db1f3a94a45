"""Put one checkpoint's shared voice readout into another built alike (the rest kept).

    python scripts/graft_voice.py --base runs/d31 --donor runs/t32s200 --output runs/d32

Two fits of one readout recipe that differ only in the voices heard (``emotrack fit-voice
--synthetic-voices``) give the same standardisation; the German readout's L-BFGS optimum is
flat and lands elsewhere from one environment to the next, and a refit re-reads the intensity
from the calibrated source. The graft keeps the base's German map, intensity read, calibration
and config bit for bit and takes the donor's shared readout only
(:func:`train.voice_readout.graft_shared_readout`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from train.voice_readout import graft_shared_readout
from unimse.checkpoint import CheckpointError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="checkpoint that keeps all but the readout")
    parser.add_argument("--donor", required=True, help="checkpoint whose shared readout is taken")
    parser.add_argument("--output", type=Path, required=True, help="folder for the new one")
    args = parser.parse_args(argv)
    try:
        rows = graft_shared_readout(args.base, args.donor, args.output)
    except (CheckpointError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{args.output}: {rows} readout rows from {args.donor}, the rest from {args.base}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
