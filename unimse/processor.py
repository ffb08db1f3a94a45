"""Utterance + past turns + optional feature sequences -> model tensors.

One processor serves training and live inference, so the text format cannot drift between them.
Text layout (design.md, past turns only): ``[prefix] spk: past ... [SEP] spk: current [SEP]`` where
``[SEP]`` is the tokenizer's separator (``</s>`` for T5). Context is cut from the oldest side when
the sequence is too long; the current utterance is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from unimse.config import FeatureSpec, UniMSEConfig
from unimse.inputs import ModelInput

T5_PREFIX = "sst2 sentence: "


@dataclass(frozen=True)
class LabelTargets:
    """Training targets of one sample, with a weight per field (0 = no label for that field)."""

    polarity: int
    score: float
    meld: int
    iemocap: int
    polarity_weight: float = 1.0
    score_weight: float = 1.0
    meld_weight: float = 1.0
    iemocap_weight: float = 1.0
    group: int = -1  # class id for the inter-sample contrastive loss (-1: no positives)
    emodb_class: int = -1  # EMO-DB class index for the joint class loss (-1: not EMO-DB)
    voice_emotional: float = -1.0  # voice gate target: 1 emotional, 0 neutral, -1 unknown


@dataclass
class ModelBatch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    utterance_mask: torch.Tensor  # 1 on the current utterance's tokens
    acoustic: torch.Tensor | None = None
    acoustic_lengths: torch.Tensor | None = None
    visual: torch.Tensor | None = None
    visual_lengths: torch.Tensor | None = None
    words: torch.Tensor | None = None  # (B,) 1.0 where ModelInput.has_words
    # (B,) 1 + the index of ModelInput.language in config.voice_languages, 0 where not listed
    language: torch.Tensor | None = None
    # (B, 2) ModelInput.voice_history's total and count (with config.voice_trust)
    voice_history: torch.Tensor | None = None
    # Targets (training only)
    polarity: torch.Tensor | None = None
    score: torch.Tensor | None = None
    meld: torch.Tensor | None = None
    iemocap: torch.Tensor | None = None
    weights: torch.Tensor | None = None  # (B, 4): polarity, score, meld, iemocap
    group: torch.Tensor | None = None
    emodb_class: torch.Tensor | None = None
    voice_emotional: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])

    def to(self, device: torch.device | str) -> ModelBatch:
        moved = {
            f.name: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
            for f in fields(self)
            for v in [getattr(self, f.name)]
        }
        return ModelBatch(**moved)


def _pad_features(
    arrays: Sequence[np.ndarray | None], spec: FeatureSpec, max_steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = [0 if a is None else min(len(a), max_steps) for a in arrays]
    steps = max(1, max(lengths))
    out = np.zeros((len(arrays), steps, spec.dim), dtype=np.float32)
    for i, (array, n) in enumerate(zip(arrays, lengths, strict=True)):
        if array is None or n == 0:
            continue
        if array.ndim != 2 or array.shape[1] != spec.dim:
            raise ValueError(
                f"{spec.name} features must have shape (steps, {spec.dim}), got {array.shape}"
            )
        if len(array) > max_steps:  # evenly subsample long sequences
            idx = np.linspace(0, len(array) - 1, max_steps).round().astype(int)
            array = array[idx]
        out[i, :n] = array[:n]
    return torch.from_numpy(out), torch.tensor(lengths, dtype=torch.long)


class UniMSEProcessor:
    def __init__(
        self, config: UniMSEConfig, tokenizer: object, max_feature_steps: int = 256
    ) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.max_feature_steps = max_feature_steps
        tok = tokenizer
        self.cls_id: int | None = getattr(tok, "cls_token_id", None)
        sep = getattr(tok, "sep_token_id", None)
        self.sep_id: int = sep if sep is not None else tok.eos_token_id  # type: ignore[attr-defined]
        self.pad_id: int = tok.pad_token_id  # type: ignore[attr-defined]
        self.prefix = T5_PREFIX if config.backbone_type == "t5" else ""

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])  # type: ignore[operator]

    def format_ids(self, item: ModelInput) -> tuple[list[int], int, int]:
        """Token ids for one input, and the [start, end) span of the current utterance."""
        turns = item.context[-self.config.context_turns :] if self.config.context_turns else ()
        current = self._ids(f"{item.speaker}: {item.text}" if item.speaker else item.text)
        head = [self.cls_id] if self.cls_id is not None else []
        if self.prefix:
            head += self._ids(self.prefix)
        budget = self.config.max_length - len(head) - 2
        current = current[: max(budget, 1)]
        context: list[int] = []
        for turn in reversed(turns):  # newest first, so the oldest is what gets cut
            piece = self._ids(f"{turn.speaker}: {turn.text}" if turn.speaker else turn.text)
            if len(context) + len(piece) > budget - len(current):
                break
            context = piece + context
        ids = head + context + [self.sep_id]
        start = len(ids)
        ids += [*current, self.sep_id]
        return ids, start, start + len(current)

    def encode_voice(
        self, inputs: Sequence[ModelInput]
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """What the voice path reads of ``inputs``, without tokenising their words: the padded
        acoustic features and their lengths (None for a checkpoint without a voice) and each
        input's voice map (1 + the index of its language in ``config.voice_languages``, 0 where
        not listed; None without language maps)."""
        language = None
        if self.config.voice_languages:
            listed = self.config.voice_languages
            language = torch.tensor(
                [1 + listed.index(x.language) if x.language in listed else 0 for x in inputs]
            )
        if self.config.acoustic is None:
            return None, None, language
        acoustic, lengths = _pad_features(
            [x.acoustic for x in inputs], self.config.acoustic, self.max_feature_steps
        )
        return acoustic, lengths, language

    def encode(
        self, inputs: Sequence[ModelInput], targets: Sequence[LabelTargets] | None = None
    ) -> ModelBatch:
        if not inputs:
            raise ValueError("encode() needs at least one input")
        return self.collate([self.format_ids(item) for item in inputs], inputs, targets)

    def collate(
        self,
        encoded: Sequence[tuple[list[int], int, int]],
        inputs: Sequence[ModelInput],
        targets: Sequence[LabelTargets] | None = None,
    ) -> ModelBatch:
        """Pad pre-tokenised inputs (from :meth:`format_ids`) into one batch."""
        width = max(len(ids) for ids, _, _ in encoded)
        input_ids = torch.full((len(encoded), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(encoded), width), dtype=torch.long)
        utterance = torch.zeros((len(encoded), width), dtype=torch.float32)
        for i, (ids, start, end) in enumerate(encoded):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention[i, : len(ids)] = 1
            utterance[i, start:end] = 1.0
        batch = ModelBatch(
            input_ids=input_ids,
            attention_mask=attention,
            utterance_mask=utterance,
            words=torch.tensor([float(x.has_words) for x in inputs]),
        )
        batch.acoustic, batch.acoustic_lengths, batch.language = self.encode_voice(inputs)
        if self.config.voice_trust:
            batch.voice_history = torch.tensor(
                [[x.voice_history.total, float(x.voice_history.count)] for x in inputs]
            )
        if self.config.visual is not None:
            batch.visual, batch.visual_lengths = _pad_features(
                [x.visual for x in inputs], self.config.visual, self.max_feature_steps
            )
        if targets is not None:
            batch.polarity = torch.tensor([t.polarity for t in targets], dtype=torch.long)
            batch.score = torch.tensor([t.score for t in targets], dtype=torch.float32)
            batch.meld = torch.tensor([t.meld for t in targets], dtype=torch.long)
            batch.iemocap = torch.tensor([t.iemocap for t in targets], dtype=torch.long)
            batch.weights = torch.tensor(
                [
                    [t.polarity_weight, t.score_weight, t.meld_weight, t.iemocap_weight]
                    for t in targets
                ],
                dtype=torch.float32,
            )
            batch.group = torch.tensor([t.group for t in targets], dtype=torch.long)
            batch.emodb_class = torch.tensor([t.emodb_class for t in targets], dtype=torch.long)
            batch.voice_emotional = torch.tensor(
                [t.voice_emotional for t in targets], dtype=torch.float32
            )
        return batch
