"""Training package: metrics, label unification, loaders, the loop, and `emotrack eval`."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from train.data import DataError, Sample, load_dataset
from train.metrics import classification_metrics, regression_metrics
from train.unification import nearest_same_polarity, unify

ROOT = Path(__file__).resolve().parents[1]


def test_regression_metrics_match_hand_computed_values() -> None:
    y = [1.5, -0.5, 0.0, 2.2, -3.4]
    p = [1.0, 0.2, -0.1, 2.6, -2.0]
    m = regression_metrics(y, p)
    assert m["mae"] == pytest.approx(0.62)
    assert m["acc7"] == pytest.approx(40.0)  # rounded classes [1,0,0,3,-2] vs [2,0,0,2,-3]
    assert m["acc2_has0"] == pytest.approx(60.0)
    assert m["f1_has0"] == pytest.approx(60.0)  # (3 * 2/3 + 2 * 1/2) / 5
    assert m["acc2_non0"] == pytest.approx(75.0)
    assert m["f1_non0"] == pytest.approx(100 * (0.8 + 2 / 3) / 2)
    ya, pa = np.array(y), np.array(p)
    cov = ((pa - pa.mean()) * (ya - ya.mean())).sum()
    corr = cov / math.sqrt(((pa - pa.mean()) ** 2).sum() * ((ya - ya.mean()) ** 2).sum())
    assert m["corr"] == pytest.approx(corr)


def test_classification_metrics_match_hand_computed_values() -> None:
    m = classification_metrics([0, 0, 1, 2, 1], [0, 1, 1, 2, 2])
    assert m["acc"] == pytest.approx(60.0)
    assert m["wf1"] == pytest.approx(60.0)  # (2 * 2/3 + 2 * 1/2 + 1 * 2/3) / 5


def _sample(uid: str, dataset: str, text: str, **labels: object) -> Sample:
    return Sample(
        uid=uid, dataset=dataset, split="train", dialogue="d", speaker="s", text=text, **labels
    )  # type: ignore[arg-type]


def test_label_unification_borrows_from_the_nearest_same_polarity_sample() -> None:
    samples = [
        _sample("m1", "meld", "great", polarity="positive", meld_emotion="joy"),
        _sample("m2", "meld", "awful", polarity="negative", meld_emotion="anger"),
        _sample("m3", "meld", "ok", polarity="neutral", meld_emotion="neutral"),
        _sample("s1", "mosi", "nice", polarity="positive", score=2.0),
        _sample("s2", "mosi", "nice too", polarity="positive", score=0.6),
        _sample("s3", "mosi", "bad", polarity="negative", score=-1.4),
        _sample("i1", "iemocap", "yay", polarity="positive", iemocap_emotion="excited"),
        _sample("i2", "iemocap", "grr", polarity="negative", iemocap_emotion="frustrated"),
    ]
    emb = np.eye(8, dtype=np.float32)
    emb[0] = emb[4] = np.array([0, 0, 0, 0, 1, 0, 0, 0])  # "great" is closest to s2, not s1
    emb[1] = emb[5] = np.array([0, 0, 0, 0, 0, 1, 0, 0])
    emb[3] = np.array([1, 0, 0, 0, 0.3, 0, 0, 0])
    emb[6] = np.array([0, 0, 0, 0, 0.9, 0.1, 0, 0])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    out = {u.sample.uid: u for u in unify(samples, embeddings=emb)}
    assert out["m1"].score == 0.6 and out["m1"].iemocap_emotion == "excited"
    assert out["m2"].score == -1.4 and out["m2"].iemocap_emotion == "frustrated"
    assert (out["m3"].score, out["m3"].iemocap_emotion) == (0.0, "neutral")
    assert out["s3"].meld_emotion == "anger" and out["s2"].meld_emotion == "joy"
    assert out["m1"].borrowed == frozenset({"score", "iemocap_emotion"})
    assert out["s1"].borrowed == frozenset({"meld_emotion", "iemocap_emotion"})
    assert out["i1"].meld_emotion == "joy" and "iemocap_emotion" not in out["i1"].borrowed


def test_unification_refuses_non_training_splits() -> None:
    dev = Sample(
        uid="x",
        dataset="meld",
        split="test",
        dialogue="d",
        speaker="s",
        text="t",
        polarity="neutral",
    )
    with pytest.raises(ValueError, match="training samples only"):
        unify([dev], embeddings=np.zeros((1, 4), np.float32))


def test_nearest_same_polarity_never_crosses_polarity() -> None:
    q = np.array([[1.0, 0.0]])
    pool = np.array([[1.0, 0.0], [0.6, 0.8]])
    assert nearest_same_polarity(q, ["positive"], pool, ["negative", "positive"]).tolist() == [1]
    assert nearest_same_polarity(q, ["positive"], pool, ["negative", "negative"]).tolist() == [-1]


def test_loaders_read_real_data(shared_data: Path) -> None:
    meld = load_dataset("meld", "test", shared_data)
    assert len(meld) == 2610
    assert {s.meld_emotion for s in meld} == {
        "neutral",
        "joy",
        "surprise",
        "anger",
        "sadness",
        "disgust",
        "fear",
    }
    later = next(s for s in meld if s.context)
    assert all(t.text for t in later.context)
    iemocap = load_dataset("iemocap", "train", shared_data)
    assert len(iemocap) == 5163
    mosi = load_dataset("mosi", "test", shared_data, features=True)
    assert len(mosi) == 685  # 686 in the fold, one without a label
    assert mosi[0].acoustic is not None and mosi[0].acoustic.shape == (1, 73)


def test_loader_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"meld/test_sent_emo\.csv"):
        load_dataset("meld", "test", tmp_path)
    (tmp_path / "iemocap").mkdir()
    (tmp_path / "iemocap" / "iemocap_text.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="missing columns"):
        load_dataset("iemocap", "test", tmp_path)


@pytest.mark.slow
def test_small_real_training_run_lowers_the_loss(shared_data: Path) -> None:
    """MiniLM backbone, 96 real training utterances, 30 steps on CPU."""
    from train.loop import targets_for
    from unimse.backbones import load_tokenizer
    from unimse.config import UniMSEConfig
    from unimse.factory import build_model
    from unimse.processor import UniMSEProcessor

    torch.manual_seed(0)
    rows = (
        load_dataset("meld", "train", shared_data)[:48]
        + load_dataset("iemocap", "train", shared_data)[:24]
        + load_dataset("mosi", "train", shared_data)[:24]
    )
    unified = unify(rows)
    config = UniMSEConfig(context_turns=2, max_length=96)
    model = build_model(config)
    model.freeze_lower(2)
    proc = UniMSEProcessor(config, load_tokenizer(config))
    batch = proc.encode(
        [u.sample.to_input() for u in unified], [targets_for(u, 0.5) for u in unified]
    )
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4)

    def loss() -> float:
        model.eval()
        with torch.no_grad():
            value = model(batch).loss
        model.train()
        assert value is not None
        return float(value)

    before = loss()
    for step in range(30):
        idx = torch.arange(step * 16, step * 16 + 16) % len(unified)
        sub = proc.encode(
            [unified[i].sample.to_input() for i in idx], [targets_for(unified[i], 0.5) for i in idx]
        )
        out = model(sub)
        opt.zero_grad()
        assert out.loss is not None
        out.loss.backward()
        opt.step()
    after = loss()
    assert after < 0.8 * before, (before, after)


@pytest.mark.slow
def test_trainer_writes_checkpoints_and_resumes(shared_data: Path, tmp_path: Path) -> None:
    from train.config import TrainConfig
    from train.loop import Trainer

    raw = {
        "model": {"backbone": "minilm", "context_turns": 1, "max_length": 64},
        "data": {
            "datasets": ["meld", "mosi"],
            "data_dir": str(shared_data),
            "limit_per_dataset": 24,
        },
        "train": {
            "epochs": 2,
            "batch_size": 8,
            "trainable_layers": 1,
            "eval_batch_size": 32,
            "patience": 5,
        },
    }
    first = TrainConfig.from_dict({**raw, "train": {**raw["train"], "epochs": 1}})
    state = Trainer(first, tmp_path / "run").run()
    assert state["epoch"] == 1
    best = tmp_path / "run" / "best"
    assert (best / "model.safetensors").is_file()
    assert json.loads((best / "metrics.json").read_text())["metrics"]["dev"]
    resumed = Trainer(TrainConfig.from_dict(raw), tmp_path / "run").run(resume=True)
    assert resumed["epoch"] == 2 and len(resumed["history"]) == 2
    assert not list((tmp_path / "run").rglob("*.pt")) and not list(
        (tmp_path / "run").rglob("*.bin")
    )


def test_resuming_a_run_that_saved_nothing_is_refused_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from realtime.cli import main

    config = tmp_path / "smoke.toml"
    config.write_text('[data]\ndatasets = ["meld"]\n[train]\nepochs = 1\n')
    out = tmp_path / "never"
    code = main(["train", "--config", str(config), "--resume", "--output", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [
        f"emotrack: error: nothing to resume in {out} (no last/trainer_state.json)"
    ]
    assert not out.exists()  # refused before anything was written or read


def test_eval_cli_prints_json_last(tiny_checkpoint: Path, shared_data: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "realtime.cli",
            "eval",
            "--dataset",
            "mosi",
            "--split",
            "dev",
            "--checkpoint",
            str(tiny_checkpoint),
            "--data-dir",
            str(shared_data),
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["n"] == 229 and {"mae", "corr", "acc7", "acc2_non0", "f1_has0"} <= set(last)


def test_eval_cli_bad_data_dir_is_one_line(tiny_checkpoint: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "realtime.cli",
            "eval",
            "--dataset",
            "meld",
            "--checkpoint",
            str(tiny_checkpoint),
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "test_sent_emo.csv" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "path",
    sorted(
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "configs").rglob("*.toml")
        if p.name != "default.toml"  # the realtime pipeline's config, not a training run
    ),
)
def test_shipped_training_configs_load(path: str) -> None:
    from train.config import TrainConfig

    config = TrainConfig.load(ROOT / path)
    assert config.data.datasets and config.train.epochs > 0
