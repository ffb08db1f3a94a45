"""Training objectives beyond the task losses: inter-modality and inter-sample contrast."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(
    anchor: torch.Tensor, positive: torch.Tensor, present: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Symmetric InfoNCE between paired rows, in-batch negatives, over rows where ``present``.

    Returns 0 (with a graph) when fewer than two pairs are present: no negatives exist then.
    """
    idx = present.nonzero(as_tuple=True)[0]
    if idx.numel() < 2:
        return anchor.sum() * 0.0
    a = F.normalize(anchor[idx].float(), dim=-1)
    p = F.normalize(positive[idx].float(), dim=-1)
    logits = a @ p.t() / temperature
    target = torch.arange(idx.numel(), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def supervised_contrastive(
    features: torch.Tensor, groups: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020) over rows with ``groups >= 0``.

    Rows sharing a group are positives; rows with no positive in the batch are ignored.
    """
    valid = groups >= 0
    z = F.normalize(features[valid].float(), dim=-1)
    g = groups[valid]
    n = z.shape[0]
    if n < 2:
        return features.sum() * 0.0
    sim = z @ z.t() / temperature
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    positives = (g.unsqueeze(0) == g.unsqueeze(1)) & ~eye
    counts = positives.sum(1)
    has = counts > 0
    if not has.any():
        return features.sum() * 0.0
    mean_log_prob = log_prob.masked_fill(~positives, 0.0).sum(1)[has] / counts[has]
    return -mean_log_prob.mean()


def weighted_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """Mean CE over the batch weighted per sample; 0 when every weight is 0."""
    total = weight.sum()
    if total <= 0:
        return logits.sum() * 0.0
    losses = F.cross_entropy(logits.float(), target, reduction="none")
    return (losses * weight).sum() / total


def joint_class_scores(
    polarity_logits: torch.Tensor,
    emotion_logits: torch.Tensor,
    indices: tuple[tuple[int, ...], tuple[int, ...]],
) -> torch.Tensor:
    """(B, classes): each class's log p(polarity) + log p(emotion) (``indices``: each class's
    polarity and emotion index)."""
    polarity, emotion = (torch.tensor(i, device=polarity_logits.device) for i in indices)
    return (
        F.log_softmax(polarity_logits.float(), dim=-1)[:, polarity]
        + F.log_softmax(emotion_logits.float(), dim=-1)[:, emotion]
    )


def joint_class_cross_entropy(
    polarity_logits: torch.Tensor,
    emotion_logits: torch.Tensor,
    target: torch.Tensor,
    indices: tuple[tuple[int, ...], tuple[int, ...]],
) -> torch.Tensor:
    """Mean CE of :func:`joint_class_scores` over the rows with ``target >= 0``; 0 (with a graph)
    when no row has a class."""
    rows = (target >= 0).nonzero(as_tuple=True)[0]
    if rows.numel() == 0:
        return polarity_logits.sum() * 0.0
    scores = joint_class_scores(polarity_logits[rows], emotion_logits[rows], indices)
    return F.cross_entropy(scores, target[rows])


def weighted_l1(
    prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    total = weight.sum()
    if total <= 0:
        return prediction.sum() * 0.0
    return ((prediction.float() - target).abs() * weight).sum() / total


def voice_gate_cross_entropy(
    gate_logits: torch.Tensor, target: torch.Tensor | None, lengths: torch.Tensor | None
) -> torch.Tensor:
    """Binary cross-entropy of the voice gate's logits against ``target`` (1 emotional, 0 neutral,
    < 0 unknown) over the samples with a voice (``lengths`` > 0) and a target; 0 (with a graph)
    when there is none."""
    if target is None or lengths is None:
        return gate_logits.sum() * 0.0
    target = target.to(gate_logits.device)
    rows = (target >= 0) & (lengths.to(gate_logits.device) > 0)
    if not rows.any():
        return gate_logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(gate_logits[rows].float(), target[rows])
