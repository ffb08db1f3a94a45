"""Staged training: start a model from an earlier checkpoint and train only some of its modules.

Stage 2 of the multimodal default builds a model with acoustic and visual feature specs, copies in
every weight of the text-only stage-1 checkpoint whose name and shape match (the fine-tuned
backbone layers, PMF, heads), leaves the new modules (the acoustic/visual LSTMs) at their
initialisation, and trains only what ``[train] train_only`` names, so the text backbone -- and with
it the text benchmarks -- stays as stage 1 left it.
"""

from __future__ import annotations

import fnmatch
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from unimse.checkpoint import (
    BACKBONE_PREFIX,
    CONFIG,
    CheckpointError,
    read_stored,
    resolve_checkpoint,
    tied_groups,
)
from unimse.config import PMF_SLOTS, UniMSEConfig

logger = logging.getLogger(__name__)

# Config fields that change the text input; a stage-2 model should read text like stage 1 did.
TEXT_FORMAT_FIELDS = ("backbone", "backbone_type", "context_turns", "max_length")


@dataclass(frozen=True)
class InitReport:
    """What :func:`init_from_checkpoint` did."""

    source: Path
    loaded: tuple[str, ...]  # parameter/buffer names copied from the checkpoint
    new: tuple[str, ...]  # names absent from the checkpoint (left at init / pretrained backbone)
    ignored: tuple[str, ...]  # checkpoint names this model has no use for

    def summary(self) -> str:
        new = (name for name in self.new if not name.startswith(BACKBONE_PREFIX))
        top = sorted({name.split(".")[0] for name in new})
        modules = ", ".join(top) or "none"
        return (
            f"initialised from {self.source}: {len(self.loaded)} tensors loaded, "
            f"{len(self.new)} new (not in the checkpoint; new modules: {modules}), "
            f"{len(self.ignored)} checkpoint tensors unused"
        )


def _checkpoint_config(folder: Path) -> UniMSEConfig:
    try:
        return UniMSEConfig.load(folder / CONFIG)
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {folder}: bad {CONFIG}: {exc}") from exc


def init_from_checkpoint(
    model: nn.Module, path: str | Path, exclude: Sequence[str] = ()
) -> InitReport:
    """Copy every checkpoint tensor whose name and shape match into ``model``, except those of the
    modules ``exclude`` names (module paths or globs, as in :func:`apply_train_only`).

    Raises :class:`~unimse.checkpoint.CheckpointError` (one line) when the checkpoint is missing,
    uses another backbone, or holds a tensor of the same name with another shape (a different
    architecture: silently skipping it would leave a trained head at random init).
    """
    folder = resolve_checkpoint(path)
    source_config = _checkpoint_config(folder)
    config: UniMSEConfig = model.config  # type: ignore[assignment]
    if (source_config.backbone, source_config.backbone_type) != (
        config.backbone,
        config.backbone_type,
    ):
        raise CheckpointError(
            f"init_from {folder}: backbone {source_config.backbone!r} "
            f"({source_config.backbone_type}) differs from the config's {config.backbone!r} "
            f"({config.backbone_type})"
        )
    for name in TEXT_FORMAT_FIELDS[2:]:
        if getattr(source_config, name) != getattr(config, name):
            logger.warning(
                "init_from %s: %s is %s there but %s here: the text input format changes",
                folder,
                name,
                getattr(source_config, name),
                getattr(config, name),
            )
    for modality in ("acoustic", "visual"):
        before, after = getattr(source_config, modality), getattr(config, modality)
        loads = not any(_matches(f"fusion.{modality}.x", p) for p in exclude)
        if loads and before is not None and after is not None and before.name != after.name:
            logger.warning(
                "init_from %s: its %s branch was trained on %s features, this config feeds it %s",
                folder,
                modality,
                before.name,
                after.name,
            )
    stored, _ = read_stored(folder)
    stored = {k: v for k, v in stored.items() if not any(_matches(k, p) for p in exclude)}
    own = model.state_dict()
    alias = tied_groups(own)
    for key, value in stored.items():
        if key in own and value.shape != own[key].shape:
            raise CheckpointError(
                f"init_from {folder}: {key} has shape {tuple(value.shape)} there, "
                f"{tuple(own[key].shape)} in the new model"
            )
    matching = {k: v.to(own[k].dtype) for k, v in stored.items() if k in own}
    if not matching:
        raise CheckpointError(f"init_from {folder}: no weight matches the new model")
    model.load_state_dict(matching, strict=False)
    loaded = {k for k in own if k in matching or alias[k] in matching}
    report = InitReport(
        source=folder,
        loaded=tuple(sorted(loaded)),
        new=tuple(k for k in own if k not in loaded),
        ignored=tuple(sorted(set(stored) - set(own))),
    )
    logger.info("%s", report.summary())
    return report


def _matches(name: str, pattern: str) -> bool:
    """``pattern`` names a module (prefix at a dot boundary) or is a glob (``*`` allowed)."""
    return (
        name == pattern
        or name.startswith(pattern + ".")
        or fnmatch.fnmatchcase(name, pattern)
        or fnmatch.fnmatchcase(name, pattern + ".*")
    )


