"""Modality encoders and Pre-trained Modality Fusion (PMF), shared by every backbone."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from unimse.config import PMF_SLOTS, FeatureSpec, UniMSEConfig


class ModalityEncoder(nn.Module):
    """Feature sequence -> 1-layer LSTM -> dropout -> linear.

    Returns the utterance vector (from the last valid step) and the per-step outputs.
    """

    def __init__(self, spec: FeatureSpec, config: UniMSEConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(spec.dim)
        self.lstm = nn.LSTM(spec.dim, config.lstm_hidden, num_layers=1, batch_first=True)
        self.dropout = nn.Dropout(config.dropout)
        self.proj = nn.Linear(config.lstm_hidden, config.modality_dim)

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, T, F), lengths (B,) with 0 for a missing modality -> (B, D), (B, T, D)."""
        x = self.norm(features)
        packed = nn.utils.rnn.pack_padded_sequence(
            x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        out, (h_n, _) = self.lstm(packed)
        steps, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        vector = self.proj(self.dropout(h_n[-1]))
        per_step = self.proj(self.dropout(steps))
        present = (lengths > 0).to(vector.dtype).unsqueeze(-1)
        return vector * present, per_step * present.unsqueeze(-1)

    def gated(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """:meth:`forward` and no gate (the interface of :meth:`StatsEncoder.gated`)."""
        vector, per_step = self(features, lengths)
        return vector, per_step, None


class StatsEncoder(nn.Module):
    """Feature sequence -> mean and standard deviation over the valid frames -> batch
    normalisation -> dropout -> linear.

    Made for pretrained speech states (Whisper encoder output): statistics pooling over the frames
    that hold the utterance, standardised with statistics learnt on the training set (so one loud
    state dimension cannot dominate). Same interface as :class:`ModalityEncoder`.

    With ``spec.gate`` the vector is multiplied by ``sigmoid(gate(x))``, a linear read of the same
    normalised statistics: a voice read as neutral gives a vector near zero, which is what a
    missing voice gives (the text-only output). :meth:`gated` also returns the gate's logits.
    """

    def __init__(self, spec: FeatureSpec, config: UniMSEConfig) -> None:
        super().__init__()
        self.dim = spec.dim
        self.baseline_weight = spec.baseline
        if spec.baseline:  # the speaker-baseline prior, set from the training speech
            self.register_buffer("baseline_prior", torch.zeros(spec.dim))
        self.norm = nn.BatchNorm1d(2 * spec.dim)
        self.dropout = nn.Dropout(config.stats_dropout)
        self.proj = nn.Linear(2 * spec.dim, config.modality_dim)
        self.gate = nn.Linear(2 * spec.dim, 1) if spec.gate else None

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, T, F), lengths (B,) with 0 for a missing modality -> (B, D), (B, T, D)."""
        vector, per_step, _ = self.gated(features, lengths)
        return vector, per_step

    def gated(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """:meth:`forward` plus the gate's logits (B,) (0 for a missing modality; None without
        a gate)."""
        lengths = lengths.to(features.device)
        steps = torch.arange(features.shape[1], device=features.device)
        mask = (steps.unsqueeze(0) < lengths.unsqueeze(1)).to(features.dtype).unsqueeze(-1)
        count = mask.sum(1).clamp(min=1.0)
        mean = (features * mask).sum(1) / count
        var = ((features - mean.unsqueeze(1)) ** 2 * mask).sum(1) / count
        pooled = torch.cat([mean, var.clamp(min=1e-8).sqrt()], dim=-1)
        present = lengths > 0
        rows = present.nonzero().squeeze(1)
        vector = features.new_zeros(features.shape[0], self.proj.out_features)
        gate_logits = None if self.gate is None else features.new_zeros(features.shape[0])
        if len(rows):
            dropped = self.dropout(self._normalise(pooled[rows]))
            projected = self.proj(dropped)
            if self.gate is not None and gate_logits is not None:
                logits = self.gate(dropped).squeeze(-1)
                gate_logits = gate_logits.index_copy(0, rows, logits.to(gate_logits.dtype))
                projected = projected * torch.sigmoid(logits).unsqueeze(-1)
            vector = vector.index_copy(0, rows, projected.to(vector.dtype))
        # Statistics pooling has no per-frame output: each valid step carries the utterance vector.
        return vector, vector.unsqueeze(1) * mask, gate_logits

    def _normalise(self, pooled: torch.Tensor) -> torch.Tensor:
        """Batch norm over the utterances that have this modality (absent ones would skew the
        statistics); a training batch with a single such utterance uses the running statistics."""
        if self.training and len(pooled) < 2:
            norm = self.norm
            return F.batch_norm(
                pooled, norm.running_mean, norm.running_var, norm.weight, norm.bias, eps=norm.eps
            )
        return self.norm(pooled)


def feature_encoder(spec: FeatureSpec, config: UniMSEConfig) -> ModalityEncoder | StatsEncoder:
    """The encoder ``spec.encoder`` names."""
    if spec.encoder == "stats":
        return StatsEncoder(spec, config)
    return ModalityEncoder(spec, config)


class PMF(nn.Module):
    """Pre-trained Modality Fusion placed after a block's feed-forward sublayer.

    X = [h; a; v] (a, v broadcast over tokens), Y = W_o(X + W_up sigmoid(W_down X)).
    W_o starts as [I 0] and W_up at zero, so an untrained PMF passes h through unchanged and the
    pretrained backbone's behaviour is kept at the start of training.
    """

    def __init__(self, hidden_size: int, config: UniMSEConfig) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.modality_dim = config.modality_dim
        width = hidden_size + 2 * config.modality_dim
        self.down = nn.Linear(width, config.pmf_bottleneck)
        self.up = nn.Linear(config.pmf_bottleneck, width)
        self.out = nn.Linear(width, hidden_size)
        with torch.no_grad():
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)
            self.out.weight.zero_()
            self.out.weight[:, :hidden_size].copy_(torch.eye(hidden_size))
            self.out.bias.zero_()

    def columns(self, modality: str) -> slice:
        """The input columns of ``W_down`` / ``W_o`` that read ``modality``'s vector."""
        if modality not in PMF_SLOTS:
            raise ValueError(f"PMF has no {modality!r} slot; choose from {PMF_SLOTS}")
        start = self.hidden_size + self.modality_dim * PMF_SLOTS.index(modality)
        return slice(start, start + self.modality_dim)

    def forward(
        self, hidden: torch.Tensor, acoustic: torch.Tensor, visual: torch.Tensor
    ) -> torch.Tensor:
        """hidden (B, L, H), acoustic and visual (B, D) -> (B, L, H)."""
        length = hidden.shape[1]
        x = torch.cat(
            [
                hidden,
                acoustic.to(hidden.dtype).unsqueeze(1).expand(-1, length, -1),
                visual.to(hidden.dtype).unsqueeze(1).expand(-1, length, -1),
            ],
            dim=-1,
        )
        return self.out(x + self.up(torch.sigmoid(self.down(x))))


