"""Neutral-voice consistency: words heard in a voice without emotion must keep their label.

The text samples paired with a neutral clip (``[data] neutral_audio``) are scored twice more, both
in eval mode (no dropout, so the two differ only by the voice): with the clip (the student, with
gradients) and with the audio masked (the teacher, without: the text-only output, which
``preserve_text`` keeps fixed). The loss is the KL divergence from the teacher's to the student's
distribution for polarity and both emotion sets plus the L1 distance of the intensities, averaged
over those rows, so the acoustic branch learns to move the label only when the voice carries
emotion, not merely because a voice is there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from unimse.modeling import UniMSEOutput
from unimse.processor import ModelBatch


def inputs_of(batch: ModelBatch, rows: torch.Tensor) -> ModelBatch:
    """The ``rows`` (bool mask) of ``batch``, without targets (the model returns no loss)."""

    def pick(value: torch.Tensor | None) -> torch.Tensor | None:
        return None if value is None else value[rows]

    return ModelBatch(
        input_ids=batch.input_ids[rows],
        attention_mask=batch.attention_mask[rows],
        utterance_mask=batch.utterance_mask[rows],
        acoustic=pick(batch.acoustic),
        acoustic_lengths=pick(batch.acoustic_lengths),
        visual=pick(batch.visual),
        visual_lengths=pick(batch.visual_lengths),
        words=pick(batch.words),
        language=pick(batch.language),
    )


def text_only(batch: ModelBatch) -> ModelBatch:
    """``batch`` with its audio masked (lengths 0: the acoustic vector is zero)."""
    if batch.acoustic_lengths is None:
        return batch
    return replace(batch, acoustic_lengths=torch.zeros_like(batch.acoustic_lengths))


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block, its mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def consistency_loss(student: UniMSEOutput, teacher: UniMSEOutput) -> torch.Tensor:
    """Mean over the rows of KL(teacher || student) over the three label heads plus the
    intensity's L1 distance."""
    total = F.l1_loss(student.score.float(), teacher.score.float())
    for name in ("polarity_logits", "meld_logits", "iemocap_logits"):
        total = total + F.kl_div(
            F.log_softmax(getattr(student, name).float(), dim=-1),
            F.log_softmax(getattr(teacher, name).float(), dim=-1),
            log_target=True,
            reduction="batchmean",
        )
    return total


def voice_consistency(model: nn.Module, batch: ModelBatch, rows: torch.Tensor) -> torch.Tensor:
    """The consistency loss of ``model`` on the ``rows`` of ``batch`` that carry a neutral voice
    (zero without such rows)."""
    if not bool(rows.any()):
        return batch.input_ids.new_zeros((), dtype=torch.float32)
    voiced = inputs_of(batch, rows)
    with eval_mode(model):
        with torch.no_grad():
            teacher = model(text_only(voiced))
        student = model(voiced)
    return consistency_loss(student, teacher)
