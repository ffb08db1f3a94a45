"""Neutral-voice consistency: words heard in a voice without emotion must keep their label.

A text sample paired with a neutral clip (``[data] neutral_audio``) is scored twice: by the model
in training with the clip (the student) and, without gradients, by the same model in eval mode
with the audio masked (the teacher: the text-only output, which ``preserve_text`` keeps fixed).
The loss is the KL divergence from the teacher's to the student's distribution for polarity and
both emotion sets plus the L1 distance of the intensities, averaged over the paired rows, so the
acoustic branch learns to move the label only when the voice carries emotion, not merely because
a voice is there.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from unimse.modeling import UniMSEOutput
from unimse.processor import ModelBatch


def text_only(batch: ModelBatch) -> ModelBatch:
    """``batch`` with its audio masked (lengths 0: the acoustic vector is zero)."""
    if batch.acoustic_lengths is None:
        return batch
    return replace(batch, acoustic_lengths=torch.zeros_like(batch.acoustic_lengths))


def teacher_output(model: nn.Module, batch: ModelBatch) -> UniMSEOutput:
    """The eval-mode, text-only output of ``model`` for ``batch`` (no targets, no gradients)."""
    bare = replace(
        text_only(batch),
        polarity=None,
        score=None,
        meld=None,
        iemocap=None,
        weights=None,
        group=None,
    )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out: UniMSEOutput = model(bare)
    finally:
        model.train(was_training)
    return out


def consistency_loss(
    student: UniMSEOutput, teacher: UniMSEOutput, rows: torch.Tensor
) -> torch.Tensor:
    """Mean over ``rows`` (bool mask) of KL(teacher || student) over the three label heads plus
    the intensity's L1 distance."""
    if not bool(rows.any()):
        return student.score.new_zeros(())
    total = student.score.new_zeros(())
    for name in ("polarity_logits", "meld_logits", "iemocap_logits"):
        s = getattr(student, name)[rows].float()
        t = getattr(teacher, name)[rows].float()
        total = total + F.kl_div(
            F.log_softmax(s, dim=-1),
            F.log_softmax(t, dim=-1),
            log_target=True,
            reduction="batchmean",
        )
    return total + F.l1_loss(student.score[rows].float(), teacher.score[rows].float())
