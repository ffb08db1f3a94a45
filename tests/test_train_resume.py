"""A training run's folder survives interruptions, re-runs and resumes: checkpoint folders are
written whole, a finished run is not trained over, a resume continues the same run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

TINY_BACKBONE = {
    "random_init": True,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


def raw_config(shared_data: Path, **train: object) -> dict[str, Any]:
    """A seconds-long run: a tiny random model on 8 MELD samples."""
    return {
        "model": {
            "backbone": "minilm",
            "fusion_layers": 1,
            "context_turns": 1,
            "max_length": 32,
            "backbone_overrides": TINY_BACKBONE,
        },
        "data": {"datasets": ["meld"], "data_dir": str(shared_data), "limit_per_dataset": 8},
        "train": {
            "epochs": 1,
            "batch_size": 8,
            "eval_batch_size": 8,
            "patience": 5,
            "threads": 1,
            **train,
        },
    }


def train(raw: dict[str, Any], out: Path, resume: bool = False) -> dict[str, Any]:
    from train.config import TrainConfig
    from train.loop import Trainer

    return Trainer(TrainConfig.from_dict(raw), out).run(resume=resume)


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def history_epochs(out: Path) -> list[int]:
    lines = (out / "history.jsonl").read_text().splitlines()
    return [json.loads(line)["epoch"] for line in lines]


def write_toml(path: Path, raw: dict[str, Any]) -> Path:
    model = raw["model"]
    path.write_text(
        "[model]\n"
        f'backbone = "minilm"\nfusion_layers = {model["fusion_layers"]}\n'
        f"context_turns = 1\nmax_length = {model['max_length']}\n"
        "[model.backbone_overrides]\n"
        + "".join(
            f"{k} = {str(v).lower() if isinstance(v, bool) else v}\n"
            for k, v in TINY_BACKBONE.items()
        )
        + f'[data]\ndatasets = ["meld"]\ndata_dir = "{raw["data"]["data_dir"]}"\n'
        "limit_per_dataset = 8\n"
        "[train]\n" + "".join(f"{k} = {v}\n" for k, v in raw["train"].items())
    )
    return path


def test_a_failed_checkpoint_write_leaves_the_previous_folder(
    tiny_config: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import unimse.checkpoint as checkpoint
    from unimse.factory import build_model

    folder = checkpoint.save_checkpoint(build_model(tiny_config), tmp_path / "ck", half=False)
    before = files(folder)

    def fail(*_args: object) -> None:
        raise KeyboardInterrupt  # Ctrl-C after the weights, before the label map

    monkeypatch.setattr(checkpoint, "write_labels", fail)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_checkpoint(build_model(tiny_config), folder, half=False)
    assert files(folder) == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]  # no half-written sibling left


def test_a_write_stopped_between_its_renames_is_put_back(tmp_path: Path) -> None:
    from unimse.checkpoint import atomic_folder, settle_folder

    with atomic_folder(tmp_path / "last") as new:
        (new / "a").write_text("1")
    (tmp_path / "last").rename(tmp_path / ".last.old-1-x")  # stopped after the first rename
    (tmp_path / ".last.new-1-y").mkdir()
    settle_folder(tmp_path / "last")
    assert [p.name for p in tmp_path.iterdir()] == ["last"]
    assert (tmp_path / "last" / "a").read_text() == "1"


def test_ctrl_c_while_saving_last_keeps_the_previous_epoch_and_resume_continues(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import train.loop as loop

    out = tmp_path / "run"
    train(raw_config(shared_data), out)
    last = out / "last"
    before = files(last)

    def interrupted(*_args: object) -> None:
        raise KeyboardInterrupt  # the new model is written, the optimiser not yet

    monkeypatch.setattr(loop, "_save_optimizer", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(raw_config(shared_data, epochs=2), out, resume=True)
    assert files(last) == before  # epoch 1, whole
    assert json.loads((last / "trainer_state.json").read_text())["epoch"] == 1
    assert history_epochs(out) == [1, 2]  # epoch 2 was recorded before the save failed
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    monkeypatch.undo()
    state = train(raw_config(shared_data, epochs=2), out, resume=True)
    assert state["epoch"] == 2
    assert history_epochs(out) == [1, 2]  # not epoch 2 twice


def test_training_again_into_a_run_folder_is_refused(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from realtime.cli import main

    raw = raw_config(shared_data)
    out = tmp_path / "run"
    train(raw, out)
    before = (out / "history.jsonl").read_text()
    config = write_toml(tmp_path / "tiny.toml", raw)
    capsys.readouterr()
    code = main(["train", "--config", str(config), "--output", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [
        f"emotrack: error: {out} already holds a training run: --resume continues it; choose "
        "another output (or delete the folder)"
    ]
    assert (out / "history.jsonl").read_text() == before


def test_resuming_with_another_model_config_is_refused_before_any_write(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from realtime.cli import main

    raw = raw_config(shared_data)
    out = tmp_path / "run"
    train(raw, out)
    saved = (out / "train_config.json").read_text()
    changed = {**raw, "model": {**raw["model"], "fusion_layers": 2}}
    config = write_toml(tmp_path / "changed.toml", {**changed, "train": {"epochs": 2}})
    capsys.readouterr()
    code = main(["train", "--config", str(config), "--output", str(out), "--resume"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0] == (
        f"emotrack: error: --resume: the model config differs from {out}/train_config.json in "
        "model.fusion_layers: resume with the run's model config, or train into another output"
    )
    assert (out / "train_config.json").read_text() == saved


def test_resume_keeps_the_early_stopping_count(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = train(raw_config(shared_data, patience=2), out)
    assert first["stale"] == 0
    file = out / "last" / "trainer_state.json"
    state = json.loads(file.read_text())
    state.update(stale=1, best_score=1e9)  # one evaluation without improvement so far
    file.write_text(json.dumps(state))
    resumed = train(raw_config(shared_data, patience=2, epochs=3), out, resume=True)
    assert resumed["epoch"] == 2 and resumed["stale"] == 2  # stopped, as uninterrupted


def test_resume_of_a_state_without_the_count_starts_it_at_zero(
    shared_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    train(raw_config(shared_data, patience=2), out)
    file = out / "last" / "trainer_state.json"
    state = json.loads(file.read_text())
    del state["stale"]
    state["best_score"] = 1e9
    file.write_text(json.dumps(state))
    resumed = train(raw_config(shared_data, patience=2, epochs=2), out, resume=True)
    assert resumed["epoch"] == 2 and resumed["stale"] == 1


def test_a_damaged_trainer_state_is_one_line(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from realtime.cli import main

    raw = raw_config(shared_data)
    out = tmp_path / "run"
    train(raw, out)
    file = out / "last" / "trainer_state.json"
    file.write_text(file.read_text()[:40])
    config = write_toml(tmp_path / "tiny.toml", {**raw, "train": {"epochs": 2}})
    capsys.readouterr()
    code = main(["train", "--config", str(config), "--output", str(out), "--resume"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"emotrack: error: {file} is damaged (")


def stopped_before_its_first_checkpoint(
    shared_data: Path, out: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """A run Ctrl-C'd while saving its first best/: epoch 1 recorded, no checkpoint; returns
    the history it left."""
    import train.loop as loop

    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(loop, "save_checkpoint", interrupted)
        with pytest.raises(KeyboardInterrupt):
            train(raw_config(shared_data), out)
    assert not (out / "best").exists() and not (out / "last").exists()
    assert history_epochs(out) == [1]
    return (out / "history.jsonl").read_text()


def test_a_run_stopped_before_its_first_checkpoint_runs_again_keeping_its_history(
    shared_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from realtime.cli import main

    out = tmp_path / "run"
    before = stopped_before_its_first_checkpoint(shared_data, out, monkeypatch)
    config = write_toml(tmp_path / "tiny.toml", raw_config(shared_data))
    capsys.readouterr()
    code = main(["train", "--config", str(config), "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    aside = out / "interrupted-1"
    assert f"its history.jsonl and train_config.json moved to {aside}; starting afresh" in err
    assert (aside / "history.jsonl").read_text() == before  # kept, not written over
    assert (aside / "train_config.json").is_file()
    assert history_epochs(out) == [1]  # the new run's own epoch, once
    assert (out / "best" / "model.safetensors").is_file()
    assert (out / "last" / "trainer_state.json").is_file()


def test_resume_of_a_run_stopped_before_its_first_checkpoint_starts_it_afresh(
    shared_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = tmp_path / "run"
    before = stopped_before_its_first_checkpoint(shared_data, out, monkeypatch)
    with caplog.at_level("WARNING", logger="train.loop"):
        state = train(raw_config(shared_data), out, resume=True)
    assert f"nothing saved to resume in {out} yet" in caplog.text
    assert state["epoch"] == 1 and history_epochs(out) == [1]
    assert (out / "interrupted-1" / "history.jsonl").read_text() == before
    again = stopped_before_its_first_checkpoint(shared_data, tmp_path / "again", monkeypatch)
    (tmp_path / "again" / "interrupted-1").mkdir()  # an earlier interruption's records stay
    train(raw_config(shared_data), tmp_path / "again")
    assert (tmp_path / "again" / "interrupted-2" / "history.jsonl").read_text() == again


def test_a_run_stopped_after_its_first_best_is_still_not_trained_over(
    shared_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """best/ written, last/ not (Ctrl-C while saving it): a checkpoint, so refused, saying why
    --resume cannot continue it."""
    import train.loop as loop
    from realtime.cli import main

    out = tmp_path / "run"

    def interrupted(*_args: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(loop, "_save_optimizer", interrupted)
        with pytest.raises(KeyboardInterrupt):
            train(raw_config(shared_data), out)
    best = files(out / "best")
    config = write_toml(tmp_path / "tiny.toml", raw_config(shared_data))
    capsys.readouterr()
    assert main(["train", "--config", str(config), "--output", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"emotrack: error: {out} already holds a trained model (best/, no last/ to resume "
        "from): choose another output (or move best/ away)"
    ]
    assert main(["train", "--config", str(config), "--output", str(out), "--resume"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"emotrack: error: nothing to resume in {out} (no last/trainer_state.json)"
    ]
    assert files(out / "best") == best and history_epochs(out) == [1]
