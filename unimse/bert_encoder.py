"""A BERT encoder in plain torch, for start-up speed.

transformers' ``BertModel`` computes exactly this, but importing it brings transformers' whole
modelling stack (``modeling_utils``: torch._dynamo, torch.distributed.tensor, sympy, ...), 1-3 s
of imports on the critical path of every ``emotrack`` start. This module reads the same
``config.json`` and weights and keeps the same parameter names (``embeddings.word_embeddings``,
``encoder.layer.N.attention.self.query``, ...), so checkpoints load either way; the forward pass
follows ``BertModel`` with its SDPA attention op for op (tests compare the two bit for bit).

Only plain encoder configurations qualify (absolute positions, no decoder, no cross-attention, a
known activation); :func:`supports` says which, and anything else goes to transformers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "relu": F.relu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
}


@dataclass
class BertSettings:
    """The ``config.json`` fields the encoder reads (names as transformers writes them)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> BertSettings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


REQUIRED = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
)


def supports(values: Mapping[str, Any]) -> bool:
    """Whether a backbone ``config.json`` (with overrides applied) is a plain BERT encoder."""
    return (
        values.get("model_type") == "bert"
        and values.get("position_embedding_type", "absolute") == "absolute"
        and not values.get("is_decoder", False)
        and not values.get("add_cross_attention", False)
        and values.get("hidden_act", "gelu") in ACTIVATIONS
        and not values.get("chunk_size_feed_forward", 0)
        and all(k in values for k in REQUIRED)
    )


def read_config(folder: Path) -> dict[str, Any]:
    values: dict[str, Any] = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return values


class Embeddings(nn.Module):
    def __init__(self, s: BertSettings) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(s.vocab_size, s.hidden_size, padding_idx=s.pad_token_id)
        self.position_embeddings = nn.Embedding(s.max_position_embeddings, s.hidden_size)
        self.token_type_embeddings = nn.Embedding(s.type_vocab_size, s.hidden_size)
        self.LayerNorm = nn.LayerNorm(s.hidden_size, eps=s.layer_norm_eps)
        self.dropout = nn.Dropout(s.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        token_types = torch.zeros_like(input_ids)
        embeddings = self.word_embeddings(input_ids) + self.token_type_embeddings(token_types)
        embeddings = embeddings + self.position_embeddings(positions)
        return self.dropout(self.LayerNorm(embeddings))


class SelfAttention(nn.Module):
    def __init__(self, s: BertSettings) -> None:
        super().__init__()
        if s.hidden_size % s.num_attention_heads:
            raise ValueError(
                f"hidden size {s.hidden_size} is not a multiple of {s.num_attention_heads} heads"
            )
        self.head_size = s.hidden_size // s.num_attention_heads
        self.query = nn.Linear(s.hidden_size, s.hidden_size)
        self.key = nn.Linear(s.hidden_size, s.hidden_size)
        self.value = nn.Linear(s.hidden_size, s.hidden_size)
        self.dropout_p = s.attention_probs_dropout_prob

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        shape = (*hidden.shape[:-1], -1, self.head_size)
        q = self.query(hidden).view(*shape).transpose(1, 2)
        k = self.key(hidden).view(*shape).transpose(1, 2)
        v = self.value(hidden).view(*shape).transpose(1, 2)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout_p if self.training else 0.0,
            scale=self.head_size**-0.5,
            is_causal=False,
        )
        out = out.reshape(out.shape[0], -1, q.shape[2], v.shape[-1]).transpose(1, 2).contiguous()
        return out.reshape(*hidden.shape[:-1], -1).contiguous()


class AddNorm(nn.Module):
    """Dense, dropout, residual, LayerNorm (BERT's ``SelfOutput`` and ``Output``)."""

    def __init__(self, s: BertSettings, in_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(in_size, s.hidden_size)
        self.LayerNorm = nn.LayerNorm(s.hidden_size, eps=s.layer_norm_eps)
        self.dropout = nn.Dropout(s.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class Attention(nn.Module):
    def __init__(self, s: BertSettings) -> None:
        super().__init__()
        self.self = SelfAttention(s)
        self.output = AddNorm(s, s.hidden_size)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(hidden, mask), hidden)


class Intermediate(nn.Module):
    def __init__(self, s: BertSettings) -> None:
        super().__init__()
        self.dense = nn.Linear(s.hidden_size, s.intermediate_size)
        self.act = ACTIVATIONS[s.hidden_act]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(hidden))


class Layer(nn.Module):
    def __init__(self, s: BertSettings) -> None:
        super().__init__()
        self.attention = Attention(s)
        self.intermediate = Intermediate(s)
        self.output = AddNorm(s, s.intermediate_size)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        attended = self.attention(hidden, mask)
        return self.output(self.intermediate(attended), attended)


class Encoder(nn.Module):
    def __init__(self, s: BertSettings) -> None:
        super().__init__()
        self.layer = nn.ModuleList([Layer(s) for _ in range(s.num_hidden_layers)])


class Pooler(nn.Module):
    """Kept for the weights' sake (checkpoints hold it); UniMSE pools by itself."""

    def __init__(self, s: BertSettings) -> None:
        super().__init__()
        self.dense = nn.Linear(s.hidden_size, s.hidden_size)


@dataclass
class EncoderOutput:
    last_hidden_state: torch.Tensor


def attention_mask_4d(mask: torch.Tensor | None, length: int) -> torch.Tensor | None:
    """transformers' SDPA padding mask: None without padding, else bool (B, 1, Q, K)."""
    if mask is None or bool(mask.all()):
        return None
    keys = mask.bool()[:, None, None, :]
    return keys.expand(mask.shape[0], 1, length, mask.shape[1])


class BertEncoder(nn.Module):
    """``BertModel``'s encoder path: embeddings -> layers -> last hidden state."""

    def __init__(self, settings: BertSettings) -> None:
        super().__init__()
        self.config = settings
        self.embeddings = Embeddings(settings)
        self.encoder = Encoder(settings)
        self.pooler = Pooler(settings)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> EncoderOutput:
        hidden = self.embeddings(input_ids)
        mask = attention_mask_4d(attention_mask, input_ids.shape[1])
        for layer in self.encoder.layer:
            hidden = layer(hidden, mask)
        return EncoderOutput(hidden)


LEGACY_NAMES = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}


def read_weights(folder: Path) -> dict[str, torch.Tensor] | None:
    """The backbone's tensors under ``BertModel`` names, or None when the folder has none."""
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        tensors = load_file(str(folder / "model.safetensors"))
    elif (folder / "pytorch_model.bin").is_file():
        tensors = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        return None
    renamed: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        name = name.removeprefix("bert.")
        for old, new in LEGACY_NAMES.items():
            name = name.replace(old, new)
        renamed[name] = tensor
    return renamed


def load_bert_encoder(folder: Path, values: Mapping[str, Any]) -> BertEncoder | None:
    """The pretrained encoder from ``folder``, or None when its weights don't fit this encoder
    (then transformers should load it)."""
    tensors = read_weights(folder)
    if tensors is None:
        return None
    model = BertEncoder(BertSettings.from_mapping(values))
    expected = model.state_dict()
    if any(name not in tensors for name in expected if not name.startswith("pooler.")):
        return None
    if any(tensors[name].shape != expected[name].shape for name in expected if name in tensors):
        return None
    model.load_state_dict({k: v for k, v in tensors.items() if k in expected}, strict=False)
    return model.eval()
