"""Dev-set calibration of the emotion heads (`emotrack calibrate`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from train.calibrate import (
    ACOUSTIC_PROJECTION,
    AUDIO_SCALE_GRID,
    CALIBRATION,
    calibrate_checkpoint,
    dev_log_probs,
    fit_offsets,
)
from train.data import load_dataset
from train.metrics import classification_metrics
from unimse.checkpoint import CheckpointError
from unimse.inference import EmotionPredictor

SHIFT = np.array([1.2, 0.0, -1.0, 0.0])


def _biased_scores(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Log-probs of a decent 4-class classifier whose logits carry a known per-class shift."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=600)
    clean = 2.0 * np.eye(4)[labels] + rng.normal(0.0, 1.0, size=(600, 4))
    logits = clean + SHIFT
    log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return log_probs, labels


def _wf1(log_probs: np.ndarray, labels: np.ndarray) -> float:
    return classification_metrics(labels.tolist(), log_probs.argmax(1).tolist())["wf1"]


def test_offsets_undo_a_prior_shift() -> None:
    log_probs, labels = _biased_scores()
    offsets = fit_offsets(log_probs, labels)
    assert _wf1(log_probs + offsets, labels) > _wf1(log_probs, labels) + 5.0
    # Only differences between offsets matter; they should point against SHIFT.
    centred = offsets - offsets.mean()
    assert centred[0] < centred[1] and centred[2] > centred[3]


def test_offsets_stay_zero_when_nothing_improves() -> None:
    labels = np.array([0, 1, 2, 1, 0])
    perfect = np.log(np.eye(3)[labels] * 0.9 + 0.05)
    assert np.array_equal(fit_offsets(perfect, labels), np.zeros(3))


@pytest.mark.parametrize(
    ("log_probs", "labels"),
    [(np.zeros((3, 2)), np.zeros(2, dtype=int)), (np.zeros(3), np.zeros(3, dtype=int))],
)
def test_offsets_refuse_mismatched_input(log_probs: np.ndarray, labels: np.ndarray) -> None:
    with pytest.raises(ValueError, match="fit_offsets needs"):
        fit_offsets(log_probs, labels)


def test_calibrated_checkpoint_changes_only_head_biases(
    tiny_checkpoint: Path, shared_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "calibrated"
    results, scale = calibrate_checkpoint(tiny_checkpoint, out, shared_data)
    assert scale is None
    before = load_file(str(tiny_checkpoint / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    assert set(before) == set(after)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed <= {"heads.meld.bias", "heads.iemocap.bias"}
    record = json.loads((out / CALIBRATION).read_text())
    by_head = {r.dataset: r for r in results}
    for head in record["heads"]:
        name = head["dataset"]
        delta = after[f"heads.{name}.bias"] - before[f"heads.{name}.bias"]
        expected = torch.tensor(list(head["offsets"].values()), dtype=delta.dtype)
        assert torch.allclose(delta, expected, atol=1e-6)
        assert head["dev_after"]["wf1"] >= head["dev_before"]["wf1"]
        assert by_head[name].dev_after == head["dev_after"]
    # The output is an ordinary checkpoint whose dev predictions are the calibrated ones.
    predictor = EmotionPredictor.load(out, device="cpu")
    log_probs, labels = dev_log_probs(
        predictor, "iemocap", load_dataset("iemocap", "dev", shared_data)
    )
    assert _wf1(log_probs, labels) == pytest.approx(by_head["iemocap"].dev_after["wf1"])


def test_calibrate_cli_json_and_refusal(
    tiny_checkpoint: Path,
    shared_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from realtime.cli import main

    out = tmp_path / "cal"
    argv = ["calibrate", "--checkpoint", str(tiny_checkpoint), "--output", str(out)]
    code = main([*argv, "--datasets", "iemocap", "--data-dir", str(shared_data), "--json"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(stdout.strip().splitlines()[-1])
    assert [h["dataset"] for h in result["heads"]] == ["iemocap"]
    assert (out / "config.json").is_file() and (out / CALIBRATION).is_file()

    code = main(["calibrate", "--checkpoint", str(out), "--output", str(out)])
    _, err = capsys.readouterr()
    assert code != 0
    assert "--output must differ" in err and "Traceback" not in err


def test_audio_scale_is_folded_into_the_acoustic_projection(
    tiny_multimodal_checkpoint: Path, tiny_checkpoint: Path, shared_data: Path, tmp_path: Path
) -> None:
    from unimse.inputs import ModelInput

    out = tmp_path / "scaled"
    results, scale = calibrate_checkpoint(
        tiny_multimodal_checkpoint, out, shared_data, datasets=(), audio_scale="auto"
    )
    assert results == [] and scale is not None
    assert set(scale.scores) == {str(g) for g in AUDIO_SCALE_GRID}
    best = max(v["mean"] for v in scale.scores.values())
    assert scale.scores[str(scale.scale)]["mean"] == best
    for scores in scale.scores.values():
        assert set(scores) == {
            "meld_neutral_speech_wf1",
            "iemocap_neutral_speech_wf1",
            "emodb_audio_uar",
            "mean",
        }
    before = load_file(str(tiny_multimodal_checkpoint / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed <= set(ACOUSTIC_PROJECTION)
    for name in ACOUSTIC_PROJECTION:
        assert torch.allclose(after[name], before[name] * scale.scale)
    # Text-only predictions cannot change; scale 0 makes text + audio equal text only.
    zero = tmp_path / "zero"
    calibrate_checkpoint(tiny_multimodal_checkpoint, zero, shared_data, (), audio_scale=0.0)
    silent = EmotionPredictor.load(zero, device="cpu")
    sound = np.random.default_rng(0).normal(size=(40, 64)).astype(np.float32)
    with_audio, text_only = silent.predict(
        [ModelInput("I am fine.", acoustic=sound), ModelInput("I am fine.")]
    )
    assert with_audio.emotion_probs == pytest.approx(text_only.emotion_probs, abs=1e-6)
    with pytest.raises(ValueError, match="audio scale must be in"):
        calibrate_checkpoint(
            tiny_multimodal_checkpoint, tmp_path / "x", shared_data, (), audio_scale=2
        )
    with pytest.raises(CheckpointError, match="no acoustic branch"):
        calibrate_checkpoint(tiny_checkpoint, tmp_path / "y", shared_data, (), audio_scale=0.5)


@pytest.mark.parametrize("value", ["abc", "1.5", "-0.1"])
def test_calibrate_cli_rejects_a_bad_audio_scale_in_one_line(
    value: str, tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from realtime.cli import main

    argv = ["calibrate", "--checkpoint", str(tiny_checkpoint), "--output", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--audio-scale", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--audio-scale" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
