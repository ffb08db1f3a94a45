"""Neutral-voice consistency (train.consistency): a neutral voice beside words learns to leave the
words' label alone, and the Trainer applies it only to the rows that got a neutral clip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_unimse_config

from train.config import TrainConfig
from train.consistency import consistency_loss, teacher_output, text_only
from train.staged import preserve_text_path
from unimse.factory import build_model
from unimse.inputs import ModelInput
from unimse.modeling import UniMSEOutput
from unimse.processor import LabelTargets, UniMSEProcessor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _output(seed: int, rows: int = 4) -> UniMSEOutput:
    g = torch.Generator().manual_seed(seed)
    return UniMSEOutput(
        torch.randn(rows, 3, generator=g),
        torch.randn(rows, 7, generator=g),
        torch.randn(rows, 6, generator=g),
        torch.randn(rows, generator=g),
    )


def test_loss_is_zero_for_equal_outputs_and_reads_only_the_paired_rows() -> None:
    a, b = _output(0), _output(1)
    every = torch.ones(4, dtype=torch.bool)
    assert float(consistency_loss(a, a, every)) == pytest.approx(0.0, abs=1e-6)
    assert float(consistency_loss(a, b, every)) > 0.1
    assert float(consistency_loss(a, b, torch.zeros(4, dtype=torch.bool))) == 0.0
    first = torch.tensor([True, False, False, False])
    mixed = UniMSEOutput(
        torch.cat([a.polarity_logits[:1], b.polarity_logits[1:]]),
        torch.cat([a.meld_logits[:1], b.meld_logits[1:]]),
        torch.cat([a.iemocap_logits[:1], b.iemocap_logits[1:]]),
        torch.cat([a.score[:1], b.score[1:]]),
    )
    assert float(consistency_loss(mixed, a, first)) == pytest.approx(0.0, abs=1e-6)


def _setup() -> tuple[torch.nn.Module, UniMSEProcessor, list[ModelInput]]:
    from unimse.backbones import load_tokenizer

    torch.manual_seed(5)
    config = tiny_unimse_config(visual=None)
    model = build_model(config)
    processor = UniMSEProcessor(config, load_tokenizer(config))
    voice = np.random.default_rng(0).standard_normal((30, 8)).astype(np.float32)
    texts = ["I love it", "this is awful", "what now?", "fine"]
    return model, processor, [ModelInput(t, "a", acoustic=voice) for t in texts]


def test_teacher_is_the_eval_mode_text_only_output_and_keeps_the_mode() -> None:
    model, processor, inputs = _setup()
    batch = processor.encode(inputs)
    assert batch.acoustic_lengths is not None and int(batch.acoustic_lengths.min()) > 0
    assert int(text_only(batch).acoustic_lengths.sum()) == 0  # type: ignore[union-attr]
    model.train()
    teacher = teacher_output(model, batch)
    assert model.training
    model.eval()
    with torch.no_grad():
        plain = model(processor.encode([ModelInput(x.text, x.speaker) for x in inputs]))
    assert torch.allclose(teacher.meld_logits, plain.meld_logits, atol=1e-6)


def test_training_on_the_loss_makes_a_neutral_voice_leave_the_words_alone() -> None:
    model, processor, inputs = _setup()
    trainable = preserve_text_path(model)
    params = [p for p in model.parameters() if p.requires_grad]
    with torch.no_grad():  # a voice that starts out moving the label
        for p in params:
            if all(p is not q for q in trainable):
                p.add_(0.5 * torch.randn_like(p))
        for w in trainable:
            w[:, -16:].normal_(0.0, 0.5)
    targets = [LabelTargets(polarity=1, score=0.0, meld=0, iemocap=2) for _ in inputs]
    batch = processor.encode(inputs, targets)
    every = torch.ones(len(inputs), dtype=torch.bool)

    def gap() -> float:
        model.eval()
        with torch.no_grad():
            return float(consistency_loss(model(batch), teacher_output(model, batch), every))

    before = gap()
    opt = torch.optim.Adam(params, lr=1e-2)
    model.train()
    for _ in range(40):
        loss = consistency_loss(model(batch), teacher_output(model, batch), every)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert before > 0.05 and gap() < 0.2 * before


def test_config_needs_neutral_audio_and_a_non_negative_weight() -> None:
    base = {"data": {"datasets": ["meld"]}, "train": {"voice_consistency": 1.0}}
    with pytest.raises(ValueError, match="neutral_audio"):
        TrainConfig.from_dict(base)
    with pytest.raises(ValueError, match="voice_consistency"):
        TrainConfig.from_dict({"train": {"voice_consistency": -1.0}})
