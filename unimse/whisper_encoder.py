"""Whisper's encoder in PyTorch, with the states of its inner layers (the emotion model's voice).

Emotion lives in the middle of the encoder: on speaker-independent folds a linear probe on the
two middle layers of ``tiny.en`` hears RAVDESS / EMO-DB clearly better than on its last layer
(``benchmarks/voice_probe.py``, docs/RESULTS.md). CTranslate2 returns the last layer only, so this
module runs the same encoder (the weights are read from the faster-whisper model's ``model.bin``)
and returns the last layer for decoding together with the chosen inner layers: one encoder pass
per utterance still serves both transcription and emotion.

:class:`TappedWhisper` stands in for the ``ctranslate2.models.Whisper`` inside a
``faster_whisper.WhisperModel``: its ``encode`` runs this encoder and returns an
:class:`EncoderOutput`; every other method (``generate``, ``detect_language``, ...) is the
CTranslate2 model's, given the last layer as a ``StorageView``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unimse.ct2_weights import read_variables
from unimse.encoder_output import EncoderOutput

LAYER_NORM_EPS = 1e-5


class _Block(nn.Module):
    """A pre-norm Transformer block as CTranslate2 stores Whisper's (fused q/k/v projection)."""

    def __init__(self, dim: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.heads = heads
        self.attention_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attention_out = nn.Linear(dim, dim)
        self.ffn_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.ffn_in = nn.Linear(dim, ffn)
        self.ffn_out = nn.Linear(ffn, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps, _ = x.shape
        q, k, v = self.qkv(self.attention_norm(x)).chunk(3, dim=-1)
        q, k, v = (t.view(batch, steps, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(x.shape)
        x = x + self.attention_out(attended)
        return x + self.ffn_out(F.gelu(self.ffn_in(self.ffn_norm(x))))


class WhisperEncoder(nn.Module):
    """Log-mel (B, 80, frames) -> the states after each block (B, frames / 2, d); the last one
    after the final layer norm, as Whisper's decoder reads it."""

    def __init__(self, variables: dict[str, np.ndarray]) -> None:
        super().__init__()
        try:
            conv1 = variables["encoder/conv1/weight"]
            dim = conv1.shape[0]
            heads = int(variables["encoder/num_heads"])
            ffn = variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]
        except KeyError as exc:
            raise ValueError(f"not a Whisper encoder: no variable {exc}") from None
        count = sum(1 for name in variables if name.endswith("self_attention/linear_0/weight"))
        self.conv1 = nn.Conv1d(conv1.shape[1], dim, 3, padding=1)
        self.conv2 = nn.Conv1d(dim, dim, 3, stride=2, padding=1)
        self.register_buffer("positions", torch.zeros(0, dim), persistent=False)
        self.blocks = nn.ModuleList(_Block(dim, heads, ffn) for _ in range(count))
        self.final_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self._load(variables)
        self.eval()

    @property
    def layers(self) -> int:
        return len(self.blocks)

    def _load(self, variables: dict[str, np.ndarray]) -> None:
        names = {
            "conv1.weight": "encoder/conv1/weight",
            "conv1.bias": "encoder/conv1/bias",
            "conv2.weight": "encoder/conv2/weight",
            "conv2.bias": "encoder/conv2/bias",
            "final_norm.weight": "encoder/layer_norm/gamma",
            "final_norm.bias": "encoder/layer_norm/beta",
        }
        parts = {
            "attention_norm.weight": "self_attention/layer_norm/gamma",
            "attention_norm.bias": "self_attention/layer_norm/beta",
            "qkv.weight": "self_attention/linear_0/weight",
            "qkv.bias": "self_attention/linear_0/bias",
            "attention_out.weight": "self_attention/linear_1/weight",
            "attention_out.bias": "self_attention/linear_1/bias",
            "ffn_norm.weight": "ffn/layer_norm/gamma",
            "ffn_norm.bias": "ffn/layer_norm/beta",
            "ffn_in.weight": "ffn/linear_0/weight",
            "ffn_in.bias": "ffn/linear_0/bias",
            "ffn_out.weight": "ffn/linear_1/weight",
            "ffn_out.bias": "ffn/linear_1/bias",
        }
        for index in range(self.layers):
            for mine, theirs in parts.items():
                names[f"blocks.{index}.{mine}"] = f"encoder/layer_{index}/{theirs}"
        state = {mine: torch.from_numpy(variables[theirs]) for mine, theirs in names.items()}
        self.load_state_dict(state, strict=False)
        self.positions = torch.from_numpy(variables["encoder/position_encodings/encodings"])

    @torch.inference_mode()
    def forward(self, mel: torch.Tensor) -> list[torch.Tensor]:
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).transpose(1, 2)
        if x.shape[1] > len(self.positions):
            raise ValueError(f"encoder input of {2 * x.shape[1]} frames is longer than 30 s")
        x = x + self.positions[: x.shape[1]]
        states = []
        for block in self.blocks:
            x = block(x)
            states.append(x)
        states[-1] = self.final_norm(x)
        return states

    @classmethod
    def from_model_folder(cls, folder: str | Path) -> WhisperEncoder:
        return cls(read_variables(Path(folder) / "model.bin", prefix="encoder/"))


def check_layers(layers: Sequence[int], count: int) -> tuple[int, ...]:
    """``layers`` as a tuple, each a valid block index of an encoder with ``count`` blocks."""
    chosen = tuple(layers)
    if not chosen or any(not 0 <= layer < count for layer in chosen):
        raise ValueError(f"encoder layers {list(chosen)} out of range 0..{count - 1}")
    return chosen


class TappedWhisper:
    """A ``ctranslate2.models.Whisper`` whose encoder runs here and also returns inner layers.

    ``encode`` returns an :class:`EncoderOutput`; methods that take encoder output get its last
    layer as a ``StorageView``; all else is the wrapped model's. Thread-safe like the original
    (the encoder is stateless; torch runs it with the threads the caller allows).
    """

    def __init__(self, model: Any, encoder: WhisperEncoder, layers: Sequence[int]) -> None:
        self._model = model
        self.encoder = encoder
        self.layers = check_layers(layers, encoder.layers)
        self._device = torch.device("cuda" if getattr(model, "device", "cpu") == "cuda" else "cpu")
        self.encoder.to(self._device)

    @property
    def wrapped(self) -> Any:
        """The CTranslate2 model."""
        return self._model

    def encode(self, features: Any, to_cpu: bool = False) -> EncoderOutput:
        del to_cpu  # the output is always on the host
        mel = torch.as_tensor(np.asarray(features, dtype=np.float32), device=self._device)
        if mel.ndim == 2:
            mel = mel.unsqueeze(0)
        states = self.encoder(mel)
        taps = torch.cat([states[layer] for layer in self.layers], dim=-1)
        return EncoderOutput(states[-1].float().cpu().numpy(), taps.float().cpu().numpy())

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._model, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            return attribute(*(decoder_input(arg) for arg in args), **kwargs)

        return call


def decoder_input(features: Any) -> Any:
    """What CTranslate2's decoding methods take for ``features``: an :class:`EncoderOutput`'s last
    layer as a ``StorageView``; anything else unchanged."""
    if not isinstance(features, EncoderOutput):
        return features
    import ctranslate2

    return ctranslate2.StorageView.from_array(np.ascontiguousarray(features.final))
