"""CK+ faces: loader, subject splits, FER features, fine-tuning, `emotrack eval --dataset ckplus`.

Synthetic folders are written with OpenCV in ``tmp_path``; the eval test reads the real
``../shared/data/ckplus`` with the shipped checkpoint and skips when it is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import SHARED_DATA

from train.data import DataError
from train.face_data import (
    FACE_CLASSES,
    FaceSample,
    ckplus_folder,
    face_feature,
    face_features,
    load_ckplus,
    select_face_split,
    split_of_subject,
    subject_folds,
    subjects_of,
    to_fer_input,
)
from train.face_eval import face_metrics
from train.fer_finetune import (
    EXPRESSIONS,
    NEUTRAL,
    FineTuneConfig,
    finetune,
    finetune_loss,
    predict_probs,
    save_fer_weights,
    targets_of,
)
from unimse.features import VISUAL_SPEC, VisualExtractor, visual_extractor
from unimse.features.fer_net import load_fer_model
from unimse.inputs import ModelInput
from unimse.labels import MELD_EMOTIONS

CKPLUS_REAL = SHARED_DATA / "ckplus"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _face(seed: int) -> np.ndarray:
    """A 48x48 grey blob pattern (no real face is needed to test the plumbing)."""
    rng = np.random.default_rng(seed)
    image = np.full((48, 48), 90, dtype=np.uint8)
    cv2.ellipse(image, (24, 26), (16, 20), 0, 0, 360, int(rng.integers(120, 220)), -1)
    cv2.circle(image, (17, 20), 3, 30, -1)
    cv2.circle(image, (31, 20), 3, 30, -1)
    cv2.ellipse(image, (24, 34), (8, int(rng.integers(1, 6))), 0, 0, 180, 40, -1)
    return image


def _write_folder(root: Path, layout: dict[str, list[str]]) -> Path:
    """``root/ckplus/<expression>/<name>`` PNG files; returns ``root``."""
    for i, (expression, names) in enumerate(layout.items()):
        folder = root / "ckplus" / expression
        folder.mkdir(parents=True, exist_ok=True)
        for j, name in enumerate(names):
            assert cv2.imwrite(str(folder / name), _face(100 * i + j))
    return root


SMALL = {
    "happy": ["S010_001_00000012.png", "S010_001_00000013.png", "S011_002_00000009.png"],
    "anger": ["S012_004_00000020.png"],
    "contempt": ["S010_003_00000015.png", "S013_001_00000007.png"],
}


def test_loader_reads_labels_and_skips_contempt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = _write_folder(tmp_path, SMALL)
    with caplog.at_level("INFO", logger="train.face_data"):
        samples = load_ckplus(root)
    assert "skipped 2 contempt" in caplog.text
    assert [s.id for s in samples] == [
        "S010_001_00000012",
        "S010_001_00000013",
        "S011_002_00000009",
        "S012_004_00000020",
    ]
    first = samples[0]
    assert (first.subject, first.expression, first.meld_emotion) == ("S010", "happy", "joy")
    assert first.sequence == "S010_001"
    assert first.image.dtype == np.uint8 and first.image.shape == (48, 48)
    assert samples[-1].meld_emotion == "anger"
    everything = load_ckplus(root / "ckplus", include_contempt=True)  # the folder itself works
    contempt = [s for s in everything if s.expression == "contempt"]
    assert len(everything) == 6 and {s.meld_emotion for s in contempt} == {None}


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"happy": ["S010_001_0012.jpg"]}, "name is not S<subject>_<sequence>_<frame>.png"),
        ({"happy": ["face.png"]}, "name is not"),
        ({"boredom": ["S010_001_00000012.png"]}, "not a CK+ expression folder"),
        (
            {"happy": ["S010_001_00000012.png"], "anger": ["S010_001_00000012.png"]},
            "also under",
        ),
        ({"happy": []}, "no CK+ images"),
    ],
)
def test_loader_rejects_bad_folders(
    tmp_path: Path, layout: dict[str, list[str]], message: str
) -> None:
    root = _write_folder(tmp_path, layout)
    with pytest.raises(DataError, match=message.replace("+", r"\+")) as info:
        load_ckplus(root)
    assert "\n" not in str(info.value)


def test_loader_rejects_an_unreadable_image(tmp_path: Path) -> None:
    folder = tmp_path / "ckplus" / "fear"
    folder.mkdir(parents=True)
    (folder / "S010_001_00000012.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="not a readable 8-bit image"):
        load_ckplus(tmp_path)


def test_missing_folder_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="ckplus folder not found"):
        load_ckplus(tmp_path / "nowhere")
    with pytest.raises(DataError, match="ckplus folder not found"):
        ckplus_folder(tmp_path)  # exists, but holds no expression folders


def _samples(subjects: int, per_subject: int = 2) -> list[FaceSample]:
    return [
        FaceSample(
            id=f"S{s:03d}_001_{k:08d}",
            subject=f"S{s:03d}",
            expression="happy",
            meld_emotion="joy",
            image=np.zeros((48, 48), np.uint8),
        )
        for s in range(1, subjects + 1)
        for k in range(per_subject)
    ]


def test_fixed_splits_are_by_subject_and_roughly_70_15_15() -> None:
    samples = _samples(400)
    parts = {split: select_face_split(samples, split) for split in ("train", "dev", "test")}
    subjects = {split: set(subjects_of(part)) for split, part in parts.items()}
    assert not subjects["train"] & subjects["dev"]
    assert not subjects["train"] & subjects["test"]
    assert not subjects["dev"] & subjects["test"]
    assert sum(len(p) for p in parts.values()) == len(samples)
    assert select_face_split(samples, "all") == samples
    shares = {k: len(v) / 400 for k, v in subjects.items()}
    assert 0.62 < shares["train"] < 0.78 and 0.09 < shares["dev"] < 0.21, shares
    # a subject's split depends on its id only: leaving others out changes nothing
    assert set(subjects_of(select_face_split(samples[:150], "test"))) <= subjects["test"]
    assert {split_of_subject(s) for s in subjects["dev"]} == {"dev"}
    with pytest.raises(DataError, match="unknown split"):
        select_face_split(samples, "valid")


def test_subject_folds_test_every_subject_once_and_never_leak() -> None:
    subjects = subjects_of(_samples(23))
    folds = subject_folds(subjects, k=5)
    tested = [s for fold in folds for s in fold.test]
    assert sorted(tested) == subjects
    for fold in folds:
        assert not fold.train & fold.test and not fold.dev & fold.test and not fold.train & fold.dev
        assert fold.train | fold.dev | fold.test == set(subjects)
        assert fold.dev and len(fold.dev) < len(fold.train)
    assert subject_folds(list(reversed(subjects)), k=5) == folds  # deterministic
    with pytest.raises(ValueError, match="2 <= k"):
        subject_folds(subjects, k=1)


@pytest.fixture(scope="module")
def extractor() -> VisualExtractor:
    return visual_extractor(VISUAL_SPEC)


def test_face_feature_is_one_fer_row_in_meld_order(extractor: VisualExtractor) -> None:
    image = _face(3)
    feature = face_feature(extractor, image)
    assert feature.shape == (1, len(MELD_EMOTIONS)) and feature.dtype == np.float32
    assert feature.sum() == pytest.approx(1.0, abs=1e-5)
    # no detection: exactly the live classifier on the bilinear 64x64 resize
    resized = cv2.resize(image, (64, 64), interpolation=cv2.INTER_LINEAR)
    assert np.allclose(feature, extractor.classify(resized[None]))
    colour = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    assert np.allclose(face_features(extractor, [colour, image]), np.repeat(feature, 2, 0))
    assert face_features(extractor, []).shape == (0, 7)
    assert to_fer_input(resized) is resized
    with pytest.raises(ValueError, match="uint8"):
        to_fer_input(image.astype(np.float32))


def test_finetune_scales_faces_like_the_live_extractor(extractor: VisualExtractor) -> None:
    faces = np.stack([to_fer_input(_face(i)) for i in range(4)])
    assert np.allclose(predict_probs(load_fer_model(), faces), extractor.classify(faces), atol=1e-6)


def test_face_metrics_count_neutral_as_wrong() -> None:
    m = face_metrics(["joy", "joy", "anger", "fear"], ["joy", "neutral", "anger", "sadness"])
    assert m["acc"] == 50.0 and m["uar"] == pytest.approx((50 + 100 + 0) / 3)
    assert m["neutral_rate"] == 25.0 and m["recall_fear"] == 0.0
    assert set(FACE_CLASSES) == set(MELD_EMOTIONS) - {"neutral"}


def test_loss_trains_expressions_and_anchors_neutral() -> None:
    torch.manual_seed(0)
    teacher = torch.randn(6, 7)
    student = teacher.clone().requires_grad_(True)
    targets = torch.tensor([0, 1, 2, 3, 4, -1])
    config = FineTuneConfig()
    finetune_loss(student, teacher, targets, config).backward()
    assert student.grad is not None
    # equal to the teacher: the anchor and the distillation pull nowhere on the neutral logit
    # (the expression cross-entropy does not touch it either)
    assert torch.allclose(student.grad[:, NEUTRAL], torch.zeros(6), atol=1e-6)
    assert student.grad[:5, EXPRESSIONS].abs().sum() > 0
    assert torch.allclose(student.grad[5], torch.zeros(7), atol=1e-6)  # contempt: distilled only
    # a student that drifts towards neutral is pulled back
    drifted = teacher.clone()
    drifted[:, NEUTRAL] += 3.0
    drifted.requires_grad_(True)
    finetune_loss(drifted, teacher, targets, config).backward()
    assert drifted.grad is not None and (drifted.grad[:, NEUTRAL] > 0).all()


def test_finetune_runs_one_step_and_saves_loadable_weights(tmp_path: Path) -> None:
    train = [
        FaceSample(f"S{s:03d}_001_{k:08d}", f"S{s:03d}", e, m, _face(10 * s + k))
        for s, (e, m) in enumerate([("happy", "joy"), ("anger", "anger"), ("contempt", None)])
        for k in range(3)
    ]
    dev = [FaceSample("S100_001_00000001", "S100", "fear", "fear", _face(99))]
    assert targets_of(train).tolist()[-1] == -1
    result = finetune(train, dev, FineTuneConfig(epochs=3, batch_size=4), max_steps=1)
    assert result.steps == 1 and len(result.history) == 2
    assert np.isfinite(result.history[1]["train_loss"]) and 0 <= result.best_epoch <= 1
    path = save_fer_weights(result.model, tmp_path / "fer.safetensors")
    reloaded = visual_extractor(VISUAL_SPEC, weights=path)
    faces = np.stack([to_fer_input(s.image) for s in train])
    assert np.allclose(reloaded.classify(faces), predict_probs(result.model, faces), atol=1e-6)
    with pytest.raises(ValueError, match="share subjects"):
        finetune(train, train[:1], FineTuneConfig(epochs=1))


@pytest.mark.slow
def test_eval_ckplus_cli_on_the_real_folder(capsys: pytest.CaptureFixture[str]) -> None:
    if not CKPLUS_REAL.is_dir():
        pytest.skip(f"CK+ not found at {CKPLUS_REAL.resolve()} (CI has ../shared/data/ckplus)")
    from realtime.cli import main

    argv = ["eval", "--dataset", "ckplus", "--data-dir", str(CKPLUS_REAL), "--split", "test"]
    assert main([*argv, "--checkpoint", "default", "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # the fixed test split: 12 subjects, 120 scored faces (contempt left out)
    assert result["dataset"] == "ckplus" and result["split"] == "test" and result["n"] == 120
    assert result["text_alone_emotion"] == "neutral"
    # the shipped FER network reads these faces far better than chance (1/6), joy perfectly
    assert 55.0 < result["fer_acc"] < 85.0 and result["fer_recall_joy"] > 95.0
    for row in ("fer", "fused", "fused_held"):
        assert 0.0 <= result[f"{row}_uar"] <= 100.0
    # the shipped default's face decides words that say nothing, as live use names the speaker
    assert result["fused_held_acc"] >= 80.0
    code = main(["eval", "--dataset", "ckplus", "--data-dir", str(CKPLUS_REAL / "nope")])
    assert code == 2 and "ckplus folder not found" in capsys.readouterr().err


# --- emotrack-visual-v2 and CK+ as a training dataset --------------------------------------------


def test_v2_extractor_reads_faces_with_the_ckplus_weights(extractor: VisualExtractor) -> None:
    from unimse.config import FeatureSpec
    from unimse.features import VISUAL_SPEC_V2
    from unimse.features.visual import CKPLUS_WEIGHTS

    assert CKPLUS_WEIGHTS.stat().st_size < 1_000_000  # shipped in the package
    v2 = visual_extractor(VISUAL_SPEC_V2)
    faces = np.stack([to_fer_input(_face(i)) for i in range(5)])
    probs = v2.classify(faces)
    assert probs.shape == (5, len(MELD_EMOTIONS)) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert not np.allclose(probs, extractor.classify(faces), atol=1e-3)  # other weights than v1
    # the whole live path (detection, crop) works with v2 as with v1
    frame = cv2.cvtColor(cv2.resize(_face(1), (240, 240)), cv2.COLOR_GRAY2BGR)
    assert v2([frame]) is None or v2([frame]).shape[1] == 7  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="emotrack-visual-v2"):
        visual_extractor(FeatureSpec("emotrack-visual-v3", 7))


def _face_rows(n: int) -> np.ndarray:
    rng = np.random.default_rng(n)
    rows = rng.random((n, len(MELD_EMOTIONS))).astype(np.float32)
    return rows / rows.sum(axis=1, keepdims=True)


def test_face_samples_carry_the_neutral_sentence_and_the_expression_label() -> None:
    from train.acted_labels import ACTED_DERIVED
    from train.face_data import (
        FACE_FRAMES,
        NEUTRAL_TEXT,
        eval_frames,
        face_samples,
        unified_face,
    )

    expressions = [("happy", "joy"), ("contempt", None), ("fear", "fear"), ("surprise", "surprise")]
    faces = [
        FaceSample(f"S010_00{i}_00000012", "S010", e, m, _face(i))
        for i, (e, m) in enumerate(expressions)
    ]
    rows = _face_rows(len(faces))
    train = face_samples(faces, rows, "train")
    assert [s.meld_emotion for s in train] == ["joy", "fear", "surprise"]  # contempt left out
    joy, fear, surprise = train
    assert (
        joy.text == NEUTRAL_TEXT
        and joy.dataset == "ckplus"
        and joy.uid == "ckplus/S010_000_00000012"
    )
    assert (joy.polarity, joy.score, joy.iemocap_emotion) == ("positive", 2.0, "happy")
    assert (fear.polarity, fear.score, fear.iemocap_emotion) == ("negative", -1.6, "frustrated")
    assert (surprise.polarity, surprise.score) == ("positive", 0.8)
    assert joy.visual is not None and np.array_equal(joy.visual, rows[:1])  # one row to train on
    held = face_samples(faces, rows, "dev", held=True)
    assert [s.visual.shape[0] for s in held if s.visual is not None] == [1, 2, 3]
    assert [eval_frames(i) for i in range(13)] == [*range(1, 13), 1]
    assert FACE_FRAMES == (1, 12)
    u = unified_face(fear)
    assert (u.meld_emotion, u.iemocap_emotion, u.score) == ("fear", "frustrated", -1.6)
    assert u.borrowed == ACTED_DERIVED["fear"] == {"score", "iemocap_emotion"}
    assert unified_face(joy).borrowed == {"score"}


def _frames(item: ModelInput) -> int:
    assert item.visual is not None
    return len(item.visual)


def test_augmenter_holds_faces_and_attaches_unrelated_ones_to_emotional_words() -> None:
    from train.augment import EpochAugmenter
    from train.data import Sample
    from train.face_data import face_samples, unified_face
    from train.unification import UnifiedSample

    faces = [FaceSample(f"S010_001_{i:08d}", "S010", "anger", "anger", _face(i)) for i in range(5)]
    rows = _face_rows(5)
    texts = [
        Sample(f"meld/{i}", "meld", "train", "d", "a", f"words {i}", meld_emotion=e, polarity=p)
        for i, (e, p) in enumerate(
            [("joy", "positive"), ("neutral", "neutral"), ("sadness", "negative")] * 20
        )
    ]
    unified = [unified_face(s) for s in face_samples(faces, rows, "train")] + [
        UnifiedSample(s, s.polarity or "", 0.0, s.meld_emotion or "", "neutral", frozenset())
        for s in texts
    ]
    inputs = [u.sample.to_input() for u in unified]
    encoded = [([1], 0, 1) for _ in inputs]
    augmenter = EpochAugmenter.build(
        unified, inputs, encoded, lambda x: ([1], 0, 1), unrelated_face={"meld": 1.0}
    )
    view = augmenter.epoch(seed=3)
    assert view.held_faces == 5 and view.unrelated_faces == 40  # the neutral words get no face
    lengths = []
    for i in range(5):
        visual = view.inputs[i].visual
        assert visual is not None and 1 <= len(visual) <= 12
        assert np.array_equal(visual, np.repeat(rows[i : i + 1], len(visual), 0))
        lengths.append(len(visual))
    for item, sample in zip(view.inputs[5:], texts, strict=True):
        if sample.meld_emotion == "neutral":
            assert item.visual is None
        else:
            assert item.visual is not None and 1 <= len(item.visual) <= 12
            assert any(np.array_equal(item.visual[0], r) for r in rows)  # a real training face
    assert [_frames(x) for x in augmenter.epoch(seed=3).inputs[:5]] == lengths  # seeded
    all_lengths = {_frames(augmenter.epoch(seed=k).inputs[0]) for k in range(30)}
    assert len(all_lengths) > 5 and all_lengths <= set(range(1, 13))  # redrawn every epoch
    assert _frames(augmenter.inputs[0]) == 1  # the fixed samples are not modified
    with pytest.raises(ValueError, match="no CK\\+ training face"):
        EpochAugmenter.build(
            unified[5:], inputs[5:], encoded[5:], lambda x: ([1], 0, 1), unrelated_face={"meld": 1}
        )


def test_face_training_config_validation() -> None:
    from train.config import DataConfig, TrainConfig
    from unimse.config import FeatureSpec, UniMSEConfig

    DataConfig(datasets=("ckplus",))  # faces alone are a valid training set (with a dev split)
    DataConfig(datasets=("meld", "ckplus"), unrelated_face={"meld": 0.5}, dev_datasets=("ckplus",))
    with pytest.raises(ValueError, match="needs a face corpus"):
        DataConfig(datasets=("meld",), unrelated_face={"meld": 0.5})
    with pytest.raises(ValueError, match="text datasets"):
        DataConfig(datasets=("meld", "ckplus"), unrelated_face={"ckplus": 0.5})
    with pytest.raises(ValueError, match="probability"):
        DataConfig(datasets=("meld", "ckplus"), unrelated_face={"meld": 2.0})
    with pytest.raises(ValueError, match="replay_per_dataset"):
        DataConfig(datasets=("meld", "ckplus"), replay_per_dataset={"ckplus": 10})
    with pytest.raises(ValueError, match="neutral_audio"):
        DataConfig(datasets=("emodb", "ckplus"), neutral_audio={"ckplus": 0.5})
    with pytest.raises(ValueError, match="visual feature spec"):
        TrainConfig(model=UniMSEConfig(), data=DataConfig(datasets=("ckplus",)))
    visual = FeatureSpec("emotrack-visual-v2", 7)
    TrainConfig(model=UniMSEConfig(visual=visual), data=DataConfig(datasets=("ckplus",)))


def test_train_face_config_is_the_voice_model_with_the_v2_camera() -> None:
    from train.config import TrainConfig

    repo = Path(__file__).resolve().parents[1]
    face = TrainConfig.load(repo / "configs" / "train_face.toml")
    voice = TrainConfig.load(repo / "configs" / "train_voice.toml")
    assert face.model.visual is not None and face.model.visual.name == "emotrack-visual-v2"
    assert face.model.visual.dim == 7 and face.model.visual.encoder == "lstm"
    from dataclasses import replace

    assert replace(face.model, visual=voice.model.visual) == voice.model
    assert face.train.init_from == "runs/voice_cal" and face.train.init_exclude == ()
    assert face.train.preserve_text and "fusion.acoustic" in face.train.freeze
    assert "ckplus" in face.data.datasets and face.data.dev_datasets == ("ckplus",)
    assert face.train.output == "runs/face"


@pytest.fixture(scope="module")
def _ckplus_data(shared_data: Path) -> Path:
    if not (shared_data / "ckplus").is_dir():
        pytest.skip(f"CK+ not found under {shared_data}")
    return shared_data


def test_trainer_trains_the_camera_on_ckplus_and_keeps_words_and_voice(
    _ckplus_data: Path, tmp_path: Path
) -> None:
    """A tiny random checkpoint with a voice (acoustic branch + modality logits) goes through the
    face stage's recipe for one epoch: CK+ faces + MELD replay with unrelated faces, preserve_text,
    the acoustic encoder and its modality logits frozen. The camera path trains; text-only and
    text + audio outputs do not move."""
    from conftest import tiny_unimse_config
    from safetensors.torch import load_file

    from train.config import TrainConfig
    from train.loop import Trainer
    from unimse.checkpoint import save_checkpoint
    from unimse.factory import build_model
    from unimse.features import ACOUSTIC_SPEC, VISUAL_SPEC_V2
    from unimse.inference import EmotionPredictor
    from unimse.inputs import ModelInput

    torch.manual_seed(3)
    voice = build_model(
        tiny_unimse_config(acoustic=ACOUSTIC_SPEC, visual=VISUAL_SPEC, modality_logits=True)
    )
    with torch.no_grad():  # a voice that already speaks, as after the voice stage
        voice.modality_logits.acoustic.weight.normal_(0.0, 0.5)
    init = save_checkpoint(voice, tmp_path / "voice", half=False)
    model = tiny_unimse_config(acoustic=ACOUSTIC_SPEC, visual=VISUAL_SPEC_V2, modality_logits=True)
    raw = model.to_dict()
    raw["losses"] = {**raw["losses"], "infonce_acoustic": 0.0, "infonce_visual": 0.0}
    config = TrainConfig.from_dict(
        {
            "model": raw,
            "data": {
                "datasets": ["meld", "ckplus"],
                "data_dir": str(_ckplus_data),
                "limit_per_dataset": 24,
                "dev_datasets": ["ckplus"],
                "unrelated_face": {"meld": 1.0},
            },
            "train": {
                "epochs": 1,
                "batch_size": 16,
                "lr_new": 1e-2,
                "lr_backbone": 1e-2,
                "init_from": str(init),
                "freeze": ["fusion.acoustic", "modality_logits.acoustic"],
                "preserve_text": True,
                "threads": 1,
            },
        }
    )
    state = Trainer(config, tmp_path / "run").run()
    dev = state["history"][0]["dev"]
    assert set(dev) == {"ckplus"} and 0.0 <= dev["ckplus"]["acc"] <= 100.0
    assert "neutral_rate" in dev["ckplus"] and (tmp_path / "run" / "best").is_dir()
    before = load_file(str(init / "model.safetensors"))
    after = load_file(str(tmp_path / "run" / "last" / "model.safetensors"))
    width = model.modality_dim
    for name, tensor in before.items():
        if name.startswith(("fusion.acoustic.", "modality_logits.acoustic.")):
            assert torch.equal(after[name], tensor), name  # the voice stays
        if name.endswith((".pmf.down.weight", ".pmf.out.weight")):
            hidden = tensor.shape[1] - 2 * width
            audio = slice(hidden, hidden + width)
            assert torch.equal(after[name][:, audio], tensor[:, audio]), name
            assert torch.equal(after[name][:, :hidden], tensor[:, :hidden]), name
    assert not torch.equal(
        after["modality_logits.visual.weight"], before["modality_logits.visual.weight"]
    )
    assert any(
        not torch.equal(after[k], before[k]) for k in before if k.startswith("fusion.visual.")
    )
    sound = np.random.default_rng(0).normal(size=(30, 64)).astype(np.float32)
    probes = [ModelInput("I am so happy for you", "a"), ModelInput("fine.", "b", acoustic=sound)]
    old = EmotionPredictor.load(init, device="cpu").predict(probes)
    new = EmotionPredictor.load(tmp_path / "run" / "last", device="cpu").predict(probes)
    for a, b in zip(old, new, strict=True):
        assert a.emotion_probs == pytest.approx(b.emotion_probs, abs=1e-6)


def test_a_stage_without_speech_keeps_the_init_checkpoints_voice_prior(tmp_path: Path) -> None:
    """A face stage on top of a voice with a speaker baseline: no speech corpus trains, so no
    prior is computed (it failed with "no utterances to compute a voice baseline prior from")."""
    from train.config import TrainConfig
    from train.loop import Trainer
    from unimse.config import FeatureSpec, UniMSEConfig

    model = UniMSEConfig(
        acoustic=FeatureSpec("whisper-tiny.en-mid-v2", 768, "stats", baseline=5.0),
        visual=FeatureSpec("emotrack-visual-v2", 7),
    )
    config = TrainConfig.from_dict(
        {
            "model": model.to_dict(),
            "data": {"datasets": ["meld", "ckplus"], "data_dir": str(tmp_path)},
            "train": {"threads": 1},
        }
    )
    assert Trainer(config, tmp_path / "run")._voice_prior() is None


def test_the_face_gate_scales_the_face_by_how_neutral_the_words_read() -> None:
    from conftest import tiny_unimse_config
    from factories import heads_output

    from unimse.config import UniMSEConfig
    from unimse.modeling import ModalityLogits

    with pytest.raises(ValueError, match="face_gate must be one of"):
        UniMSEConfig(backbone="minilm", modality_logits=True, face_gate="sometimes")
    with pytest.raises(ValueError, match="face_gate needs modality_logits"):
        UniMSEConfig(backbone="minilm", face_gate="neutral_words")
    with pytest.raises(ValueError, match="face_gate_power needs face_gate"):
        UniMSEConfig(backbone="minilm", modality_logits=True, face_gate_power=2.0)
    torch.manual_seed(5)
    config = tiny_unimse_config(modality_logits=True)
    gated = ModalityLogits(tiny_unimse_config(modality_logits=True, face_gate="neutral_words"))
    plain = ModalityLogits(config)
    with torch.no_grad():
        plain.visual.weight.normal_()
        gated.visual.weight.copy_(plain.visual.weight)
    neutral = config.meld_emotions.index("neutral")
    meld = torch.zeros(3, len(config.meld_emotions))
    meld[0, neutral] = 8.0  # words that read as surely neutral ("A: Okay.")
    meld[1, config.meld_emotions.index("joy")] = 8.0  # words that read as surely joyful
    out = heads_output(meld)
    face = torch.randn(3, config.modality_dim)
    full = plain.face(out, face)
    weighed = gated.face(out, face)
    p_neutral = torch.softmax(meld, -1)[:, neutral : neutral + 1]
    torch.testing.assert_close(weighed, full * p_neutral)
    assert p_neutral[0] > 0.99 and p_neutral[1] < 0.01  # the face decides the first, not the second
    gated.face_power = 2.0  # a sharper gate: the neutral probability squared
    torch.testing.assert_close(gated.face(out, face), full * p_neutral**2)
    # No face: nothing to add, gated or not.
    assert not gated.face(out, torch.zeros(3, config.modality_dim)).any()


@pytest.mark.slow
def test_the_default_face_decides_neutral_words_and_leaves_emotional_ones(
    _ckplus_data: Path,
) -> None:
    from train.face_data import held_face, load_face_dataset
    from unimse.inference import EmotionPredictor
    from unimse.inputs import ModelInput
    from unimse.speakers import FIRST_SPEAKER

    predictor = EmotionPredictor.load("default", device="cpu")
    assert predictor.config.visual is not None
    faces = load_face_dataset("dev", _ckplus_data, predictor.config.visual)
    happy = [
        held_face(s.visual[0], 8) for s in faces if s.meld_emotion == "joy" and s.visual is not None
    ]
    assert happy
    said = {"Okay.": "joy", "I miss her every single day.": "sadness"}
    for text, expected in said.items():
        inputs = [ModelInput(text, speaker=FIRST_SPEAKER, visual=v) for v in happy]
        labels = [p.emotion for p in predictor.predict(inputs)]
        share = labels.count(expected) / len(labels)
        # a smile beside "Okay." is joy; beside sad words the words keep their emotion
        assert share >= 0.9, (text, labels)
