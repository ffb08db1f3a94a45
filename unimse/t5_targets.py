"""Training targets of the T5 decoder: the universal label as token ids, a loss weight per token."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from unimse.config import UniMSEConfig
from unimse.labels import SCORE_RANGE, UniversalLabel
from unimse.processor import ModelBatch
from unimse.t5_backbone import token_ids

IGNORE_INDEX = -100


class LabelTokenTargets:
    """Writes each sample's universal label + end of sequence as decoder labels and inputs."""

    def __init__(
        self, config: UniMSEConfig, tokenizer: Any, pad_id: int, eos_id: int, start_id: int
    ) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.pad_id = pad_id
        self.eos_id = eos_id
        self.start_id = start_id

    def texts(self, batch: ModelBatch) -> list[str]:
        """The universal label of every sample in a batch with targets."""
        assert batch.polarity is not None and batch.score is not None
        assert batch.meld is not None and batch.iemocap is not None
        cfg = self.config
        texts = []
        for pol, score, meld, iemocap in zip(
            batch.polarity.tolist(),
            batch.score.tolist(),
            batch.meld.tolist(),
            batch.iemocap.tolist(),
            strict=True,
        ):
            value = min(max(round(float(score), 1), SCORE_RANGE[0]), SCORE_RANGE[1])
            value += 0.0  # -0.0 -> 0.0, so a tiny negative score is written "0.0"
            label = UniversalLabel(
                cfg.polarities[pol], value, cfg.meld_emotions[meld], cfg.iemocap_emotions[iemocap]
            )
            texts.append(label.to_text())
        return texts

    def token_weights(
        self, text: str, field_weights: Sequence[float]
    ) -> tuple[list[int], list[float]]:
        """Token ids of one label (+ end of sequence) and a loss weight per token.

        A token takes the weight of the field it spells (0 where the sample has no label for that
        field); commas and the end-of-sequence token, which carry the format, weigh 1.
        """
        try:
            enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            ids = list(enc["input_ids"])
            offsets = list(enc["offset_mapping"])
        except (NotImplementedError, ValueError, TypeError, KeyError):  # a slow tokenizer
            ids = token_ids(self.tokenizer, text)
            return [*ids, self.eos_id], [1.0] * (len(ids) + 1)
        weights = []
        for start, end in offsets:
            piece = text[start:end]
            if piece.strip() == ",":
                weights.append(1.0)
            else:
                weights.append(float(field_weights[min(text[:start].count(","), 3)]))
        keep = self.config.max_label_length - 1
        return [*ids[:keep], self.eos_id], [*weights[:keep], 1.0]

    def __call__(self, batch: ModelBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels (B, L) padded with IGNORE_INDEX and per-token weights (B, L)."""
        assert batch.weights is not None
        rows = [
            self.token_weights(text, w)
            for text, w in zip(self.texts(batch), batch.weights.tolist(), strict=True)
        ]
        width = max(len(ids) for ids, _ in rows)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        weights = torch.zeros((len(rows), width), dtype=torch.float32)
        for i, (ids, w) in enumerate(rows):
            labels[i, : len(ids)] = torch.tensor(ids)
            weights[i, : len(w)] = torch.tensor(w)
        device = batch.input_ids.device
        return labels.to(device), weights.to(device)

    def shift_right(self, labels: torch.Tensor) -> torch.Tensor:
        """Decoder inputs for teacher forcing: the start token, then the labels but the last."""
        start = torch.full_like(labels[:, :1], self.start_id)
        shifted = torch.cat([start, labels[:, :-1]], dim=1)
        return shifted.masked_fill(shifted == IGNORE_INDEX, self.pad_id)
