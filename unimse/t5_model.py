"""UniMSE with a T5 backbone, as in the paper: PMF inside encoder and decoder, a generated label.

PMF follows the feed-forward sublayer (``block.layer[-1]``, a ``T5LayerFF``) of the last
``fusion_layers`` encoder blocks and the last ``fusion_layers`` decoder blocks. The decoder is
trained to write the universal label ``polarity,score,meld_emotion,iemocap_emotion`` followed by
the end-of-sequence token.

Prediction is constrained decoding, field by field, so it can never produce a malformed label and
it yields full distributions rather than one string:

1. every polarity option is scored as a continuation of the empty label (sum of token
   log-probabilities of ``"<polarity>,"``), giving a distribution over the three polarities;
2. after the best polarity, the score is decoded greedily with the vocabulary restricted to number
   tokens and the comma, then parsed (unreadable numbers fall back to 0.0, the range is clipped);
3. the 7 MELD emotions, then the 6 IEMOCAP emotions, are scored the same way given the label
   written so far (the last field ends with the end-of-sequence token instead of a comma).

The encoder runs once per batch; each field is one decoder call batched over samples x options.
``generate_text`` is plain greedy generation, for showing what the model writes when free; its
output goes through :func:`unimse.labels.parse_universal_label`, which never raises.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unimse.backbones import (
    BackboneNotFoundError,
    is_random_init,
    load_backbone_config,
    load_pretrained,
    load_tokenizer,
)
from unimse.config import UniMSEConfig
from unimse.fusion import PMF, ModalityFusion
from unimse.labels import SCORE_RANGE, UniversalLabel, parse_universal_label
from unimse.modeling import FusedLayer, FusionState, UniMSEOutput, contrastive_losses, masked_mean
from unimse.processor import ModelBatch

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
# A score such as "-2.5" needs at most five tokens in any tokenizer; the greedy number decoding
# stops at a comma, at this many tokens, or at ``max_label_length``, whichever comes first.
MAX_SCORE_TOKENS = 5
_NUMBER_CHARS = frozenset("0123456789.-+")
_PIECE_MARKERS = ("##", "\u2581", "\u0120")  # WordPiece continuation, SentencePiece and BPE spaces


def _token_ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _eos_id(tokenizer: Any) -> int:
    """The separator the processor uses (``[SEP]``, or ``</s>`` for T5) also ends a label."""
    sep = getattr(tokenizer, "sep_token_id", None)
    eos = sep if sep is not None else getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ValueError("the tokenizer has neither a separator nor an end-of-sequence token")
    return int(eos)


def load_t5_backbone(config: UniMSEConfig, tokenizer: Any) -> Any:
    """A ``T5ForConditionalGeneration`` for ``config``, loaded offline.

    - ``config.backbone`` is a T5 checkpoint (local folder or cached hub name): its weights, or a
      random initialisation of its architecture when ``backbone_overrides["random_init"]``;
    - it is another model (e.g. ``"minilm"``, used for its tokenizer) and ``random_init`` is set:
      a random T5 built from ``backbone_overrides`` (T5Config fields), with vocabulary size and
      special token ids taken from the tokenizer unless overridden;
    - otherwise :class:`BackboneNotFoundError` says what to do.
    """
    from transformers import T5Config, T5ForConditionalGeneration

    folder_config = load_backbone_config(config)
    model_type = getattr(folder_config, "model_type", None)
    if model_type == "t5":
        return load_pretrained(T5ForConditionalGeneration, config)
    if not is_random_init(config):
        raise BackboneNotFoundError(
            f"backbone {config.backbone!r} is a {model_type!r} checkpoint, not T5. Point backbone "
            "at a local T5 folder (config.json + weights, e.g. t5-base from save_pretrained), "
            "or set backbone_overrides={'random_init': True, ...T5Config fields} to train a T5 "
            "from scratch with this backbone's tokenizer."
        )
    pad = tokenizer.pad_token_id
    settings: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "pad_token_id": pad,
        "eos_token_id": _eos_id(tokenizer),
        "decoder_start_token_id": pad,
    }
    settings.update({k: v for k, v in config.backbone_overrides.items() if k != "random_init"})
    if int(settings["vocab_size"]) < len(tokenizer):
        raise ValueError(
            f"backbone_overrides vocab_size {settings['vocab_size']} is smaller than the "
            f"tokenizer's vocabulary ({len(tokenizer)})"
        )
    logger.info("random T5 with the %s tokenizer: %s", config.backbone, settings)
    return T5ForConditionalGeneration(T5Config(**settings))


def _fuse_feed_forward(
    blocks: Any,
    count: int,
    hidden: int,
    config: UniMSEConfig,
    state: FusionState,
    text: bool,
) -> list[int]:
    """Wrap the FF sublayer of the last ``count`` blocks with PMF; returns the fused block indices.

    ``text``: the first fused block records its text-only features (encoder only).
    """
    from transformers.models.t5.modeling_t5 import T5LayerFF

    indices = list(range(len(blocks) - min(count, len(blocks)), len(blocks)))
    for offset, index in enumerate(indices):
        sublayers = blocks[index].layer
        if not isinstance(sublayers[-1], T5LayerFF):
            raise TypeError(f"T5 block {index} does not end with a feed-forward sublayer")
        sublayers[-1] = FusedLayer(
            sublayers[-1], PMF(hidden, config), state, first=text and offset == 0
        )
    return indices


class UniMSET5Model(nn.Module):
    """T5 encoder-decoder with PMF in its last blocks; decodes the universal label."""

    number_tokens: torch.Tensor  # (V,) bool: tokens that can spell part of a number
    comma_tokens: torch.Tensor  # (V,) bool: the field separator

    def __init__(self, config: UniMSEConfig) -> None:
        super().__init__()
        if config.backbone_type != "t5":
            raise ValueError(
                f"UniMSET5Model needs backbone_type 't5', got {config.backbone_type!r}"
            )
        self.config = config
        self.tokenizer = load_tokenizer(config)
        self.backbone = load_t5_backbone(config, self.tokenizer)
        t5_config = self.backbone.config
        hidden = int(t5_config.d_model)
        self.state = FusionState()
        self.fusion = ModalityFusion(config)
        self.encoder_fused = _fuse_feed_forward(
            self.backbone.encoder.block, config.fusion_layers, hidden, config, self.state, text=True
        )
        self.decoder_fused = _fuse_feed_forward(
            self.backbone.decoder.block,
            config.fusion_layers,
            hidden,
            config,
            self.state,
            text=False,
        )
        self.text_proj = nn.Linear(hidden, config.modality_dim)

        self.pad_id = int(self.tokenizer.pad_token_id)
        self.eos_id = _eos_id(self.tokenizer)
        start = getattr(t5_config, "decoder_start_token_id", None)
        self.start_id = int(start) if start is not None else self.pad_id
        number, comma = self._score_vocabulary(int(self.backbone.lm_head.out_features))
        self.register_buffer("number_tokens", number, persistent=False)
        self.register_buffer("comma_tokens", comma, persistent=False)
        self._tokenize = lru_cache(maxsize=16384)(self._tokenize_uncached)

    # ----------------------------------------------------------------- set-up helpers

    def _score_vocabulary(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Boolean masks over the output vocabulary: tokens that can spell a number, and commas."""
        number = torch.zeros(size, dtype=torch.bool)
        comma = torch.zeros(size, dtype=torch.bool)
        special = set(getattr(self.tokenizer, "all_special_ids", []))
        count = min(size, len(self.tokenizer))
        pieces = self.tokenizer.convert_ids_to_tokens(list(range(count)))
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
            raise ValueError(
                "the tokenizer cannot spell a universal label (no comma or digit tokens)"
            )
        return number, comma

    def _tokenize_uncached(self, text: str) -> tuple[int, ...]:
        return tuple(_token_ids(self.tokenizer, text))

    def freeze_lower(self, trainable_layers: int) -> None:
        """Freeze the embeddings and all but the top ``trainable_layers`` blocks of each stack.

        PMF modules stay trainable wherever they sit. The LM head is tied to the embeddings and is
        frozen with them. A randomly initialised backbone has nothing worth keeping, so it is left
        fully trainable.
        """
        if is_random_init(self.config):
            logger.info(
                "random T5 backbone: freeze_lower(%d) ignored, all of it trains", trainable_layers
            )
            return
        self.freeze_blocks(trainable_layers)

    def freeze_blocks(self, trainable_layers: int) -> None:
        """:meth:`freeze_lower` without the random-initialisation guard."""
        self.backbone.shared.weight.requires_grad_(False)
        for stack in (self.backbone.encoder, self.backbone.decoder):
            blocks = stack.block
            keep = set(range(len(blocks) - trainable_layers, len(blocks)))
            for index, block in enumerate(blocks):
                for p in block.parameters():
                    p.requires_grad_(index in keep)
                for module in block.modules():
                    if isinstance(module, PMF):
                        for p in module.parameters():
                            p.requires_grad_(True)

    # ----------------------------------------------------------------- backbone passes

    @contextmanager
    def _modalities(self, acoustic: torch.Tensor, visual: torch.Tensor) -> Iterator[None]:
        """Make (rows of) a, v visible to every fused layer for one backbone call."""
        self.state.acoustic, self.state.visual = acoustic, visual
        try:
            yield
        finally:
            self.state.clear()

    def _modality_vectors(self, batch: ModelBatch) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fusion.encode(
            batch.size,
            batch.input_ids.device,
            batch.acoustic,
            batch.acoustic_lengths,
            batch.visual,
            batch.visual_lengths,
        )

    def _encode(
        self, batch: ModelBatch, acoustic: torch.Tensor, visual: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder output and the text-only hidden state entering the first encoder PMF."""
        with self._modalities(acoustic, visual):
            hidden = self.backbone.encoder(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask
            ).last_hidden_state
            text_hidden = self.state.text_hidden if self.state.text_hidden is not None else hidden
        return hidden, text_hidden

    def _decoder_hidden(
        self,
        encoded: torch.Tensor,
        encoder_mask: torch.Tensor,
        acoustic: torch.Tensor,
        visual: torch.Tensor,
        decoder_input_ids: torch.Tensor,
    ) -> torch.Tensor:
        """Decoder output states (B, L, H); see :meth:`lm_logits` for the vocabulary scores.

        Kept apart from the LM head so decoding can project only the positions it needs: the
        (rows x length x vocabulary) logits tensor dominates the cost otherwise.
        """
        with self._modalities(acoustic, visual):
            hidden: torch.Tensor = self.backbone.decoder(
                input_ids=decoder_input_ids,
                encoder_hidden_states=encoded,
                encoder_attention_mask=encoder_mask,
                use_cache=False,
            ).last_hidden_state
        return hidden

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits of decoder states, as ``T5ForConditionalGeneration.forward`` computes.

        T5 (v1.0) scales tied-embedding outputs by d_model^-0.5 before the LM head; transformers
        5 records this as ``scale_decoder_outputs``, 4.x as ``tie_word_embeddings``.
        """
        cfg = self.backbone.config
        scale = getattr(cfg, "scale_decoder_outputs", None)
        if scale is None:
            scale = getattr(cfg, "tie_word_embeddings", True)
        if scale:
            hidden = hidden * (int(cfg.d_model) ** -0.5)
        logits: torch.Tensor = self.backbone.lm_head(hidden)
        return logits

    # ----------------------------------------------------------------- training targets

    def label_texts(self, batch: ModelBatch) -> list[str]:
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

    def _label_token_weights(
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
            ids = _token_ids(self.tokenizer, text)
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

    def _targets(self, batch: ModelBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels (B, L) padded with IGNORE_INDEX and per-token weights (B, L)."""
        assert batch.weights is not None
        rows = [
            self._label_token_weights(text, w)
            for text, w in zip(self.label_texts(batch), batch.weights.tolist(), strict=True)
        ]
        width = max(len(ids) for ids, _ in rows)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        weights = torch.zeros((len(rows), width), dtype=torch.float32)
        for i, (ids, w) in enumerate(rows):
            labels[i, : len(ids)] = torch.tensor(ids)
            weights[i, : len(w)] = torch.tensor(w)
        device = batch.input_ids.device
        return labels.to(device), weights.to(device)

    def _shift_right(self, labels: torch.Tensor) -> torch.Tensor:
        start = torch.full_like(labels[:, :1], self.start_id)
        shifted = torch.cat([start, labels[:, :-1]], dim=1)
        return shifted.masked_fill(shifted == IGNORE_INDEX, self.pad_id)

    # ----------------------------------------------------------------- forward

    def forward(self, batch: ModelBatch) -> UniMSEOutput:
        acoustic, visual = self._modality_vectors(batch)
        encoded, text_hidden = self._encode(batch, acoustic, visual)
        with torch.no_grad():
            out = self._constrained_decode(
                encoded.detach(), batch.attention_mask, acoustic.detach(), visual.detach()
            )
        if batch.weights is None:
            return out

        labels, token_weights = self._targets(batch)
        logits = self.lm_logits(
            self._decoder_hidden(
                encoded, batch.attention_mask, acoustic, visual, self._shift_right(labels)
            )
        )
        token_loss = F.cross_entropy(
            logits.float().flatten(0, 1),
            labels.flatten(),
            ignore_index=IGNORE_INDEX,
            reduction="none",
        ).view_as(token_weights)
        generation = (token_loss * token_weights).sum() / token_weights.sum().clamp(min=1e-6)
        losses = {"generation": self.config.losses.emotion * generation}
        text_vector = self.text_proj(masked_mean(text_hidden, batch.utterance_mask))
        utterance_vector = masked_mean(encoded, batch.utterance_mask)
        losses.update(
            contrastive_losses(self.config, text_vector, acoustic, visual, batch, utterance_vector)
        )
        out.losses = losses
        out.loss = torch.stack(list(losses.values())).sum()
        return out

    # ----------------------------------------------------------------- constrained decoding

    def _pad(
        self, sequences: Sequence[Sequence[int]], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded decoder inputs (start + sequence[:-1]) and targets (IGNORE on padding)."""
        width = max(len(s) for s in sequences)
        inputs = torch.full((len(sequences), width), self.pad_id, dtype=torch.long)
        targets = torch.full((len(sequences), width), IGNORE_INDEX, dtype=torch.long)
        for i, seq in enumerate(sequences):
            ids = torch.tensor(list(seq), dtype=torch.long)
            targets[i, : len(seq)] = ids
            inputs[i, 0] = self.start_id
            inputs[i, 1 : len(seq)] = ids[:-1]
        return inputs.to(device), targets.to(device)

    def _score_options(
        self,
        encoded: torch.Tensor,
        encoder_mask: torch.Tensor,
        acoustic: torch.Tensor,
        visual: torch.Tensor,
        prefixes: Sequence[str],
        options: Sequence[str],
        last: bool,
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
        k = len(options)
        sequences: list[list[int]] = []
        first_scored: list[int] = []
        for prefix in prefixes:
            row: list[list[int]] = []
            for option in options:
                if last:
                    row.append([*self._tokenize(prefix + option), self.eos_id])
                else:
                    row.append(list(self._tokenize(prefix + option + ",")))
            shared = 0
            while all(len(s) > shared + 1 and s[shared] == row[0][shared] for s in row):
                shared += 1
            sequences += row
            first_scored += [shared] * k
        device = encoded.device
        inputs, targets = self._pad(sequences, device)
        hidden = self._decoder_hidden(
            encoded.repeat_interleave(k, dim=0),
            encoder_mask.repeat_interleave(k, dim=0),
            acoustic.repeat_interleave(k, dim=0),
            visual.repeat_interleave(k, dim=0),
            inputs,
        )
        positions = torch.arange(targets.shape[1], device=device).unsqueeze(0)
        scored = (targets != IGNORE_INDEX) & (
            positions >= torch.tensor(first_scored, device=device).unsqueeze(1)
        )
        log_probs = torch.log_softmax(self.lm_logits(hidden[scored]).float(), dim=-1)
        token = log_probs.gather(-1, targets[scored].unsqueeze(-1)).squeeze(-1)
        owner = scored.nonzero(as_tuple=True)[0]
        total = torch.zeros(len(sequences), device=device).index_add_(0, owner, token)
        return torch.log_softmax(total.view(len(prefixes), k), dim=-1)

    def _greedy_scores(
        self,
        encoded: torch.Tensor,
        encoder_mask: torch.Tensor,
        acoustic: torch.Tensor,
        visual: torch.Tensor,
        prefixes: Sequence[str],
    ) -> list[str]:
        """Greedy decoding of the score field, restricted to number tokens, until a comma."""
        device = encoded.device
        decoded: list[list[int]] = [[self.start_id, *self._tokenize(p)] for p in prefixes]
        written: list[list[int]] = [[] for _ in prefixes]
        active = list(range(len(prefixes)))
        budget = min(
            MAX_SCORE_TOKENS, self.config.max_label_length - min(len(d) - 1 for d in decoded)
        )
        allowed = self.number_tokens | self.comma_tokens
        for _ in range(max(budget, 1)):
            if not active:
                break
            rows = torch.tensor(active, device=device)
            width = max(len(decoded[i]) for i in active)
            inputs = torch.full((len(active), width), self.pad_id, dtype=torch.long)
            for j, i in enumerate(active):
                inputs[j, : len(decoded[i])] = torch.tensor(decoded[i])
            hidden = self._decoder_hidden(
                encoded[rows], encoder_mask[rows], acoustic[rows], visual[rows], inputs.to(device)
            )
            last = torch.tensor([len(decoded[i]) - 1 for i in active], device=device)
            step = self.lm_logits(hidden[torch.arange(len(active), device=device), last]).float()
            step = step.masked_fill(~allowed[: step.shape[-1]], float("-inf"))
            chosen = step.argmax(-1).tolist()
            still = []
            for i, token in zip(active, chosen, strict=True):
                if bool(self.comma_tokens[token]):
                    continue
                decoded[i].append(token)
                written[i].append(token)
                still.append(i)
            active = still
        return [
            "".join(self.tokenizer.decode(ids, skip_special_tokens=True).split()) for ids in written
        ]

    def _constrained_decode(
        self,
        encoded: torch.Tensor,
        encoder_mask: torch.Tensor,
        acoustic: torch.Tensor,
        visual: torch.Tensor,
    ) -> UniMSEOutput:
        cfg = self.config
        args = (encoded, encoder_mask, acoustic, visual)
        size = encoded.shape[0]
        polarity = self._score_options(*args, [""] * size, cfg.polarities, last=False)
        chosen = [cfg.polarities[i] for i in polarity.argmax(-1).tolist()]
        score_texts = self._greedy_scores(*args, [f"{p}," for p in chosen])
        scores = [
            parse_universal_label(
                f"{p},{s}", fallback=UniversalLabel(p, 0.0, "neutral", "neutral")
            ).score
            for p, s in zip(chosen, score_texts, strict=True)
        ]
        prefixes = [f"{p},{s:.1f}," for p, s in zip(chosen, scores, strict=True)]
        meld = self._score_options(*args, prefixes, cfg.meld_emotions, last=False)
        prefixes = [
            f"{prefix}{cfg.meld_emotions[i]},"
            for prefix, i in zip(prefixes, meld.argmax(-1).tolist(), strict=True)
        ]
        iemocap = self._score_options(*args, prefixes, cfg.iemocap_emotions, last=True)
        score = torch.tensor(scores, dtype=torch.float32, device=encoded.device)
        return UniMSEOutput(
            polarity_logits=polarity, meld_logits=meld, iemocap_logits=iemocap, score=score
        )

    # ----------------------------------------------------------------- free generation

    @torch.no_grad()
    def generate_text(self, batch: ModelBatch) -> list[str]:
        """What the decoder writes with plain greedy decoding (no constraint), whitespace removed.

        Universal labels contain no spaces, so removing whitespace undoes the tokenizer's
        detokenisation spacing (WordPiece decodes ``1.8`` as ``1. 8``). The text may be malformed;
        read it with :func:`unimse.labels.parse_universal_label`.
        """
        acoustic, visual = self._modality_vectors(batch)
        encoded, _ = self._encode(batch, acoustic, visual)
        device = encoded.device
        ids = torch.full((batch.size, 1), self.start_id, dtype=torch.long, device=device)
        finished = torch.zeros(batch.size, dtype=torch.bool, device=device)
        for _ in range(self.config.max_label_length):
            hidden = self._decoder_hidden(encoded, batch.attention_mask, acoustic, visual, ids)
            token = self.lm_logits(hidden[:, -1]).argmax(-1)
            token = token.masked_fill(finished, self.pad_id)
            ids = torch.cat([ids, token.unsqueeze(1)], dim=1)
            finished |= token == self.eos_id
            if bool(finished.all()):
                break
        texts = []
        for row in ids[:, 1:].tolist():
            if self.eos_id in row:
                row = row[: row.index(self.eos_id)]
            texts.append("".join(self.tokenizer.decode(row, skip_special_tokens=True).split()))
        return texts
