"""UniMSE with a T5 backbone, as in the paper: PMF inside encoder and decoder, a generated label.

PMF follows the feed-forward sublayer (``block.layer[-1]``, a ``T5LayerFF``) of the last
``fusion_layers`` encoder blocks and the last ``fusion_layers`` decoder blocks
(:mod:`unimse.t5_backbone`). The decoder is trained to write the universal label
``polarity,score,meld_emotion,iemocap_emotion`` followed by the end-of-sequence token
(:mod:`unimse.t5_targets`); prediction reads it back by constrained decoding, field by field
(:mod:`unimse.t5_decoding`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from unimse.backbones import is_random_init, load_tokenizer
from unimse.config import UniMSEConfig
from unimse.fusion import PMF, ModalityFusion
from unimse.modeling import FusionState, UniMSEOutput, contrastive_losses, masked_mean
from unimse.processor import ModelBatch
from unimse.t5_backbone import eos_id, fuse_feed_forward, load_t5_backbone
from unimse.t5_decoding import EncodedBatch, LabelDecoder, score_vocabulary
from unimse.t5_targets import IGNORE_INDEX, LabelTokenTargets

logger = logging.getLogger(__name__)


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
        self.encoder_fused = fuse_feed_forward(
            self.backbone.encoder.block, config.fusion_layers, hidden, config, self.state, text=True
        )
        self.decoder_fused = fuse_feed_forward(
            self.backbone.decoder.block,
            config.fusion_layers,
            hidden,
            config,
            self.state,
            text=False,
        )
        self.text_proj = nn.Linear(hidden, config.modality_dim)

        self.pad_id = int(self.tokenizer.pad_token_id)
        self.eos_id = eos_id(self.tokenizer)
        start = getattr(t5_config, "decoder_start_token_id", None)
        self.start_id = int(start) if start is not None else self.pad_id
        number, comma = score_vocabulary(self.tokenizer, int(self.backbone.lm_head.out_features))
        self.register_buffer("number_tokens", number, persistent=False)
        self.register_buffer("comma_tokens", comma, persistent=False)
        self.label_targets = LabelTokenTargets(
            config, self.tokenizer, self.pad_id, self.eos_id, self.start_id
        )
        self.label_decoder = LabelDecoder(self)

    # ----------------------------------------------------------------- freezing

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
        vectors = self.fusion.encode(
            batch.size,
            batch.input_ids.device,
            batch.acoustic,
            batch.acoustic_lengths,
            batch.visual,
            batch.visual_lengths,
        )
        return vectors.acoustic, vectors.visual

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
        return self.label_targets.texts(batch)

    def _label_token_weights(
        self, text: str, field_weights: Sequence[float]
    ) -> tuple[list[int], list[float]]:
        return self.label_targets.token_weights(text, field_weights)

    def _targets(self, batch: ModelBatch) -> tuple[torch.Tensor, torch.Tensor]:
        return self.label_targets(batch)

    def _shift_right(self, labels: torch.Tensor) -> torch.Tensor:
        return self.label_targets.shift_right(labels)

    # ----------------------------------------------------------------- forward

    def forward(self, batch: ModelBatch) -> UniMSEOutput:
        acoustic, visual = self._modality_vectors(batch)
        encoded, text_hidden = self._encode(batch, acoustic, visual)
        with torch.no_grad():
            out = self.label_decoder.decode(
                EncodedBatch(
                    encoded.detach(), batch.attention_mask, acoustic.detach(), visual.detach()
                )
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

    @torch.no_grad()
    def generate_text(self, batch: ModelBatch) -> list[str]:
        """What the decoder writes with plain greedy decoding (no constraint), whitespace removed.

        Universal labels contain no spaces, so removing whitespace undoes the tokenizer's
        detokenisation spacing (WordPiece decodes ``1.8`` as ``1. 8``). The text may be malformed;
        read it with :func:`unimse.labels.parse_universal_label`.
        """
        acoustic, visual = self._modality_vectors(batch)
        encoded, _ = self._encode(batch, acoustic, visual)
        return self.label_decoder.generate(
            EncodedBatch(encoded, batch.attention_mask, acoustic, visual)
        )
