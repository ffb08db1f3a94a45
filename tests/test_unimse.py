"""UniMSE model pieces: PMF, labels, processor, losses, checkpoints, inference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import tiny_unimse_config
from unimse.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from unimse.config import FeatureSpec, UniMSEConfig
from unimse.factory import build_model
from unimse.fusion import PMF
from unimse.inference import EmotionPredictor
from unimse.inputs import DialogueTurn, ModelInput
from unimse.labels import UniversalLabel, emodb_joint_indices, parse_universal_label
from unimse.losses import info_nce, joint_class_cross_entropy, supervised_contrastive
from unimse.modeling import FusedLayer
from unimse.processor import LabelTargets, UniMSEProcessor


def test_pmf_matches_the_paper_equation() -> None:
    cfg = UniMSEConfig(modality_dim=32, pmf_bottleneck=64)
    pmf = PMF(768, cfg)
    for p in pmf.parameters():  # leave the identity start behind
        torch.nn.init.normal_(p, std=0.05)
    h, a, v = torch.randn(2, 5, 768), torch.randn(2, 32), torch.randn(2, 32)
    assert pmf.down.weight.shape == (64, 832) and pmf.up.weight.shape == (832, 64)
    assert pmf.out.weight.shape == (768, 832)
    x = torch.cat([h, a[:, None].expand(-1, 5, -1), v[:, None].expand(-1, 5, -1)], -1)
    expected = pmf.out(x + pmf.up(torch.sigmoid(pmf.down(x))))
    torch.testing.assert_close(pmf(h, a, v), expected)
    assert pmf(h, a, v).shape == (2, 5, 768)


def test_untrained_pmf_passes_text_through() -> None:
    pmf = PMF(16, UniMSEConfig(modality_dim=4, pmf_bottleneck=8))
    h = torch.randn(3, 7, 16)
    torch.testing.assert_close(pmf(h, torch.randn(3, 4), torch.randn(3, 4)), h)


def test_fusion_sits_in_the_last_layers_only(tiny_config: UniMSEConfig) -> None:
    model = build_model(tiny_unimse_config(fusion_layers=1))
    layers = model.backbone.encoder.layer
    assert [isinstance(layer, FusedLayer) for layer in layers] == [False, True]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("positive,1.8,joy,happy", UniversalLabel("positive", 1.8, "joy", "happy")),
        ("negative,-2.4,anger", UniversalLabel("negative", -2.4, "anger", "neutral")),
        ("", UniversalLabel("neutral", 0.0, "neutral", "neutral")),
        (
            "posit, 9.5 ,sadn,frustrat,extra",
            UniversalLabel("positive", 3.0, "sadness", "frustrated"),
        ),
        ("banana,abc,???,", UniversalLabel("neutral", 0.0, "neutral", "neutral")),
        (",-1.0,,", UniversalLabel("negative", -1.0, "neutral", "neutral")),
        (
            "<pad> neutral,0.0,neutral,neutral</s>",
            UniversalLabel("neutral", 0.0, "neutral", "neutral"),
        ),
        ("positive,nan,joy,happy", UniversalLabel("positive", 0.0, "joy", "happy")),
    ],
)
def test_malformed_generations_parse_to_valid_labels(text: str, expected: UniversalLabel) -> None:
    assert parse_universal_label(text) == expected


def test_parse_uses_the_callers_fallback() -> None:
    best = UniversalLabel("negative", -1.5, "sadness", "sad")
    assert parse_universal_label("garbage", fallback=best) == best


def test_config_round_trip_and_validation(tmp_path: Path) -> None:
    cfg = UniMSEConfig(acoustic=FeatureSpec("a", 64), context_turns=3)
    cfg.save(tmp_path / "c.json")
    assert UniMSEConfig.load(tmp_path / "c.json") == cfg
    with pytest.raises(ValueError, match="backbone_type"):
        UniMSEConfig(backbone_type="gpt")
    with pytest.raises(ValueError, match="unknown UniMSE config keys"):
        UniMSEConfig.from_dict({"fusion_layer": 3})
    with pytest.raises(ValueError, match="dimension"):
        FeatureSpec("a", 0)


def test_processor_keeps_current_utterance_and_cuts_oldest_context(
    tiny_config: UniMSEConfig,
) -> None:
    model = build_model(tiny_config)
    from unimse.backbones import load_tokenizer

    proc = UniMSEProcessor(tiny_config, load_tokenizer(tiny_config))
    long_turns = tuple(DialogueTurn("A", f"turn number {i} " + "word " * 20) for i in range(5))
    ids, start, end = proc.format_ids(ModelInput("the current line", "B", long_turns))
    text = proc.tokenizer.decode(ids[start:end])
    assert text == "b : the current line"
    assert len(ids) <= tiny_config.max_length
    decoded = proc.tokenizer.decode(ids)
    assert "turn number 4" in decoded and "turn number 0" not in decoded
    batch = proc.encode(
        [ModelInput("hi"), ModelInput("there", acoustic=np.ones((3, 8), np.float32))]
    )
    assert batch.acoustic is not None and batch.acoustic_lengths is not None
    assert batch.acoustic_lengths.tolist() == [0, 3]
    assert batch.visual_lengths is not None and batch.visual_lengths.tolist() == [0, 0]
    del model


def test_missing_modalities_are_masked_not_required(tiny_config: UniMSEConfig) -> None:
    model = build_model(tiny_config).eval()
    from unimse.backbones import load_tokenizer

    proc = UniMSEProcessor(tiny_config, load_tokenizer(tiny_config))
    with torch.no_grad():
        out = model(proc.encode([ModelInput("no camera, no microphone")]))
    assert out.meld_logits.shape == (1, 7) and out.iemocap_logits.shape == (1, 6)
    assert -3.0 <= float(out.score[0]) <= 3.0


def test_info_nce_prefers_aligned_pairs() -> None:
    x = torch.randn(8, 16)
    present = torch.ones(8, dtype=torch.bool)
    aligned = info_nce(x, x, present, 0.1)
    shuffled = info_nce(x, x.roll(1, 0), present, 0.1)
    assert aligned < shuffled
    assert info_nce(x, x, torch.zeros(8, dtype=torch.bool), 0.1) == 0


def test_supervised_contrastive_rewards_clustered_groups() -> None:
    groups = torch.tensor([0, 0, 1, 1, -1])
    clustered = torch.tensor([[1.0, 0], [1, 0.1], [0, 1], [0.1, 1], [1, 1]])
    mixed = torch.tensor([[1.0, 0], [0, 1], [1, 0.1], [0.1, 1], [1, 1]])
    assert supervised_contrastive(clustered, groups, 0.1) < supervised_contrastive(
        mixed, groups, 0.1
    )


def test_losses_are_reported_and_backpropagate(tiny_config: UniMSEConfig) -> None:
    model = build_model(tiny_config)
    from unimse.backbones import load_tokenizer

    proc = UniMSEProcessor(tiny_config, load_tokenizer(tiny_config))
    inputs = [
        ModelInput(f"line {i}", acoustic=np.random.randn(4, 8).astype(np.float32)) for i in range(4)
    ]
    targets = [LabelTargets(i % 3, 0.5, i % 7, i % 6, group=i % 2) for i in range(4)]
    out = model(proc.encode(inputs, targets))
    assert set(out.losses) == {
        "polarity",
        "score",
        "meld",
        "iemocap",
        "infonce_acoustic",
        "infonce_visual",
        "supcon",
    }
    assert out.loss is not None
    out.loss.backward()
    assert model.fusion.acoustic.lstm.weight_ih_l0.grad is not None


def test_checkpoint_round_trip_gives_identical_predictions(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = build_model(tiny_unimse_config()).eval()
    folder = save_checkpoint(model, tmp_path / "ckpt", half=False, metrics={"dev": {"x": 1.0}})
    assert {p.name for p in folder.iterdir()} >= {
        "model.safetensors",
        "config.json",
        "labels.json",
        "metrics.json",
    }
    before = EmotionPredictor(model, torch.device("cpu"), "a")
    after = EmotionPredictor.load(folder, device="cpu")
    items = [
        ModelInput(
            "I am so happy today!",
            "A",
            (DialogueTurn("B", "How are you?"),),
            acoustic=np.random.randn(5, 8).astype(np.float32),
        ),
        ModelInput("whatever", "B", visual=np.random.randn(2, 6).astype(np.float32)),
    ]
    for p, q in zip(before.predict(items), after.predict(items), strict=True):
        assert p.emotion_probs == pytest.approx(q.emotion_probs, abs=1e-6)
        assert p.intensity == pytest.approx(q.intensity, abs=1e-6)
        assert abs(sum(p.emotion_probs.values()) - 1) < 1e-5
    assert after.predict(items)[0].modalities == ("text", "audio")
    assert after.predict(items)[1].modalities == ("text", "video")


def test_checkpoint_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text(json.dumps({"backbone": "minilm"}))
    with pytest.raises(CheckpointError, match=r"missing model\.safetensors"):
        load_checkpoint(tmp_path / "half")


def test_missing_backbone_names_what_to_do(tmp_path: Path) -> None:
    from unimse.backbones import BackboneNotFoundError

    with pytest.raises(BackboneNotFoundError, match=r"config\.json"):
        build_model(UniMSEConfig(backbone=str(tmp_path)))
    with pytest.raises(BackboneNotFoundError, match="offline"):
        build_model(UniMSEConfig(backbone="nobody/no-such-model-xyz"))


def test_joint_class_loss_scores_each_class_by_both_heads() -> None:
    polarity = torch.randn(3, 3)
    emotion = torch.randn(3, 7)
    target = torch.tensor([1, -1, 6])  # boredom, not EMO-DB, neutral
    indices = emodb_joint_indices()
    loss = joint_class_cross_entropy(polarity, emotion, target, indices)
    pol_idx, emo_idx = (torch.tensor(i) for i in indices)
    rows = torch.tensor([0, 2])
    scores = polarity[rows].log_softmax(-1)[:, pol_idx] + emotion[rows].log_softmax(-1)[:, emo_idx]
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(scores, target[rows]))
    none = joint_class_cross_entropy(polarity, emotion, torch.full((3,), -1), indices)
    assert none.item() == 0.0


def test_emodb_rows_learn_their_class_jointly_instead_of_polarity_and_emotion(
    tiny_config: UniMSEConfig,
) -> None:
    from dataclasses import replace

    from unimse.backbones import load_tokenizer

    config = replace(tiny_config, losses=replace(tiny_config.losses, emodb_joint=1.0))
    model = build_model(config)
    proc = UniMSEProcessor(config, load_tokenizer(config))
    inputs = [ModelInput(f"line {i}") for i in range(4)]
    emodb_only = [LabelTargets(0, -2.0, 3, 3, emodb_class=0) for _ in range(4)]
    out = model(proc.encode(inputs, emodb_only))
    assert out.losses["emodb_joint"] > 0
    assert out.losses["polarity"] == 0 and out.losses["meld"] == 0
    assert out.losses["iemocap"] > 0 and out.losses["score"] > 0
    mixed = [LabelTargets(0, -2.0, 3, 3, emodb_class=0), LabelTargets(1, 0.0, 0, 2)]
    out = model(proc.encode(inputs[:2], mixed))
    assert out.losses["polarity"] > 0 and out.losses["emodb_joint"] > 0
    off = build_model(tiny_config)(proc.encode(inputs, emodb_only))
    assert "emodb_joint" not in off.losses and off.losses["polarity"] > 0
