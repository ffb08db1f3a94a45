"""The convex voice readout (train/voice_readout.py): its fit, and a model carrying it exactly."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_unimse_config

from train.config import ReadoutSettings
from train.staged import reset_pmf_inputs
from train.voice_readout import (
    ReadoutRows,
    VoiceReadout,
    fit_readout,
    install_language_readout,
    install_readout,
    pooled_statistics,
)
from unimse.backbones import load_tokenizer
from unimse.checkpoint import CheckpointError
from unimse.config import FeatureSpec
from unimse.factory import build_model
from unimse.inference import empty_logits
from unimse.inputs import ModelInput
from unimse.labels import EMODB_JOINT_CLASSES, EMODB_LABELS, UniversalLabel, emodb_joint_indices
from unimse.losses import joint_class_scores
from unimse.processor import UniMSEProcessor
from unimse.speakers import FIRST_SPEAKER

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NEUTRAL = UniversalLabel("neutral", 0.0, "neutral", "neutral")
ANGER = UniversalLabel("negative", -2.0, "anger", "angry")
JOY = UniversalLabel("positive", 2.0, "joy", "happy")


def voice_model(**overrides: object):  # type: ignore[no-untyped-def]
    """A tiny model whose voice is a stats encoder with a speaker baseline and no path into the
    backbone (PMF's audio columns off), as the shipped voice stages have it."""
    torch.manual_seed(0)
    settings: dict[str, object] = {"modality_dim": 24, **overrides}
    config = tiny_unimse_config(
        acoustic=FeatureSpec("test-acoustic", 8, "stats", baseline=5.0),
        modality_logits=True,
        voice_intensity=True,
        voice_hinge="off",
        **settings,
    )
    model = build_model(config)
    reset_pmf_inputs(model, ["audio"])
    with torch.no_grad():  # a trained intensity read, so that keeping it is tested
        model.modality_logits.acoustic_intensity.weight.normal_()
        model.fusion.acoustic.norm.running_mean.normal_()
        model.fusion.acoustic.norm.running_var.uniform_(0.5, 2.0)
    return model.eval(), UniMSEProcessor(config, load_tokenizer(config))


def test_readout_settings_refuse_bad_values() -> None:
    with pytest.raises(ValueError, match="losses"):
        ReadoutSettings(losses="some")
    with pytest.raises(ValueError, match="l2"):
        ReadoutSettings(l2=-1.0)
    with pytest.raises(ValueError, match="EMO-DB and neutral weights"):
        ReadoutSettings(emodb_weight=0.0)
    with pytest.raises(ValueError, match="neutral weights"):
        ReadoutSettings(neutral_weight=-1.0)


def test_weighted_neutral_voices_pull_the_readout_towards_neutral() -> None:
    """Voices that overlap anger's: the more the neutral voices weigh, the more of the overlap the
    readout reads as neutral (a voice that leans less readily from neutral)."""
    rng = np.random.default_rng(1)
    acted = [ANGER] * 60
    calm = [NEUTRAL] * 60
    pooled = np.concatenate([rng.normal(1.0, 1.0, (60, 4)), rng.normal(0.0, 1.0, (60, 4))]).astype(
        np.float32
    )
    rows = ReadoutRows(
        pooled, acted + calm, np.zeros(120, dtype=bool), np.zeros(2), np.arange(120) >= 60
    )
    config = tiny_unimse_config(modality_logits=True, visual=None)
    probe = rng.normal(0.5, 1.0, (200, 4)).astype(np.float32)
    meld = slice(3, 10)
    anger, neutral = config.meld_emotions.index("anger"), config.meld_emotions.index("neutral")

    def lead(weight: float) -> float:
        readout = fit_readout(
            rows, np.zeros(16), config, ReadoutSettings(0.01, neutral_weight=weight)
        )
        logits = readout.logits(probe)[:, meld]
        return float(np.mean(logits[:, anger] - logits[:, neutral]))

    assert lead(4.0) < lead(1.0) - 0.5


def test_the_fitted_readout_reads_separable_voices() -> None:
    rng = np.random.default_rng(0)
    centres = {NEUTRAL: 0.0, ANGER: 3.0, JOY: -3.0}
    labels = [lab for lab in centres for _ in range(40)]
    pooled = np.stack([rng.normal(centres[lab], 1.0, 16) for lab in labels]).astype(np.float32)
    rows = ReadoutRows(pooled, labels, np.zeros(len(labels), dtype=bool), np.zeros(8))
    _, processor = voice_model()
    config = processor.config
    readout = fit_readout(rows, np.zeros(16), config, ReadoutSettings(l2=0.001))
    test = np.stack([rng.normal(centres[lab], 1.0, 16) for lab in centres]).astype(np.float32)
    meld = readout.logits(test)[:, 3:10].argmax(-1)
    assert [config.meld_emotions[k] for k in meld] == ["neutral", "anger", "joy"]


def test_joint_losses_keep_every_head_for_the_other_corpora() -> None:
    """``losses = "joint"`` takes EMO-DB's rows out of the heads' cross-entropy only: RAVDESS's
    and the neutral voices still train all three heads, the IEMOCAP head included."""
    rng = np.random.default_rng(2)
    labels = [NEUTRAL, ANGER, JOY] * 20
    centres = {NEUTRAL: 0.0, ANGER: 3.0, JOY: -3.0}
    pooled = np.stack([rng.normal(centres[lab], 1.0, 16) for lab in labels]).astype(np.float32)
    emodb = np.zeros(len(labels), dtype=bool)
    emodb[:6] = True  # a few EMO-DB rows (neutral / anger / joy have EMO-DB classes)
    rows = ReadoutRows(pooled, labels, emodb, np.zeros(8))
    config = tiny_unimse_config(modality_logits=True, visual=None)
    readout = fit_readout(rows, np.zeros(16), config, ReadoutSettings(l2=0.001, losses="joint"))
    iemocap = readout.logits(pooled[6:])[:, 10:].argmax(-1)
    truth = [config.iemocap_emotions.index(lab.iemocap_emotion) for lab in labels[6:]]
    assert np.mean(iemocap == np.array(truth)) > 0.9


def test_a_zero_heads_share_is_the_joint_readout_and_a_share_between_moves_it() -> None:
    """``emodb_heads`` weighs EMO-DB's rows in the heads' loss: 0 is ``losses = "joint"``."""
    rng = np.random.default_rng(4)
    labels = [NEUTRAL, ANGER, JOY] * 20
    centres = {NEUTRAL: 0.0, ANGER: 3.0, JOY: -3.0}
    pooled = np.stack([rng.normal(centres[lab], 1.0, 16) for lab in labels]).astype(np.float32)
    emodb = np.arange(len(labels)) < 30
    rows = ReadoutRows(pooled, labels, emodb, np.zeros(8))
    config = tiny_unimse_config(modality_logits=True, visual=None)

    def fit(losses: str, share: float) -> np.ndarray:
        settings = ReadoutSettings(l2=0.01, losses=losses, emodb_heads=share)
        return fit_readout(rows, np.zeros(16), config, settings).weight

    # the same objective summed in another order: L-BFGS stops within its tolerance of the
    # optimum, here 4e-4 apart (2026-12-05, a fresh venv), while the shares move it by 0.07-0.13
    np.testing.assert_allclose(fit("all", 0.0), fit("joint", 1.0), atol=2e-3)
    half = fit("all", 0.5)
    assert not np.allclose(half, fit("all", 0.0), atol=2e-2)
    assert not np.allclose(half, fit("all", 1.0), atol=2e-2)
    with pytest.raises(ValueError, match="share"):
        ReadoutSettings(emodb_heads=1.5)


def test_the_readout_learns_emodb_classes_through_the_joint_decision() -> None:
    config = tiny_unimse_config(modality_logits=True, visual=None)
    names = list(EMODB_JOINT_CLASSES)
    rng = np.random.default_rng(0)
    centres = 4.0 * rng.normal(size=(len(names), 6))
    which = np.tile(np.arange(len(names)), 8)
    pooled = (centres[which] + 0.1 * rng.normal(size=(len(which), 6))).astype(np.float32)
    labels = [EMODB_LABELS[names[k]] for k in which.tolist()]
    rows = ReadoutRows(pooled, labels, np.ones(len(which), dtype=bool), np.zeros(3))
    readout = fit_readout(rows, np.zeros(16), config, ReadoutSettings(l2=1e-4))
    pol, emo, _ = torch.split(torch.from_numpy(readout.logits(pooled)), [3, 7, 6], -1)
    picks = joint_class_scores(pol, emo, emodb_joint_indices()).argmax(-1)
    assert picks.tolist() == which.tolist()  # boredom and neutral told apart by polarity alone


def test_a_model_carries_the_installed_readout_exactly() -> None:
    model, processor = voice_model()
    rng = np.random.default_rng(1)
    voices = [rng.normal(0.0, 1.0, (n, 8)).astype(np.float32) for n in (5, 9, 14)]
    inputs = [ModelInput(text="", speaker=FIRST_SPEAKER, acoustic=v) for v in voices]
    with torch.inference_mode():
        before = model(processor.encode(inputs)).score
    pooled = pooled_statistics(voices)
    readout = VoiceReadout(
        pooled.mean(0) + 0.1,
        pooled.var(0) + 0.5,
        rng.normal(0.0, 1.0, (16, 16)).astype(np.float32),
        rng.normal(0.0, 1.0, 16).astype(np.float32),
    )
    prior = rng.normal(0.0, 1.0, 8).astype(np.float32)
    install_readout(model, readout, prior)
    with torch.inference_mode():
        out = model(processor.encode(inputs))
    got = torch.cat([out.polarity_logits, out.meld_logits, out.iemocap_logits], -1).numpy()
    empty = empty_logits(model, processor)
    np.testing.assert_allclose(got, empty + readout.logits(pooled), atol=1e-4)
    np.testing.assert_allclose(out.score.numpy(), before.numpy(), atol=1e-4)  # intensity kept
    np.testing.assert_array_equal(model.fusion.acoustic.baseline_prior.numpy(), prior)


def test_a_language_readout_reads_its_language_and_leaves_the_others() -> None:
    """German rows: polarity and MELD from the German readout, IEMOCAP from the shared one;
    English and unknown-language rows: the shared readout, as without a language map."""
    model, processor = voice_model(voice_languages=("de",), modality_dim=32)
    rng = np.random.default_rng(3)
    voices = [rng.normal(0.0, 1.0, (n, 8)).astype(np.float32) for n in (5, 9, 14)]
    pooled = pooled_statistics(voices)
    mean, var = pooled.mean(0) + 0.1, pooled.var(0) + 0.5

    def readout(seed: int) -> VoiceReadout:
        g = np.random.default_rng(seed)
        weight, bias = g.normal(0.0, 1.0, (16, 16)), g.normal(0.0, 1.0, 16)
        return VoiceReadout(mean, var, weight.astype(np.float32), bias.astype(np.float32))

    shared, german = readout(4), readout(5)
    install_readout(model, shared, np.zeros(8, dtype=np.float32))
    install_language_readout(model, german, "de")
    empty = empty_logits(model, processor)
    for language in ("", "en", "de"):
        inputs = [
            ModelInput(text="", speaker=FIRST_SPEAKER, acoustic=v, language=language)
            for v in voices
        ]
        with torch.inference_mode():
            out = model(processor.encode(inputs))
        got = torch.cat([out.polarity_logits, out.meld_logits, out.iemocap_logits], -1).numpy()
        want = shared.logits(pooled)
        if language == "de":
            want[:, :10] = german.logits(pooled)[:, :10]
        np.testing.assert_allclose(got, empty + want, atol=1e-4)
    with pytest.raises(CheckpointError, match="no voice map"):
        install_language_readout(model, german, "fr")
    with pytest.raises(CheckpointError, match="standardisation"):
        install_language_readout(model, replace(german, mean=mean + 1.0), "de")


def test_a_readout_refuses_a_voice_that_reaches_the_backbone() -> None:
    model, _ = voice_model()
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "columns"):
                module.down.weight[:, module.columns("audio")] = 1.0
    readout = VoiceReadout(np.zeros(16), np.ones(16), np.zeros((16, 16)), np.zeros(16))
    with pytest.raises(CheckpointError, match="PMF"):
        install_readout(model, readout, np.zeros(8, dtype=np.float32))