class ModalityVectors(NamedTuple):
    """The utterance vectors a, v PMF reads (zeros for a missing modality) and the voice gate's
    logits (None without a gate)."""

    acoustic: torch.Tensor
    visual: torch.Tensor
    voice_gate: torch.Tensor | None = None


class ModalityFusion(nn.Module):
    """Owns the acoustic/visual encoders; turns raw feature batches into the a, v vectors."""

    def __init__(self, config: UniMSEConfig) -> None:
        super().__init__()
        self.modality_dim = config.modality_dim
        self.acoustic = feature_encoder(config.acoustic, config) if config.acoustic else None
        self.visual = feature_encoder(config.visual, config) if config.visual else None

    def encode(
        self,
        batch_size: int,
        device: torch.device,
        acoustic: torch.Tensor | None,
        acoustic_lengths: torch.Tensor | None,
        visual: torch.Tensor | None,
        visual_lengths: torch.Tensor | None,
    ) -> ModalityVectors:
        zeros = torch.zeros(batch_size, self.modality_dim, device=device)
        a = v = zeros
        gate = None
        if self.acoustic is not None and acoustic is not None and acoustic_lengths is not None:
            a, _, gate = self.acoustic.gated(acoustic, acoustic_lengths)
        if self.visual is not None and visual is not None and visual_lengths is not None:
            v, _ = self.visual(visual, visual_lengths)
        return ModalityVectors(a, v, gate)


def voice_prior(model: nn.Module) -> torch.Tensor | None:
    """The speaker-baseline prior buffer of ``model``'s acoustic encoder (None without one)."""
    fusion = getattr(model, "fusion", None)
    encoder = fusion.acoustic if isinstance(fusion, ModalityFusion) else None
    prior = getattr(encoder, "baseline_prior", None)
    return prior if isinstance(prior, torch.Tensor) else None
