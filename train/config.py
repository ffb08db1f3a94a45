"""Training run configuration, loaded from ``configs/*.toml`` and validated."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from train.data import DATASETS
from unimse.config import UniMSEConfig


class TrainConfigError(ValueError):
    """A training config file is missing, not TOML, or holds an unknown key or a bad value."""


@dataclass(frozen=True)
class DataConfig:
    datasets: tuple[str, ...] = DATASETS
    data_dir: str = "../shared/data"
    mosi_features: bool = False  # bc-LSTM utterance features (benchmark ablation only)
    limit_per_dataset: int = 0  # 0: all training samples
    # Times each training sample of a dataset is seen per epoch (small MOSI is repeated).
    oversample: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.datasets) - set(DATASETS)
        if unknown or not self.datasets:
            raise ValueError(
                f"datasets must be a non-empty subset of {DATASETS}, got {self.datasets}"
            )
        if any(k not in self.datasets or v < 1 for k, v in self.oversample.items()):
            raise ValueError(f"oversample needs datasets from {self.datasets} and factors >= 1")
        if self.limit_per_dataset < 0:
            raise ValueError("limit_per_dataset must be >= 0")


@dataclass(frozen=True)
class OptimConfig:
    seed: int = 13
    epochs: int = 4
    max_steps: int = 0  # 0: no limit
    batch_size: int = 32
    eval_batch_size: int = 64
    lr_backbone: float = 5e-5
    lr_new: float = 5e-4  # fusion, LSTMs, heads
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    trainable_layers: int = 4  # top backbone layers that train; the rest is frozen
    grad_clip: float = 1.0
    amp: bool = True  # mixed precision on CUDA (bf16 where supported, else fp16)
    patience: int = 2  # epochs without dev improvement before stopping
    eval_every_epochs: int = 1
    threads: int = 0  # torch CPU threads; 0 = all cores
    output: str = "runs/default"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"train.{name} must be positive")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError("train.warmup_ratio must be in [0, 1)")
        if self.lr_backbone < 0 or self.lr_new <= 0:
            raise ValueError("learning rates must be positive")


@dataclass(frozen=True)
class TrainConfig:
    model: UniMSEConfig = field(default_factory=UniMSEConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: OptimConfig = field(default_factory=OptimConfig)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        unknown = set(raw) - {"model", "data", "train"}
        if unknown:
            raise ValueError(f"unknown config sections: {sorted(unknown)}")
        data_raw = dict(raw.get("data", {}))
        if "datasets" in data_raw:
            data_raw["datasets"] = tuple(data_raw["datasets"])
        for section, klass, values in (
            ("data", DataConfig, data_raw),
            ("train", OptimConfig, raw.get("train", {})),
        ):
            names = {f.name for f in fields(klass)}
            bad = set(values) - names
            if bad:
                raise ValueError(f"unknown keys in [{section}]: {sorted(bad)}")
        return cls(
            model=UniMSEConfig.from_dict(raw.get("model", {})),
            data=DataConfig(**data_raw),
            train=OptimConfig(**raw.get("train", {})),
        )

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        file = Path(path)
        if not file.is_file():
            raise TrainConfigError(f"config file not found: {file}")
        try:
            raw = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise TrainConfigError(f"{file}: invalid TOML ({exc})") from exc
        try:
            return cls.from_dict(raw)
        except (TypeError, ValueError) as exc:
            raise TrainConfigError(f"{file}: {exc}") from exc