def apply_train_only(model: nn.Module, patterns: Sequence[str]) -> list[str]:
    """Freeze every parameter except those a pattern names; returns the trainable names.

    Patterns are module paths (``fusion``, ``heads``, ``backbone.encoder.layer.5``) or globs
    (``backbone.encoder.layer.*.pmf``). A pattern that names no parameter is an error (a typo
    would otherwise silently freeze the module it meant).
    """
    if not patterns:
        raise ValueError("train_only needs at least one module pattern")
    names = [name for name, _ in model.named_parameters()]
    for pattern in patterns:
        if not any(_matches(name, pattern) for name in names):
            raise ValueError(
                f"train_only pattern {pattern!r} names no parameter of the model "
                "(e.g. 'fusion', 'heads', 'backbone.encoder.layer.*.pmf')"
            )
    trainable = []
    for name, param in model.named_parameters():
        keep = any(_matches(name, pattern) for pattern in patterns)
        param.requires_grad_(keep)
        if keep:
            trainable.append(name)
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info(
        "train_only %s: %d tensors, %d parameters train", list(patterns), len(trainable), count
    )
    return trainable


def freeze_modules(model: nn.Module, patterns: Sequence[str]) -> None:
    """Stop training the parameters that ``patterns`` name (a pattern naming none is an error)."""
    names = [name for name, _ in model.named_parameters()]
    for pattern in patterns:
        if not any(_matches(name, pattern) for name in names):
            raise ValueError(f"freeze pattern {pattern!r} names no parameter of the model")
    for name, param in model.named_parameters():
        if any(_matches(name, pattern) for pattern in patterns):
            param.requires_grad_(False)


def reset_pmf_inputs(model: nn.Module, modalities: Sequence[str]) -> int:
    """Zero the columns of every PMF's ``W_down`` and ``W_o`` that read the named modalities' slots
    (``audio``: a, ``video``: v), so a new encoder for that modality starts with no path into the
    backbone instead of one learnt for the encoder it replaces. Returns the PMF layers touched."""
    from unimse.fusion import PMF

    unknown = set(modalities) - set(PMF_SLOTS)
    if unknown:
        raise ValueError(f"reset_pmf names {sorted(unknown)}; choose from {PMF_SLOTS}")
    pmfs = [module for module in model.modules() if isinstance(module, PMF)]
    with torch.no_grad():
        for module in pmfs:
            for name in modalities:
                module.down.weight[:, module.columns(name)] = 0.0
                module.out.weight[:, module.columns(name)] = 0.0
    return len(pmfs)


def backbone_names_to_store(model: nn.Module, report: InitReport | None) -> set[str]:
    """Backbone tensors a checkpoint of ``model`` must keep although they may be frozen now: those
    loaded from the init checkpoint (stage 1 fine-tuned them, so the installed backbone no longer
    has their values)."""
    if report is None:
        return set()
    return {name for name in report.loaded if name.startswith(BACKBONE_PREFIX)}


def preserve_text_path(model: nn.Module) -> list[torch.Tensor]:
    """Train only what the acoustic/visual inputs pass through, so that every output for an input
    without audio and video stays exactly what ``init_from`` gave.

    PMF computes ``Y = W_o(X + W_up sigmoid(W_down X))`` with ``X = [h; a; v]``. Trainable here: the
    modality LSTMs (``fusion``) and the columns of ``W_down`` and ``W_o`` that read the ``a``/``v``
    slots (gradient masks zero the text columns). For a text-only input ``a = v = 0``, and the
    ``a``/``v`` rows of ``W_up`` and its bias are zero (PMF initialises them to zero and a model
    trained without audio/video never gives them a gradient; checked here), so none of the trained
    columns can act: text-only predictions are unchanged by construction. With audio, ``W_o``
    injects the acoustic vector into every token's hidden state and ``W_down`` lets it gate the
    bottleneck; the backbone, the rest of PMF and the heads stay frozen.

    Returns the masked PMF weights: they must get no weight decay (decay would move their text
    columns too).
    """
    from unimse.fusion import PMF

    for param in model.parameters():
        param.requires_grad_(False)
    fusion = getattr(model, "fusion", None)
    if fusion is None:
        raise ValueError("preserve_text needs a model with modality encoders")
    for param in fusion.parameters():
        param.requires_grad_(True)
    residual = getattr(model, "modality_logits", None)  # zero for a missing modality
    if residual is not None:
        for param in residual.parameters():
            param.requires_grad_(True)
    masked: list[torch.Tensor] = []
    for name, module in model.named_modules():
        if not isinstance(module, PMF):
            continue
        h = module.hidden_size
        if module.up.weight[h:].abs().max() > 0 or module.up.bias[h:].abs().max() > 0:
            raise ValueError(
                f"preserve_text: {name}.up has non-zero audio/video rows (the init checkpoint "
                "was trained with audio or video), so text-only outputs could not be preserved"
            )
        for layer in (module.down, module.out):
            weight = layer.weight
            mask = torch.zeros_like(weight)
            mask[:, h:] = 1.0
            weight.requires_grad_(True)
            weight.register_hook(lambda grad, mask=mask: grad * mask)
            masked.append(weight)
    if not masked:
        raise ValueError("preserve_text needs PMF fusion layers (fusion_layers > 0)")
    logger.info(
        "preserve_text: training the modality LSTMs and the audio/video columns of %d PMF layers",
        len(masked) // 2,
    )
    return masked
