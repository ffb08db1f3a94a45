"""The T5 backbone of UniMSE: loading it offline, and PMF after the feed-forward of its blocks."""

from __future__ import annotations

import logging
from typing import Any

from unimse.backbones import (
    BackboneNotFoundError,
    is_random_init,
    load_backbone_config,
    load_pretrained,
)
from unimse.config import UniMSEConfig
from unimse.fusion import PMF
from unimse.modeling import FusedLayer, FusionState

logger = logging.getLogger(__name__)


def token_ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def eos_id(tokenizer: Any) -> int:
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
        "eos_token_id": eos_id(tokenizer),
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


def fuse_feed_forward(
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
