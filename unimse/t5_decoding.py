"""Reading the universal label out of the UniMSE T5 decoder.

Prediction is constrained decoding, field by field, so it can never produce a malformed label and
it yields full distributions rather than one string:

1. every polarity option is scored as a continuation of the empty label (sum of token
   log-probabilities of ``"<polarity>,"``), giving a distribution over the three polarities;
2. after the best polarity, the score is decoded greedily with the vocabulary restricted to number
   tokens and the comma, then parsed (unreadable numbers fall back to 0.0, the range is clipped);
3. the 7 MELD emotions, then the 6 IEMOCAP emotions, are scored the same way given the label
   written so far (the last field ends with the end-of-sequence token instead of a comma).

The encoder runs once per batch; each field is one decoder call batched over samples x options.
:meth:`LabelDecoder.generate` is plain greedy generation, for showing what the model writes when
free; its output goes through :func:`unimse.labels.parse_universal_label`, which never raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import torch

from unimse.config import UniMSEConfig
from unimse.labels import UniversalLabel, parse_universal_label
from unimse.modeling import UniMSEOutput
from unimse.t5_backbone import token_ids
from unimse.t5_targets import IGNORE_INDEX

# A score such as "-2.5" needs at most five tokens in any tokenizer; the greedy number decoding
# stops at a comma, at this many tokens, or at ``max_label_length``, whichever comes first.
MAX_SCORE_TOKENS = 5
_NUMBER_CHARS = frozenset("0123456789.-+")
_PIECE_MARKERS = ("##", "\u2581", "\u0120")  # WordPiece continuation, SentencePiece and BPE spaces


def score_vocabulary(tokenizer: Any, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks over the output vocabulary: tokens that can spell a number, and commas."""
    number = torch.zeros(size, dtype=torch.bool)
    comma = torch.zeros(size, dtype=torch.bool)
    special = set(getattr(tokenizer, "all_special_ids", []))
    count = min(size, len(tokenizer))
    pieces = tokenizer.convert_ids_to_tokens(list(range(count)))
    for index, piece in enumerate(pieces):
        if index in special or not isinstance(piece, str):
            continue
        for marker in _PIECE_MARKERS:
            piece = piece.replace(marker, "")
        if piece == ",":
            comma[index] = True
        elif piece and set(piece) <= _NUMBER_CHARS:
            number[index] = True
    if not comma.any() or not number.any():
        raise ValueError("the tokenizer cannot spell a universal label (no comma or digit tokens)")
    return number, comma


class DecodingModel(Protocol):
    """What decoding reads from the T5 model: its decoder pass, LM head and label vocabulary."""

    config: UniMSEConfig
    tokenizer: Any
    pad_id: int
    eos_id: int
    start_id: int
    number_tokens: torch.Tensor  # (V,) bool, see score_vocabulary
    comma_tokens: torch.Tensor  # (V,) bool

    def _decoder_hidden(
        self,
        encoded: torch.Tensor,
        encoder_mask: torch.Tensor,
        acoustic: torch.Tensor,
        visual: torch.Tensor,
        decoder_input_ids: torch.Tensor,
    ) -> torch.Tensor: ...

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class EncodedBatch:
    """What every decoder call reads: encoder states, their mask and the modality vectors."""

    states: torch.Tensor  # (B, L, H)
    mask: torch.Tensor  # (B, L)
    acoustic: torch.Tensor  # (B, modality_dim)
    visual: torch.Tensor  # (B, modality_dim)

    def repeat(self, k: int) -> EncodedBatch:
        """Each row ``k`` times in a row, to score ``k`` options per sample in one call."""
        return EncodedBatch(
            *(
                t.repeat_interleave(k, dim=0)
                for t in (self.states, self.mask, self.acoustic, self.visual)
            )
        )

    def rows(self, index: torch.Tensor) -> EncodedBatch:
        return EncodedBatch(
            self.states[index], self.mask[index], self.acoustic[index], self.visual[index]
        )


