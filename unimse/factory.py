"""``build_model``: the UniMSE model a config asks for (encoder-only or T5)."""

from __future__ import annotations

from torch import nn

from unimse.config import UniMSEConfig
from unimse.modeling import UniMSEEncoderModel
from unimse.t5_model import UniMSET5Model


def build_model(config: UniMSEConfig) -> nn.Module:
    if config.backbone_type == "t5":
        return UniMSET5Model(config)
    return UniMSEEncoderModel(config)
