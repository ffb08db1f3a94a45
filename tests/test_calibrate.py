"""Dev-set calibration of the emotion heads (`emotrack calibrate`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from rt_support import emotrack_in_process
from safetensors.torch import load_file

from train.calibrate import CALIBRATION, calibrate_checkpoint, dev_log_probs, fit_offsets
from train.data import load_dataset
from train.evaluate import evaluate, predict_samples
from train.face_data import NEUTRAL_TEXT, split_of_subject
from train.metrics import classification_metrics
from train.modality_scale import (
    ACOUSTIC_PROJECTION,
    FACE_WORDS_TOLERANCE,
    SCALE_GRID,
    VISUAL_PROJECTION,
    AudioScaleDevData,
    VideoScaleDevData,
    scale_scores,
)
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
    results, scales = calibrate_checkpoint(tiny_checkpoint, out, shared_data)
    assert scales == []
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
    results, scales = calibrate_checkpoint(
        tiny_multimodal_checkpoint, out, shared_data, datasets=(), audio_scale="auto"
    )
    assert results == [] and [s.modality for s in scales] == ["audio"]
    scale = scales[0]
    assert set(scale.scores) == {str(g) for g in (*SCALE_GRID, 0.0)}  # 0: text-only reference
    text_only = scale.scores["0.0"]
    chosen = scale.scores[str(scale.scale)]
    uar = {
        k: float(np.mean([s[f"{c}_audio_uar"] for c in ("ravdess", "emodb")]))
        for k, s in scale.scores.items()
    }
    allowed = [
        k
        for k, s in scale.scores.items()
        if float(k) > 0
        and all(
            s[f"{d}_neutral_speech_wf1"] >= text_only[f"{d}_neutral_speech_wf1"] - 0.5
            for d in ("meld", "iemocap")
        )
    ]
    if allowed:  # the best emotional-speech UAR among scales that keep the words' WF1
        assert str(scale.scale) in allowed
        assert uar[str(scale.scale)] == max(uar[k] for k in allowed)
    else:
        assert chosen["mean"] == max(v["mean"] for v in scale.scores.values())
    for scores in scale.scores.values():
        assert set(scores) == {
            "meld_neutral_speech_wf1",
            "iemocap_neutral_speech_wf1",
            "ravdess_audio_uar",
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
    with pytest.raises(CheckpointError, match="no face gate to sharpen"):
        calibrate_checkpoint(
            tiny_multimodal_checkpoint, tmp_path / "z", shared_data, (), face_gate_power=2.0
        )


def test_video_scale_criterion_and_folding(
    tiny_multimodal_checkpoint: Path, tiny_checkpoint: Path, shared_data: Path, tmp_path: Path
) -> None:
    from unimse.inputs import ModelInput

    predictor = EmotionPredictor.load(tiny_multimodal_checkpoint, device="cpu")
    if not (shared_data / "ckplus").is_dir():
        pytest.skip("the video criterion needs ../shared/data/ckplus")
    data = VideoScaleDevData.load(predictor, shared_data)
    # REAL faces of the CK+ dev subjects only, beside the neutral sentence...
    assert data.faces and {split_of_subject(s.dialogue.split("_")[0]) for s in data.faces} == {
        "dev"
    }
    assert {s.text for s in data.faces} == {NEUTRAL_TEXT}
    assert all(s.visual is not None and 1 <= len(s.visual) <= 12 for s in data.faces)
    dev_rows = [s.visual[0] for s in data.faces if s.visual is not None]
    # ...and beside every MELD / IEMOCAP dev utterance, one random dev face each
    for dataset in ("meld", "iemocap"):
        unrelated = data.unrelated_face[dataset]
        assert len(unrelated) == len(load_dataset(dataset, "dev", shared_data))
        for s in unrelated[:50]:
            assert s.visual is not None and s.visual.shape[1] == 7 and 1 <= len(s.visual) <= 12
            assert any(np.array_equal(s.visual[0], row) for row in dev_rows)
    assert data.size == len(data.faces) + sum(len(v) for v in data.unrelated_face.values())
    scores = scale_scores(predictor, "video", data, 0.0)
    # the zero scale as select_scale takes it, from the text-only pass of load: the same scores
    reference = data.reference_scores(predictor)
    assert reference == pytest.approx({k: v for k, v in scores.items() if k != "mean"})
    assert set(scores) == {
        "ckplus_face_acc",
        "meld_emotional_words_face_wf1",
        "iemocap_emotional_words_face_wf1",
        "meld_unrelated_face_wf1",
        "iemocap_unrelated_face_wf1",
        "mean",
    }
    # At scale 0 a face changes nothing: the unrelated-face scores are the text-only ones, over
    # every utterance and over those whose words alone read as an emotion.
    meld_dev = load_dataset("meld", "dev", shared_data)
    text_preds = predict_samples(predictor, meld_dev)
    assert data.emotional_words["meld"] == [p.emotion != "neutral" for p in text_preds]
    assert scores["meld_unrelated_face_wf1"] == pytest.approx(
        evaluate(predictor, "meld", meld_dev)["wf1"]
    )
    emotional = [s for s, e in zip(meld_dev, data.emotional_words["meld"], strict=True) if e]
    if emotional:
        assert scores["meld_emotional_words_face_wf1"] == pytest.approx(
            evaluate(predictor, "meld", emotional)["wf1"]
        )
    # The best CK+ accuracy among the scales whose emotional words keep within the tolerance of
    # no face (0.0), ties to the smaller scale; none within it: the smallest scale.
    words = {"meld_emotional_words_face_wf1": 50.0, "iemocap_emotional_words_face_wf1": 50.0}
    costly = {k: v - FACE_WORDS_TOLERANCE - 0.1 for k, v in words.items()}
    grid = {
        "0.0": {**words, "ckplus_face_acc": 0.0},
        "1.0": {**costly, "ckplus_face_acc": 90.0},
        "0.5": {**words, "ckplus_face_acc": 70.0},
        "0.35": {**words, "ckplus_face_acc": 70.0},
        "0.25": {**words, "ckplus_face_acc": 60.0},
    }
    assert data.pick(grid) == "0.35"
    assert data.pick({"0.0": grid["0.0"], "1.0": grid["1.0"], "0.5": grid["1.0"]}) == "0.5"

    # A given factor is folded into the visual projection only, and the earlier record is kept.
    first, second = tmp_path / "audio", tmp_path / "video"
    calibrate_checkpoint(tiny_multimodal_checkpoint, first, shared_data, (), audio_scale=0.5)
    _, scales = calibrate_checkpoint(first, second, shared_data, (), video_scale=0.0)
    assert [(s.modality, s.scale) for s in scales] == [("video", 0.0)]
    before = load_file(str(first / "model.safetensors"))
    after = load_file(str(second / "model.safetensors"))
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == set(VISUAL_PROJECTION)
    record = json.loads((second / CALIBRATION).read_text())
    assert record["video_scale"]["scale"] == 0.0
    assert record["source_calibration"]["audio_scale"]["scale"] == 0.5
    blind = EmotionPredictor.load(second, device="cpu")
    face = np.full((6, 7), 1 / 7, dtype=np.float32)
    face[:, 1] = 0.9
    with_face, text_only = blind.predict(
        [ModelInput("I miss her.", visual=face), ModelInput("I miss her.")]
    )
    assert with_face.emotion_probs == pytest.approx(text_only.emotion_probs, abs=1e-6)


def calibrate_args(checkpoint: Path, output: Path, *flags: str) -> list[str]:
    """``emotrack calibrate`` of ``checkpoint`` into ``output`` with ``flags``."""
    return ["calibrate", "--checkpoint", str(checkpoint), "--output", str(output), *flags]


@pytest.mark.parametrize("flag", ["--audio-scale", "--video-scale", "--voice-neutral-share"])
@pytest.mark.parametrize("value", ["abc", "1.5", "-0.1"])
def test_calibrate_cli_rejects_a_bad_scale_in_one_line(
    flag: str,
    value: str,
    tiny_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert emotrack_in_process(*calibrate_args(tiny_checkpoint, tmp_path / "o", flag, value)) == 2
    err = capsys.readouterr().err
    assert flag in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_audio_scale_dev_pairs_words_with_every_dev_speakers_neutral_voice(
    tiny_multimodal_checkpoint: Path, shared_data: Path
) -> None:
    from train.audio_datasets import neutral_voice_clips

    predictor = EmotionPredictor.load(tiny_multimodal_checkpoint, device="cpu")
    spec = predictor.config.acoustic
    assert spec is not None
    data = AudioScaleDevData.load(predictor, shared_data)
    ravdess, emodb = (
        neutral_voice_clips(c, "dev", shared_data, spec, predictor.voice_prior)
        for c in ("ravdess", "emodb")
    )
    paired = [s.acoustic for s in data.with_neutral_speech["meld"]]
    assert ravdess and emodb and len(paired) > len(ravdess) + len(emodb)
    # interleaved: RAVDESS dev actors and the EMO-DB dev speaker take turns, then cycle
    assert np.array_equal(paired[0], ravdess[0]) and np.array_equal(paired[1], emodb[0])
    distinct = {p.tobytes() for p in paired}
    assert distinct == {c.tobytes() for c in (*ravdess, *emodb)}


def test_a_voice_neutral_share_goes_into_the_config_of_a_hinged_voice_only(
    tiny_multimodal_checkpoint: Path, tmp_path: Path
) -> None:
    from conftest import tiny_unimse_config

    from unimse.checkpoint import save_checkpoint
    from unimse.config import UniMSEConfig
    from unimse.factory import build_model
    from unimse.features import ACOUSTIC_SPEC

    with pytest.raises(CheckpointError, match="no voice hinge"):
        calibrate_checkpoint(
            tiny_multimodal_checkpoint, tmp_path / "x", tmp_path, (), voice_neutral_share=0.25
        )
    config = tiny_unimse_config(
        acoustic=ACOUSTIC_SPEC, visual=None, modality_logits=True, voice_hinge="relu"
    )
    hinged = save_checkpoint(build_model(config), tmp_path / "hinged", half=False)
    out = tmp_path / "shared"
    calibrate_checkpoint(
        hinged, out, tmp_path, (), voice_neutral_share=0.25, voice_share_by="unsure"
    )
    written = UniMSEConfig.load(out / "config.json")
    assert (written.voice_neutral_share, written.voice_share_by) == (0.25, "unsure")
    assert json.loads((out / CALIBRATION).read_text())["voice_neutral_share"] == 0.25
    assert EmotionPredictor.load(out, device="cpu").model.modality_logits.neutral_share == 0.25
    margin = tmp_path / "margin"
    calibrate_checkpoint(
        hinged, margin, tmp_path, (), voice_margin=1.5, voice_cap=2.0, voice_neutral_words=4.0
    )
    written = UniMSEConfig.load(margin / "config.json")
    assert (written.voice_margin, written.voice_cap) == (1.5, 2.0)
    assert written.voice_hinge == "relu"  # the shape stays unless asked
    step = tmp_path / "step"
    calibrate_checkpoint(hinged, step, tmp_path, (), voice_margin=4.0, voice_hinge="step")
    assert UniMSEConfig.load(step / "config.json").voice_hinge == "step"
    assert EmotionPredictor.load(step, device="cpu").model.modality_logits.hinge == "step"
    with pytest.raises(ValueError, match="cannot turn it off"):
        calibrate_checkpoint(hinged, tmp_path / "off", tmp_path, (), voice_hinge="off")
    assert written.voice_neutral_words == 4.0
    assert json.loads((margin / CALIBRATION).read_text())["voice_margin"] == 1.5
    predictor = EmotionPredictor.load(margin, device="cpu")
    assert predictor.model.modality_logits.margin == 1.5
    # same weights, another setting: another model version
    from dataclasses import replace

    from unimse.inference import model_digest

    settled = predictor.config
    assert model_digest(margin, settled) == model_digest(margin, replace(settled))
    assert model_digest(margin, settled) != model_digest(margin, replace(settled, voice_margin=0.0))
    assert predictor.model_version.endswith(model_digest(margin, settled))
    with pytest.raises(ValueError, match="voice_neutral_share"):
        calibrate_checkpoint(hinged, tmp_path / "bad", tmp_path, (), voice_neutral_share=1.5)
    alone = tmp_path / "alone"  # the voice's weight without words, relative to the audio scale
    calibrate_checkpoint(hinged, alone, tmp_path, (), audio_scale=0.4, wordless_audio_scale=1.0)
    assert UniMSEConfig.load(alone / "config.json").voice_wordless == pytest.approx(2.5)
    assert EmotionPredictor.load(alone, device="cpu").model.modality_logits.wordless == 2.5
    assert model_digest(margin, settled) == model_digest(
        margin, replace(settled, voice_wordless=1.0)
    )  # a setting at its default does not change a version
    with pytest.raises(CheckpointError, match="no voice logits"):
        calibrate_checkpoint(
            tiny_multimodal_checkpoint, tmp_path / "y", tmp_path, (), wordless_audio_scale=1.0
        )


def test_a_face_gate_power_goes_into_the_config_of_a_gated_face(tmp_path: Path) -> None:
    from conftest import tiny_unimse_config

    from unimse.checkpoint import save_checkpoint
    from unimse.config import UniMSEConfig
    from unimse.factory import build_model

    config = tiny_unimse_config(modality_logits=True, face_gate="neutral_words")
    gated = save_checkpoint(build_model(config), tmp_path / "gated", half=False)
    out = tmp_path / "sharper"
    calibrate_checkpoint(gated, out, tmp_path, (), video_scale=0.5, face_gate_power=2.0)
    assert UniMSEConfig.load(out / "config.json").face_gate_power == 2.0
    assert json.loads((out / CALIBRATION).read_text())["face_gate_power"] == 2.0
    assert EmotionPredictor.load(out, device="cpu").model.modality_logits.face_power == 2.0
    with pytest.raises(ValueError, match="face_gate_power must be > 0"):
        calibrate_checkpoint(gated, tmp_path / "bad", tmp_path, (), face_gate_power=0.0)


def test_the_audio_scale_hears_each_neutral_voice_with_its_speakers_history_under_a_trust(
    tmp_path: Path, shared_data: Path
) -> None:
    from collections import Counter
    from dataclasses import replace

    from conftest import tiny_unimse_config

    from train.modality_scale import scaled_branch
    from unimse.checkpoint import save_checkpoint
    from unimse.factory import build_model
    from unimse.features import ACOUSTIC_SPEC
    from unimse.labels import IEMOCAP_EMOTIONS, MELD_EMOTIONS, POLARITIES

    width = len(POLARITIES) + len(MELD_EMOTIONS) + len(IEMOCAP_EMOTIONS)
    config = tiny_unimse_config(
        acoustic=ACOUSTIC_SPEC,
        visual=None,
        modality_logits=True,
        voice_hinge="step",
        voice_margin=4.0,
    )
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():
        model.modality_logits.acoustic.weight.normal_()
    predictor = EmotionPredictor.load(
        save_checkpoint(model, tmp_path / "t", half=False), device="cpu"
    )
    data = AudioScaleDevData.load(predictor, shared_data)
    assert data.heard_in_conversation(predictor) is data.with_neutral_speech  # no trust: as paired
    # a trust requested in the same calibrate call: the predictor reads with it from then on
    predictor.reconfigure(replace(config, voice_trust=1.0, voice_trust_blank=(0.0,) * width))
    speakers, n = data.neutral_speakers, len(data.neutral_clips)
    assert len(speakers) == n and len(set(speakers)) > 1
    heard = data.heard_in_conversation(predictor)["meld"]
    for speaker, clips in Counter(speakers).items():  # each speaker's clips: one conversation
        counts = sorted(heard[i].voice_history.count for i in range(n) if speakers[i] == speaker)
        assert counts == list(range(clips))
    assert heard[n].voice_history == heard[0].voice_history  # utterance i hears clip i mod n
    assert np.array_equal(heard[n].acoustic, data.neutral_clips[0])
    totals = np.array([h.voice_history.total for h in heard[:n]])
    assert totals.max() > 0
    with scaled_branch(predictor, "audio", 0.5):  # the leads the trust counts move with the scale
        halved = np.array(
            [h.voice_history.total for h in data.heard_in_conversation(predictor)["meld"][:n]]
        )
    np.testing.assert_allclose(halved, totals / 2, rtol=1e-4, atol=1e-5)


def test_an_auto_audio_scale_refuses_a_readout_fitted_on_its_dev_speakers(
    tiny_multimodal_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    from train.audio_datasets import EMODB_SPLITS, RAVDESS_SPLITS
    from train.modality_scale import readout_fitted_on_dev
    from unimse.checkpoint import VOICE_READOUT

    fitted = tmp_path / "fitted"
    shutil.copytree(tiny_multimodal_checkpoint, fitted)
    assert readout_fitted_on_dev(fitted) == []  # a voice trained by stages: no record
    dev = [f"ravdess/{a}" for a in RAVDESS_SPLITS["dev"]]
    dev += [f"emodb/{s}" for s in EMODB_SPLITS["dev"]]
    (fitted / VOICE_READOUT).write_text(json.dumps({"held_out_speakers": ["ravdess/02"]}))
    assert readout_fitted_on_dev(fitted) == [s for s in dev if s != "ravdess/02"]
    auto = calibrate_args(fitted, tmp_path / "o", "--no-heads", "--audio-scale", "auto")
    assert emotrack_in_process(*auto) == 2
    err = capsys.readouterr().err
    assert "fitted on" in err and dev[0] in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
    (fitted / VOICE_READOUT).write_text(json.dumps({"held_out_speakers": dev}))
    assert readout_fitted_on_dev(fitted) == []  # held out of the fit: fair dev speakers


@pytest.mark.parametrize(
    ("flags", "needs"),
    [
        (["--voice-trust-width", "2"], "--voice-trust"),
        (["--voice-trust-start", "1"], "--voice-trust"),
        (["--voice-share-by", "unsure"], "--voice-neutral-share"),
    ],
)
def test_calibrate_says_in_one_line_which_setting_a_companion_needs(
    flags: list[str],
    needs: str,
    tiny_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    refused = calibrate_args(tiny_checkpoint, tmp_path / "o", "--no-heads", *flags)
    assert emotrack_in_process(*refused) == 2
    err = capsys.readouterr().err
    assert f"need {needs}" in err or f"needs {needs}" in err
    assert "Traceback" not in err and not (tmp_path / "o").exists()


def test_calibrate_refuses_a_trust_whose_words_count_for_nothing(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trust = ("--voice-trust", "2", "--voice-trust-words", "0")
    assert emotrack_in_process(*calibrate_args(tiny_checkpoint, tmp_path / "o", *trust)) == 2
    err = capsys.readouterr().err
    assert "--voice-trust-words: must be in (0, 1]" in err and "Traceback" not in err