def test_fit_voice_refuses_a_checkpoint_without_a_baselined_voice(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    from train.voice_readout import fit_voice

    with pytest.raises(CheckpointError, match="speaker-baselined voice"):
        fit_voice(tiny_checkpoint, tmp_path / "out", tmp_path, ReadoutSettings())
    assert not (tmp_path / "out").exists()


def test_fit_voice_on_the_cli_gives_a_one_line_error(
    tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from realtime.cli import main

    code = main(["fit-voice", "--checkpoint", str(tiny_checkpoint), "--output", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert len(err) == 1 and "speaker-baselined voice" in err[0]


@pytest.mark.parametrize(
    ("flags", "needs"),
    [
        (["--synthetic-weight", "2"], "--synthetic-voices"),
        (["--german-l2", "0.5"], "--german-readout"),
        (["--german-losses", "all"], "--german-readout"),
    ],
)
def test_fit_voice_says_in_one_line_which_option_a_companion_needs(
    flags: list[str], needs: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rt_support import emotrack_in_process

    out = tmp_path / "out"
    code = emotrack_in_process("fit-voice", "--checkpoint", "default", "--output", str(out), *flags)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f" {needs}" in err[0] and "need" in err[0]
    assert not out.exists()


def test_fit_voice_checks_its_output_before_it_reads_meld(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The data folder holds no MELD for --synthetic-voices: the bad --output is said first."""
    from rt_support import emotrack_in_process

    (tmp_path / "data").mkdir()
    out = tmp_path / "file"
    out.write_text("not a folder")
    code = emotrack_in_process(
        "fit-voice",
        "--checkpoint",
        "default",
        "--output",
        str(out),
        "--data-dir",
        str(tmp_path / "data"),
        "--synthetic-voices",
        "5",
    )
    assert code == 2
    assert capsys.readouterr().err == (
        f"emotrack: error: --output {out} is a file; give a folder (it is made if missing)\n"
    )


@pytest.mark.slow
def test_fit_voice_on_real_speakers_writes_a_checkpoint_that_reads_them(
    shared_data: Path, tmp_path: Path
) -> None:
    """The shipped checkpoint refitted on 2 RAVDESS actors and 1 EMO-DB speaker (the others held
    out, to stay quick): a loadable checkpoint at weight 1, its record, the new baseline, and a
    voice that tells the fitted speakers' anger from their neutral voice."""
    from train.audio_data import RAVDESS
    from train.audio_datasets import corpus_features
    from train.voice_readout import fit_voice, training_voices
    from unimse.inference import EmotionPredictor

    kept = {"ravdess/01", "ravdess/02", "emodb/03"}
    every = {f"ravdess/{a:02d}" for a in range(1, 17)}
    every |= {f"emodb/{s}" for s in ("03", "08", "09", "10", "11", "12")}
    out = tmp_path / "fitted"
    record = fit_voice(
        "default",
        out,
        shared_data,
        ReadoutSettings(l2=0.01),
        held_out=every - kept,
        baseline=0.5,
        german=ReadoutSettings(l2=0.01, emodb_weight=1.0, losses="joint"),
    )
    assert record["clips"] == 60 + 60 + 49 and record["voices"] > record["clips"]
    assert record["german_readout"]["losses"] == "joint"
    assert record["speaker_baseline"] == 0.5 and "source_calibration" in record
    predictor = EmotionPredictor.load(out, device="cpu")
    assert predictor.config.acoustic is not None and predictor.config.acoustic.baseline == 0.5
    assert predictor.config.voice_wordless == 1.0
    assert predictor.config.voice_languages == ("de",)
    clips = [c for c in training_voices(shared_data, every - kept) if c.dataset == RAVDESS]
    chosen = [c for c in clips if c.label.meld_emotion in ("anger", "neutral")][:40]
    prior = predictor.voice_prior
    assert prior is not None
    features = corpus_features(chosen, predictor.config.acoustic, prior=prior)
    preds = predictor.predict(
        [ModelInput(text="", speaker=FIRST_SPEAKER, acoustic=f) for f in features]
    )
    right = sum(p.emotion == c.label.meld_emotion for p, c in zip(preds, chosen, strict=True))
    assert right >= 0.8 * len(chosen), f"{right}/{len(chosen)} fitted clips read right"


def test_fit_voice_without_the_corpora_gives_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from realtime.cli import main

    args = ["--output", str(tmp_path / "out"), "--data-dir", str(tmp_path / "nothing")]
    code = main(["fit-voice", "--checkpoint", "default", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert len(err) == 1 and "ravdess folder not found" in err[0]
    assert not (tmp_path / "out").exists()


def test_synthetic_voices_join_the_fit_but_not_its_standardisation() -> None:
    """espeak-ng's rows are read in the human voices' standardisation, so a language readout
    fitted in it (EMO-DB's rows alone) does not move when synthetic voices join the shared fit."""
    from train.audio_data import EMODB, RAVDESS
    from train.voice_readout import SYNTHETIC, human_standard, language_rows

    rng = np.random.default_rng(5)
    human = rng.normal(size=(12, 4)).astype(np.float32)
    synthetic = rng.normal(50.0, 9.0, size=(5, 4)).astype(np.float32)
    corpora = np.array([RAVDESS] * 6 + [EMODB] * 6 + [SYNTHETIC] * 5)
    rows = ReadoutRows(
        np.concatenate([human, synthetic]),
        [NEUTRAL] * 17,
        corpora == EMODB,
        np.zeros(2),
        corpora == SYNTHETIC,
        corpora,
    )
    mean, var = human_standard(rows)
    np.testing.assert_allclose(mean, human.mean(0), rtol=1e-6)
    np.testing.assert_allclose(var, human.var(0), rtol=1e-5)
    assert len(language_rows(rows, EMODB).labels) == 6
    assert len(language_rows(rows, RAVDESS, EMODB).labels) == 12


def test_synthetic_sentences_are_meld_training_lines_evenly_spaced(shared_data: Path) -> None:
    from train.voice_readout import synthetic_sentences

    picked = synthetic_sentences(shared_data, 50)
    assert len(picked) == 50 and len(set(picked)) > 45
    assert all(len(text.split()) >= 4 for text in picked)
    assert synthetic_sentences(shared_data, 50) == picked  # the same lines every time
    assert synthetic_sentences(shared_data, 0) == []


def test_synthetic_voices_are_each_voices_conversation_and_keep_their_places(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import train.tts_audio as tts
    import train.voice_readout as readout
    from train.tts_audio import voice_and_rate
    from unimse.voice_baseline import normalise_corpus

    texts = ["one two three four", "...", "five six seven eight", "nine ten eleven twelve"]
    raw = {t: np.full((3, 2), float(i + 1), np.float32) for i, t in enumerate(texts)}
    raw["..."] = None  # nothing audible

    def spoken(got: list[str], spec: FeatureSpec, extract: object, cache: object) -> list:
        assert spec.baseline == 0.0  # raw states: the baseline is taken per voice afterwards
        return [raw[t] for t in got]

    monkeypatch.setattr(tts, "tts_features", spoken)
    monkeypatch.setattr(readout, "acoustic_extractor", lambda spec: None)
    spec = FeatureSpec("test-acoustic", 2, "stats", baseline=1.0)
    prior = np.zeros(2, np.float32)
    out = readout.synthetic_voices(texts, spec, prior, None)
    assert out[1] is None and all(out[i] is not None for i in (0, 2, 3))
    audible = [0, 2, 3]
    expected = normalise_corpus(
        [raw[texts[i]] for i in audible], [voice_and_rate(texts[i])[0] for i in audible], prior, 1.0
    )
    for i, want in zip(audible, expected, strict=True):
        np.testing.assert_allclose(out[i], want)
    unbaselined = readout.synthetic_voices(texts, replace(spec, baseline=0.0), None, None)
    np.testing.assert_array_equal(unbaselined[2], raw[texts[2]])
    with pytest.raises(ValueError, match="prior"):
        readout.synthetic_voices(texts, spec, None, None)


def test_synthetic_rows_weigh_as_asked() -> None:
    """Weighing espeak-ng's rows up pulls the readout to read their voice as neutral."""
    from train.audio_data import RAVDESS
    from train.voice_readout import SYNTHETIC

    rng = np.random.default_rng(6)
    acted = np.stack([rng.normal(3.0, 1.0, 8) for _ in range(30)]).astype(np.float32)
    spoken = np.stack([rng.normal(2.0, 1.0, 8) for _ in range(10)]).astype(np.float32)
    corpora = np.array([RAVDESS] * 30 + [SYNTHETIC] * 10)
    rows = ReadoutRows(
        np.concatenate([acted, spoken]),
        [ANGER] * 30 + [NEUTRAL] * 10,
        np.zeros(40, dtype=bool),
        np.zeros(4),
        corpora == SYNTHETIC,
        corpora,
    )
    config = tiny_unimse_config(modality_logits=True, visual=None)

    def neutral_share(weight: float) -> float:
        settings = ReadoutSettings(l2=0.01, synthetic_weight=weight)
        logits = fit_readout(rows, np.zeros(16), config, settings).logits(spoken)[:, 3:10]
        return float(np.mean(logits.argmax(-1) == config.meld_emotions.index("neutral")))

    assert neutral_share(0.05) < 0.5  # barely weighed: read as the acted anger around them
    assert neutral_share(8.0) == 1.0
    with pytest.raises(ValueError, match="synthetic"):
        ReadoutSettings(synthetic_weight=0.0)


def test_a_graft_takes_the_donors_shared_readout_and_keeps_the_rest_bit_for_bit(
    tmp_path: Path,
) -> None:
    from train.voice_readout import graft_shared_readout
    from unimse.checkpoint import read_stored, save_checkpoint

    rng = np.random.default_rng(3)
    mean, var = rng.normal(0.0, 1.0, 16), rng.uniform(0.5, 2.0, 16)

    def built(seed: int, shift: float = 0.0) -> Path:
        model, _ = voice_model(voice_languages=("de",), modality_dim=32)
        g = np.random.default_rng(seed)
        shared = VoiceReadout(
            mean + shift,
            var,
            g.normal(0.0, 1.0, (16, 16)).astype(np.float32),
            g.normal(0.0, 1.0, 16).astype(np.float32),
        )
        install_readout(model, shared, np.zeros(8, dtype=np.float32))
        german = replace(shared, weight=shared.weight + 1.0)
        install_language_readout(model, german, "de")
        return save_checkpoint(model, tmp_path / f"built{seed}_{shift}", half=False)

    base, donor = built(1), built(2)
    rows = graft_shared_readout(base, donor, tmp_path / "grafted")
    assert rows == 16
    got, _ = read_stored(tmp_path / "grafted")
    kept, _ = read_stored(base)
    given, _ = read_stored(donor)
    proj = "fusion.acoustic.proj.weight"
    torch.testing.assert_close(got[proj][:16], given[proj][:16], rtol=0, atol=0)
    torch.testing.assert_close(got[proj][16:], kept[proj][16:], rtol=0, atol=0)  # intensity, de
    for name in kept:
        if not name.startswith("fusion.acoustic.proj."):
            torch.testing.assert_close(got[name], kept[name], rtol=0, atol=0)
    record = json.loads((tmp_path / "grafted" / "voice_graft.json").read_text())
    assert record["rows"] == 16 and "donor_readout" not in record  # the donor has no fit record
    with pytest.raises(CheckpointError, match="running_mean differs"):
        graft_shared_readout(base, built(3, shift=1.0), tmp_path / "other")
    with pytest.raises(CheckpointError, match="must differ"):
        graft_shared_readout(base, donor, base)
