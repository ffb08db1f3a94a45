"""Train every ablation config and evaluate its best (dev-selected) checkpoint on the test splits.

    python benchmarks/run_ablations.py [configs/ablations/NAME.toml ...] [--eval-only]

Writes runs/ablations/<name>/test.json and prints a Markdown table for docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from train.config import TrainConfig
from train.data import load_dataset
from train.evaluate import evaluate
from train.loop import Trainer
from unimse.inference import EmotionPredictor

ROOT = Path(__file__).resolve().parents[1]


def test_metrics(config: TrainConfig, checkpoint: Path) -> dict[str, dict[str, float]]:
    predictor = EmotionPredictor.load(checkpoint, device="auto")
    data_dir = Path(config.data.data_dir)
    results = {}
    for name in ("meld", "iemocap", "mosi"):
        extra = {"features": True} if name == "mosi" and config.data.mosi_features else {}
        results[name] = evaluate(predictor, name, load_dataset(name, "test", data_dir, **extra))
    return results


COLUMNS = [
    ("MELD WF1", "meld", "wf1", 2),
    ("IEMOCAP WF1", "iemocap", "wf1", 2),
    ("MOSI Acc-2 (non0)", "mosi", "acc2_non0", 2),
    ("MOSI F1 (non0)", "mosi", "f1_non0", 2),
    ("MOSI MAE", "mosi", "mae", 3),
    ("MOSI Corr", "mosi", "corr", 3),
]


def row(name: str, metrics: dict[str, dict[str, float]], trained_on: tuple[str, ...]) -> str:
    """One table row; a dataset the run did not train on is shown in parentheses."""
    cells = []
    for _, dataset, key, digits in COLUMNS:
        text = f"{metrics[dataset][key]:.{digits}f}"
        cells.append(text if dataset in trained_on else f"({text})")
    return f"| {name} | " + " | ".join(cells) + " |"


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("configs", nargs="*", type=Path)
    parser.add_argument(
        "--eval-only", action="store_true", help="skip training, evaluate existing runs"
    )
    args = parser.parse_args()
    configs = args.configs or sorted((ROOT / "configs" / "ablations").glob("*.toml"))
    lines = [
        "| run | " + " | ".join(c[0] for c in COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    for path in configs:
        config = TrainConfig.load(path)
        out = Path(config.train.output)
        if not args.eval_only:
            start = time.perf_counter()
            Trainer(config, out).run()
            logging.info("%s trained in %.0f s", path.stem, time.perf_counter() - start)
        metrics = test_metrics(config, out / "best")
        (out / "test.json").write_text(json.dumps(metrics, indent=2) + "\n")
        lines.append(row(path.stem, metrics, config.data.datasets))
        print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
