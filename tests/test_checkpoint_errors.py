"""Damaged weights and mistaken paths: one line naming the file, never a traceback.

Checkpoints (``--checkpoint``), FER weights (``eval --fer-weights``) and the output folder of the
commands that write a checkpoint or weights (``--output``, ``[train] output``, ``--out``).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from rt_support import emotrack_in_process

from unimse.checkpoint import (
    WEIGHTS,
    CheckpointError,
    load_checkpoint,
    read_stored,
    resolve_checkpoint,
)
from unimse.features.fer_net import load_fer_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def damaged_copy(checkpoint: Path, folder: Path, weights: bytes) -> Path:
    """``checkpoint``'s JSON files beside ``weights`` as its model.safetensors."""
    folder.mkdir()
    for item in checkpoint.glob("*.json"):
        shutil.copy2(item, folder / item.name)
    (folder / WEIGHTS).write_bytes(weights)
    return folder


def truncated(checkpoint: Path) -> bytes:
    data = (checkpoint / WEIGHTS).read_bytes()
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("weights", "reason"),
    [
        (lambda _: b"junk\n", "header too small"),
        (lambda _: b"", "header too small"),
        (truncated, "incomplete metadata"),
    ],
    ids=["junk", "empty", "half"],
)
def test_damaged_checkpoint_weights_are_one_line(
    tiny_checkpoint: Path, tmp_path: Path, weights: Callable[[Path], bytes], reason: str
) -> None:
    folder = damaged_copy(tiny_checkpoint, tmp_path / "ck", weights(tiny_checkpoint))
    expected = f"checkpoint {folder}: model.safetensors is damaged ({reason}"
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(folder)
    assert str(info.value).startswith(expected) and "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match="is damaged"):  # calibrate's and fit-voice's read
        read_stored(folder)


def test_eval_and_calibrate_say_a_checkpoint_is_damaged(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = damaged_copy(tiny_checkpoint, tmp_path / "ck", b"junk\n")
    data = tmp_path / "data"
    (data / "meld").mkdir(parents=True)
    (data / "meld" / "test_sent_emo.csv").write_text(
        "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID\n"
        "1,Hello there.,Ann,neutral,neutral,0,0\n",
        encoding="utf-8",
    )
    argv = ["eval", "--dataset", "meld", "--checkpoint", str(folder), "--data-dir", str(data)]
    assert emotrack_in_process(*argv) == 2
    err = capsys.readouterr().err
    assert err == (
        f"emotrack: error: checkpoint {folder}: model.safetensors is damaged (header too small)\n"
    )
    out = tmp_path / "out"
    argv = ["calibrate", "--checkpoint", str(folder), "--output", str(out), "--no-heads"]
    assert emotrack_in_process(*argv) == 2
    assert "model.safetensors is damaged" in capsys.readouterr().err
    assert not out.exists()


def test_a_checkpoint_that_is_a_file_is_named_so(tmp_path: Path) -> None:
    file = tmp_path / "help.txt"
    file.write_text("hi\n")
    with pytest.raises(CheckpointError, match="is a file; a checkpoint is a folder"):
        resolve_checkpoint(file)
    with pytest.raises(CheckpointError, match="checkpoint folder not found"):
        resolve_checkpoint(tmp_path / "nothing")


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"hi\n", "header too small"), (b"x" * 600, "header too large")],
    ids=["text", "long-text"],
)
def test_damaged_fer_weights_are_one_line(tmp_path: Path, content: bytes, reason: str) -> None:
    file = tmp_path / "fer.safetensors"
    file.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_fer_model(file)
    assert str(info.value) == f"FER weights file {file} is damaged ({reason})"


def test_missing_fer_weights_given_by_the_user_are_named_so(tmp_path: Path) -> None:
    """Not the instructions to rebuild the shipped weights, which are there."""
    missing = r"^FER weights file not found: .*\(--fer-weights\)$"
    with pytest.raises(FileNotFoundError, match=missing):
        load_fer_model(tmp_path / "none.safetensors")