class LabelDecoder:
    """Constrained and free decoding of the universal label, given the encoder's output."""

    def __init__(self, model: DecodingModel) -> None:
        self.model = model
        self.tokenize = lru_cache(maxsize=16384)(self._tokenize_uncached)

    def _tokenize_uncached(self, text: str) -> tuple[int, ...]:
        return tuple(token_ids(self.model.tokenizer, text))

    def _hidden(self, encoded: EncodedBatch, decoder_input_ids: torch.Tensor) -> torch.Tensor:
        return self.model._decoder_hidden(
            encoded.states, encoded.mask, encoded.acoustic, encoded.visual, decoder_input_ids
        )

    def _pad(
        self, sequences: Sequence[Sequence[int]], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded decoder inputs (start + sequence[:-1]) and targets (IGNORE on padding)."""
        width = max(len(s) for s in sequences)
        inputs = torch.full((len(sequences), width), self.model.pad_id, dtype=torch.long)
        targets = torch.full((len(sequences), width), IGNORE_INDEX, dtype=torch.long)
        for i, seq in enumerate(sequences):
            ids = torch.tensor(list(seq), dtype=torch.long)
            targets[i, : len(seq)] = ids
            inputs[i, 0] = self.model.start_id
            inputs[i, 1 : len(seq)] = ids[:-1]
        return inputs.to(device), targets.to(device)

    def score_options(
        self, encoded: EncodedBatch, prefixes: Sequence[str], options: Sequence[str], last: bool
    ) -> torch.Tensor:
        """Log-distribution (B, K) over ``options`` as the next field after each row's prefix.

        Each candidate is the whole label so far plus the option and its delimiter (a comma, or
        end of sequence for the last field), tokenised as one string exactly as in training; its
        score is the sum of its token log-probabilities. The shared prefix adds the same amount to
        every option of a row, so the normalised result is the distribution over the options.
        That common part is skipped: in a causal decoder the log-probability of a token depends
        only on the tokens before it, so positions inside the row's longest common token prefix
        score the same for every option and cancel exactly.
        """
        model = self.model
        k = len(options)
        sequences: list[list[int]] = []
        first_scored: list[int] = []
        for prefix in prefixes:
            row: list[list[int]] = []
            for option in options:
                if last:
                    row.append([*self.tokenize(prefix + option), model.eos_id])
                else:
                    row.append(list(self.tokenize(prefix + option + ",")))
            shared = 0
            while all(len(s) > shared + 1 and s[shared] == row[0][shared] for s in row):
                shared += 1
            sequences += row
            first_scored += [shared] * k
        device = encoded.states.device
        inputs, targets = self._pad(sequences, device)
        hidden = self._hidden(encoded.repeat(k), inputs)
        positions = torch.arange(targets.shape[1], device=device).unsqueeze(0)
        scored = (targets != IGNORE_INDEX) & (
            positions >= torch.tensor(first_scored, device=device).unsqueeze(1)
        )
        log_probs = torch.log_softmax(model.lm_logits(hidden[scored]).float(), dim=-1)
        token = log_probs.gather(-1, targets[scored].unsqueeze(-1)).squeeze(-1)
        owner = scored.nonzero(as_tuple=True)[0]
        total = torch.zeros(len(sequences), device=device).index_add_(0, owner, token)
        return torch.log_softmax(total.view(len(prefixes), k), dim=-1)

    def greedy_scores(self, encoded: EncodedBatch, prefixes: Sequence[str]) -> list[str]:
        """Greedy decoding of the score field, restricted to number tokens, until a comma."""
        model = self.model
        device = encoded.states.device
        decoded: list[list[int]] = [[model.start_id, *self.tokenize(p)] for p in prefixes]
        written: list[list[int]] = [[] for _ in prefixes]
        active = list(range(len(prefixes)))
        budget = min(
            MAX_SCORE_TOKENS, model.config.max_label_length - min(len(d) - 1 for d in decoded)
        )
        allowed = model.number_tokens | model.comma_tokens
        for _ in range(max(budget, 1)):
            if not active:
                break
            rows = torch.tensor(active, device=device)
            width = max(len(decoded[i]) for i in active)
            inputs = torch.full((len(active), width), model.pad_id, dtype=torch.long)
            for j, i in enumerate(active):
                inputs[j, : len(decoded[i])] = torch.tensor(decoded[i])
            hidden = self._hidden(encoded.rows(rows), inputs.to(device))
            last = torch.tensor([len(decoded[i]) - 1 for i in active], device=device)
            step = model.lm_logits(hidden[torch.arange(len(active), device=device), last]).float()
            step = step.masked_fill(~allowed[: step.shape[-1]], float("-inf"))
            chosen = step.argmax(-1).tolist()
            still = []
            for i, token in zip(active, chosen, strict=True):
                if bool(model.comma_tokens[token]):
                    continue
                decoded[i].append(token)
                written[i].append(token)
                still.append(i)
            active = still
        return [
            "".join(model.tokenizer.decode(ids, skip_special_tokens=True).split())
            for ids in written
        ]

    def decode(self, encoded: EncodedBatch) -> UniMSEOutput:
        """Constrained decoding: a distribution per emotion field and the decoded score."""
        cfg = self.model.config
        size = encoded.states.shape[0]
        polarity = self.score_options(encoded, [""] * size, cfg.polarities, last=False)
        chosen = [cfg.polarities[i] for i in polarity.argmax(-1).tolist()]
        score_texts = self.greedy_scores(encoded, [f"{p}," for p in chosen])
        scores = [
            parse_universal_label(
                f"{p},{s}", fallback=UniversalLabel(p, 0.0, "neutral", "neutral")
            ).score
            for p, s in zip(chosen, score_texts, strict=True)
        ]
        prefixes = [f"{p},{s:.1f}," for p, s in zip(chosen, scores, strict=True)]
        meld = self.score_options(encoded, prefixes, cfg.meld_emotions, last=False)
        prefixes = [
            f"{prefix}{cfg.meld_emotions[i]},"
            for prefix, i in zip(prefixes, meld.argmax(-1).tolist(), strict=True)
        ]
        iemocap = self.score_options(encoded, prefixes, cfg.iemocap_emotions, last=True)
        score = torch.tensor(scores, dtype=torch.float32, device=encoded.states.device)
        return UniMSEOutput(
            polarity_logits=polarity, meld_logits=meld, iemocap_logits=iemocap, score=score
        )

    def generate(self, encoded: EncodedBatch) -> list[str]:
        """Plain greedy decoding (no constraint), whitespace removed; see ``generate_text``."""
        model = self.model
        size = encoded.states.shape[0]
        device = encoded.states.device
        ids = torch.full((size, 1), model.start_id, dtype=torch.long, device=device)
        finished = torch.zeros(size, dtype=torch.bool, device=device)
        for _ in range(model.config.max_label_length):
            hidden = self._hidden(encoded, ids)
            token = model.lm_logits(hidden[:, -1]).argmax(-1)
            token = token.masked_fill(finished, model.pad_id)
            ids = torch.cat([ids, token.unsqueeze(1)], dim=1)
            finished |= token == model.eos_id
            if bool(finished.all()):
                break
        texts = []
        for row in ids[:, 1:].tolist():
            if model.eos_id in row:
                row = row[: row.index(model.eos_id)]
            texts.append("".join(model.tokenizer.decode(row, skip_special_tokens=True).split()))
        return texts
