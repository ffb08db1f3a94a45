"""Data that holds nothing to evaluate, and the default ``--data-dir``: one line saying what is
missing and where, never a traceback nor a blank line before it."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from rt_support import emotrack_in_process

from train.data import DataError, load_dataset
from train.datadir import DEFAULT_DATA_DIR
from train.face_data import split_of_subject
from train.face_eval import load_face_eval

MELD_HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID\n"
IEMOCAP_HEADER = "dialogue_id,utterance_index,speaker,text,emotion,split\n"
MOSI_HEADER = "id,video_id,clip_id,label,std_split,text_upper\n"


def test_a_split_without_rows_is_a_data_error_naming_the_file(tmp_path: Path) -> None:
    for folder, name, text in (
        ("meld", "test_sent_emo.csv", MELD_HEADER),
        ("iemocap", "iemocap_text.csv", IEMOCAP_HEADER + "Ses01_a,0,M,Hello.,neu,train\n"),
        ("mosi", "mosi_labels.csv", MOSI_HEADER + "v_1,v,1,0.5,train,HELLO\n"),
    ):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_text(text, encoding="utf-8")
        path = tmp_path / folder / name
        with pytest.raises(DataError) as info:
            load_dataset(folder, "test", tmp_path)
        assert str(info.value) == f"{path}: no rows of the test split"


def test_eval_of_a_split_without_rows_is_one_line(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "meld").mkdir()
    (tmp_path / "meld" / "test_sent_emo.csv").write_text(MELD_HEADER, encoding="utf-8")
    argv = ["eval", "--dataset", "meld", "--data-dir", str(tmp_path)]
    assert emotrack_in_process(*argv, "--checkpoint", str(tiny_checkpoint)) == 2
    err = capsys.readouterr().err
    path = tmp_path / "meld" / "test_sent_emo.csv"
    assert err == f"emotrack: error: {path}: no rows of the test split\n"


def subjects_outside(split: str, count: int) -> list[str]:
    """``count`` CK+ subject ids whose fixed split is not ``split``."""
    ids = (f"S{n:03d}" for n in range(10, 999))
    return [s for s in ids if split_of_subject(s) != split][:count]


def test_eval_ckplus_names_the_split_no_subject_falls_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "ckplus" / "happy"
    folder.mkdir(parents=True)
    for subject in subjects_outside("test", 2):
        image = np.full((48, 48), 120, np.uint8)
        assert cv2.imwrite(str(folder / f"{subject}_001_00000012.png"), image)
    with pytest.raises(DataError, match="no ckplus images of a test-split subject"):
        load_face_eval(tmp_path, "test")
    assert len(load_face_eval(tmp_path, "all")) == 2
    # no checkpoint is loaded: the data are refused first
    assert (
        emotrack_in_process(
            "eval", "--dataset", "ckplus", "--data-dir", str(tmp_path), "--split", "test"
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("emotrack: error: no ckplus images of a test-split subject in ")
    assert err.endswith("; use --split all\n") and err.count("\n") == 1  # no blank line first
    assert "contempt" not in err


def test_only_contempt_images_are_named_so(tmp_path: Path) -> None:
    folder = tmp_path / "ckplus" / "contempt"
    folder.mkdir(parents=True)
    assert cv2.imwrite(str(folder / "S010_001_00000012.png"), np.full((48, 48), 9, np.uint8))
    with pytest.raises(DataError, match=r"only contempt images \(1\)"):
        load_face_eval(tmp_path)


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "--dataset", "emodb", "--split", "test"],
        ["eval", "--dataset", "meld"],
        ["eval", "--dataset", "ckplus"],
        ["fit-voice", "--checkpoint", "default", "--output", "out"],
        ["calibrate", "--checkpoint", "default", "--output", "out"],
    ],
    ids=lambda argv: argv[0] + "-" + argv[2],
)
def test_the_default_data_dir_is_said_to_be_relative_to_the_current_directory(
    argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")  # ../shared/data is no folder from here
    assert emotrack_in_process(*argv) == 2
    err = capsys.readouterr().err
    looked = (tmp_path / "here" / DEFAULT_DATA_DIR).resolve()
    assert err == (
        f"emotrack: error: data folder not found: {looked} (the default --data-dir "
        "../shared/data, relative to the current directory); pass --data-dir\n"
    )
    assert not (tmp_path / "here" / "out").exists()


def test_calibrate_without_data_to_read_needs_no_data_dir(
    tiny_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    argv = ["calibrate", "--checkpoint", str(tiny_checkpoint), "--output", str(out), "--no-heads"]
    assert emotrack_in_process(*argv) == 0, capsys.readouterr().err
    assert (out / "model.safetensors").is_file()


def test_an_error_inside_the_progress_bars_comes_without_a_blank_line(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["calibrate", "--checkpoint", str(tiny_checkpoint), "--output", str(tmp_path / "o")]
    assert emotrack_in_process(*argv, "--data-dir", str(tmp_path / "empty")) == 2
    err = capsys.readouterr().err
    assert err.startswith("emotrack: error: data file not found: ") and err.count("\n") == 1


def test_fer_weights_outside_the_face_corpus_are_said_to_be_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """They were ignored without a word; the split message names the face corpus too."""
    args = ["eval", "--dataset", "meld", "--split", "train", "--data-dir", str(tmp_path)]
    assert emotrack_in_process(*args, "--fer-weights", "x.safetensors") == 2
    err = capsys.readouterr().err
    assert "--fer-weights reads faces: ignored for --dataset meld" in err
    assert "--split train is for the audio and face corpora" in err


@pytest.mark.parametrize("backbone", ["missing", "empty"])
def test_a_bad_backbone_is_one_line_before_any_data_is_read(
    backbone: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The data folder holds nothing: the backbone's error comes first, nothing is written."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "data").mkdir()
    config = tmp_path / "bad.toml"
    config.write_text(
        f'[model]\nbackbone = "{tmp_path / backbone}"\n'
        f'[data]\ndatasets = ["meld"]\ndata_dir = "{tmp_path / "data"}"\n[train]\nepochs = 1\n'
    )
    out = tmp_path / "run"
    assert emotrack_in_process("train", "--config", str(config), "--output", str(out)) == 2
    said = {
        "missing": f"backbone '{tmp_path / 'missing'}' could not be loaded offline (OSError). "
        "Pass a local folder with config.json and weights (e.g. one saved with save_pretrained on "
        "a machine with internet), or 'minilm' for the bundled all-MiniLM-L6-v2.",
        "empty": f"backbone folder {tmp_path / 'empty'} has no config.json",
    }[backbone]
    assert capsys.readouterr().err == f"emotrack: error: {said}\n"
    assert not out.exists()