def test_eval_ckplus_says_fer_weights_are_damaged(
    tiny_multimodal_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "ckplus" / "happy"
    folder.mkdir(parents=True)
    assert cv2.imwrite(str(folder / "S010_001_00000012.png"), np.full((48, 48), 120, np.uint8))
    weights = tmp_path / "help.txt"
    weights.write_text("hi\n")
    argv = ["eval", "--dataset", "ckplus", "--data-dir", str(tmp_path)]
    argv += ["--checkpoint", str(tiny_multimodal_checkpoint), "--fer-weights", str(weights)]
    assert emotrack_in_process(*argv) == 2
    err = capsys.readouterr().err
    assert err == f"emotrack: error: FER weights file {weights} is damaged (header too small)\n"
    # said before the checkpoint is loaded: not hidden behind a checkpoint that is missing too
    argv[argv.index("--checkpoint") + 1] = str(tmp_path / "no-checkpoint")
    assert emotrack_in_process(*argv) == 2
    assert "FER weights file" in capsys.readouterr().err


def test_output_folder_check(tmp_path: Path) -> None:
    from unimse.checkpoint import check_output_folder

    file = tmp_path / "help.txt"
    file.write_text("hi\n")
    check_output_folder(tmp_path / "new" / "deeper")  # missing folders are made later
    check_output_folder(tmp_path)
    with pytest.raises(CheckpointError, match=r"^--output .*help\.txt is a file; give a folder"):
        check_output_folder(file)
    with pytest.raises(CheckpointError, match=r"^--out .*help\.txt/sub: .*help\.txt is a file"):
        check_output_folder(file / "sub", "--out")


@pytest.mark.parametrize("command", ["calibrate", "fit-voice"])
def test_a_derived_checkpoint_refuses_an_output_that_is_a_file(
    command: str, tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "help.txt"
    file.write_text("hi\n")
    argv = [command, "--checkpoint", str(tiny_checkpoint), "--output", str(file)]
    argv += ["--data-dir", str(tmp_path / "empty")]
    assert emotrack_in_process(*argv, *(["--no-heads"] if command == "calibrate" else [])) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"emotrack: error: --output {file} is a file; give a folder (it is made if missing)\n"
    )
    assert file.read_text() == "hi\n"


def test_train_refuses_an_output_that_is_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "help.txt"
    file.write_text("hi\n")
    config = tmp_path / "train.toml"
    config.write_text(f'[train]\noutput = "{file}"\n', encoding="utf-8")
    # -q: no "train" logger turned up to INFO for the tests after this one
    assert emotrack_in_process("-q", "train", "--config", str(config)) == 2
    assert capsys.readouterr().err.startswith(f"emotrack: error: train.output {file} is a file")
    argv = ["-q", "train", "--config", str(config), "--output", str(file / "x")]
    assert emotrack_in_process(*argv) == 2
    err = capsys.readouterr().err
    assert err == f"emotrack: error: --output {file / 'x'}: {file} is a file, not a folder\n"


def test_fer_finetune_refuses_an_out_that_is_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from train.fer_finetune import main

    file = tmp_path / "help.txt"
    file.write_text("hi\n")
    with pytest.raises(SystemExit) as exit_:
        main(["--out", str(file), "--data-dir", str(tmp_path / "nothing")])
    assert exit_.value.code == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(f"--out {file} is a file; give a folder (it is made if missing)")
    )


def test_a_damaged_backbone_is_one_line(tmp_path: Path) -> None:
    """A local backbone folder (``backbone = "PATH"``) whose weights are damaged."""
    from dataclasses import replace

    from unimse.backbones import BackboneNotFoundError, load_encoder_backbone, resolve_backbone
    from unimse.config import DEFAULT_BACKBONE, UniMSEConfig

    installed = Path(resolve_backbone(DEFAULT_BACKBONE))
    folder = tmp_path / "minilm"
    folder.mkdir()
    shutil.copy2(installed / "config.json", folder / "config.json")
    (folder / "model.safetensors").write_bytes(b"junk")
    config = replace(UniMSEConfig(), backbone=str(folder))
    with pytest.raises(BackboneNotFoundError, match=r"model\.safetensors is damaged \(header"):
        load_encoder_backbone(config)


def test_fer_finetune_names_a_missing_data_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from train.fer_finetune import main

    with pytest.raises(SystemExit) as exit_:
        main(["--out", str(tmp_path / "out"), "--data-dir", str(tmp_path / "nothing")])
    assert exit_.value.code == 2
    assert "error: ckplus folder not found" in capsys.readouterr().err
