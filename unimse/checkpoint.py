"""Checkpoints: safetensors weights + config JSON + label map + metrics. No pickle.

Only weights that are not already in the installed backbone are stored (the heads, the fusion
layers, the LSTMs and the backbone layers training changed), so the shipped default stays small.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from unimse.backbones import is_random_init
from unimse.config import UniMSEConfig
from unimse.factory import build_model
from unimse.output_paths import folder_problem

logger = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
LABELS = "labels.json"
METRICS = "metrics.json"
VOICE_READOUT = "voice_readout.json"  # emotrack fit-voice's record: what it fitted, and on what
DEFAULT = "default"
# State-dict prefix of the backbone's own weights (the installed package can restore them).
BACKBONE_PREFIX = "backbone."


class CheckpointError(RuntimeError):
    pass


def default_checkpoint_dir() -> Path:
    return Path(str(resources.files("unimse") / "checkpoints" / "default"))


def resolve_checkpoint(path: str | Path) -> Path:
    folder = default_checkpoint_dir() if str(path) == DEFAULT else Path(path).expanduser()
    if folder.is_file():
        raise CheckpointError(
            f"checkpoint {folder} is a file; a checkpoint is a folder (holding {CONFIG} and "
            f"{WEIGHTS})"
        )
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {folder}")
    for name in (CONFIG, WEIGHTS):
        if not (folder / name).is_file():
            raise CheckpointError(f"checkpoint {folder} is missing {name}")
    return folder


def check_output_folder(folder: Path, option: str = "--output") -> None:
    """Refuse at once, before any work, an output folder that cannot be made or written in:
    ``folder`` (named by ``option``, e.g. ``--output``) or a folder above it is a file, or the
    nearest existing one is not writable. A missing folder is fine: it is made when written."""
    problem = folder_problem(folder)
    if problem is None:
        return
    part, reason = problem
    if part == folder and reason == "a file":
        message = f"{option} {folder} is a file; give a folder (it is made if missing)"
    elif reason == "a file":
        message = f"{option} {folder}: {part} is a file, not a folder"
    else:
        message = f"{option} {folder}: cannot write in {part}"
    raise CheckpointError(message)


# Temporary siblings of a folder being replaced (see :func:`atomic_folder`): ".NAME.new-..."
# holds the new one while it is written, ".NAME.old-..." the old one between the two renames.
NEW_MARK, OLD_MARK = "new", "old"


def _sibling(folder: Path, mark: str) -> Path:
    return folder.with_name(f".{folder.name}.{mark}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def settle_folder(folder: Path) -> None:
    """Tidy what an interrupted :func:`atomic_folder` left beside ``folder``: where it was
    stopped between its two renames (``folder`` gone, the old one set aside), the old one is put
    back; unfinished new ones are removed."""
    folder = Path(folder)
    if not folder.parent.is_dir():
        return
    old = sorted(folder.parent.glob(f".{folder.name}.{OLD_MARK}-*"), key=os.path.getmtime)
    if old and not folder.exists():
        old.pop().rename(folder)
        logger.warning("%s: put back the complete folder an interrupted write set aside", folder)
    for leftover in [*old, *folder.parent.glob(f".{folder.name}.{NEW_MARK}-*")]:
        shutil.rmtree(leftover)


@contextmanager
def atomic_folder(folder: str | Path) -> Iterator[Path]:
    """Write folder ``folder`` whole or not at all: the block writes into the yielded, fresh
    temporary sibling, which then takes ``folder``'s place by renames (the old one is removed
    only after the new one is in place). Where the block fails or is interrupted, the new one
    is removed and ``folder`` stays as it was; a link to a folder has its target replaced."""
    target = Path(folder)
    if target.is_symlink():
        target = target.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    settle_folder(target)
    staging = _sibling(target, NEW_MARK)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = _sibling(target, OLD_MARK) if target.exists() else None
    if old is not None:
        target.rename(old)
    staging.rename(target)
    if old is not None:
        shutil.rmtree(old)


def read_safetensors(file: Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors of safetensors ``file``, as stored (dtype included), and its metadata: how
    checkpoint, optimizer and FER weights are read. A damaged file (truncated, or not
    safetensors at all) is a one-line :class:`CheckpointError`: "``what`` is damaged (header too
    small)"."""
    try:
        with safe_open(str(file), framework="pt") as f:
            metadata = f.metadata()
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    except SafetensorError as exc:
        reason = str(exc).removeprefix("Error while deserializing header: ")
        raise CheckpointError(f"{what} is damaged ({reason})") from exc
    except OSError as exc:
        raise CheckpointError(f"cannot read {what}: {exc.strerror or exc}") from exc
    return tensors, metadata


def tied_groups(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """Map every state-dict name to the first name sharing its storage (tied weights)."""
    first: dict[tuple[int, int, tuple[int, ...]], str] = {}
    alias: dict[str, str] = {}
    for name, value in state.items():
        key = (value.untyped_storage().data_ptr(), int(value.storage_offset()), tuple(value.shape))
        alias[name] = first.setdefault(key, name)
    return alias


def save_checkpoint(
    model: nn.Module,
    folder: str | Path,
    *,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    half: bool = True,
    keep: Collection[str] = (),
) -> Path:
    """Write the checkpoint folder whole (:func:`atomic_folder`: it replaces any earlier one);
    frozen pretrained backbone weights are left out.

    ``keep`` names backbone tensors to store although they are frozen now (e.g. layers an earlier
    training stage changed, see :mod:`train.staged`).
    """
    with atomic_folder(folder) as staging:
        write_checkpoint(model, staging, metrics=metrics, extra=extra, half=half, keep=keep)
    return Path(folder)


def write_checkpoint(
    model: nn.Module,
    out: Path,
    *,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    half: bool = True,
    keep: Collection[str] = (),
) -> None:
    """:func:`save_checkpoint`'s files, written into folder ``out`` as it is (not atomic: for a
    folder that :func:`atomic_folder` is writing with more files)."""
    config: UniMSEConfig = model.config  # type: ignore[assignment]
    keep_all = is_random_init(config)
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    trainable |= set(keep)
    tensors = {
        name: value.detach()
        for name, value in model.state_dict().items()
        if keep_all or name in trainable or not name.startswith(BACKBONE_PREFIX)
    }
    alias = tied_groups(tensors)
    tensors = {k: v for k, v in tensors.items() if alias[k] == k}  # one copy of tied weights
    stored = {
        k: (v.to(torch.float16) if half and v.is_floating_point() else v).contiguous().cpu()
        for k, v in tensors.items()
    }
    save_file(stored, str(out / WEIGHTS), metadata={"format": "pt", "emotrack": "unimse"})
    config.save(out / CONFIG)
    write_labels(config, out)
    if metrics is not None or extra is not None:
        payload = {"metrics": metrics or {}, **(extra or {})}
        (out / METRICS).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def write_labels(config: UniMSEConfig, folder: Path) -> None:
    """The checkpoint's label map and feature specs (``labels.json``), as ``config`` has them."""
    labels = {
        "polarities": list(config.polarities),
        "meld_emotions": list(config.meld_emotions),
        "iemocap_emotions": list(config.iemocap_emotions),
        "acoustic": None if config.acoustic is None else vars(config.acoustic),
        "visual": None if config.visual is None else vars(config.visual),
    }
    (folder / LABELS).write_text(json.dumps(labels, indent=2) + "\n", encoding="utf-8")


def read_stored(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors a checkpoint folder stores, as stored (dtype included), and their metadata."""
    return read_safetensors(folder / WEIGHTS, f"checkpoint {folder}: {WEIGHTS}")


@contextmanager
def write_derived(
    source: Path,
    output: Path,
    tensors: dict[str, torch.Tensor],
    metadata: dict[str, str],
    skip: Collection[str] = (),
) -> Iterator[Path]:
    """``output``: a copy of checkpoint ``source``'s files (less ``skip``) with ``tensors`` as its
    weights; the commands that derive one checkpoint from another (calibrate, fit-voice) write
    theirs so. Yields the folder being written (:func:`atomic_folder`), for the files the command
    adds or changes; when the block ends it replaces ``output`` whole, so no file of an earlier
    checkpoint there survives."""
    with atomic_folder(output) as staging:
        for item in source.iterdir():
            if item.is_file() and item.name != WEIGHTS and item.name not in skip:
                shutil.copy2(item, staging / item.name)
        save_file(tensors, str(staging / WEIGHTS), metadata=metadata)
        yield staging


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model from its config and the installed backbone, then load stored weights."""
    folder = resolve_checkpoint(path)
    try:
        config = UniMSEConfig.load(folder / CONFIG)
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {folder}: bad {CONFIG}: {exc}") from exc
    stored, _ = read_stored(folder)  # a damaged file fails before the model is built
    model = build_model(config)
    own = model.state_dict()
    alias = tied_groups(own)
    present = set(stored) | {k for k in own if alias[k] in stored}
    unknown = sorted(set(stored) - set(own))
    if unknown:
        raise CheckpointError(f"checkpoint {folder} has weights this model lacks: {unknown[:5]}")
    missing = [k for k in own if k not in present and not k.startswith(BACKBONE_PREFIX)]
    if missing:
        raise CheckpointError(f"checkpoint {folder} lacks weights: {missing[:5]}")
    if is_random_init(config):
        absent = [k for k in own if k not in present]
        if absent:
            raise CheckpointError(f"checkpoint {folder} with a random backbone lacks: {absent[:5]}")
    for key, value in stored.items():
        if value.shape != own[key].shape:
            raise CheckpointError(
                f"checkpoint {folder}: {key} has shape {tuple(value.shape)}, "
                f"model {tuple(own[key].shape)}"
            )
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in stored.items()}, strict=False)
    model.to(device)
    model.eval()
    logger.info("loaded checkpoint %s (%d stored tensors)", folder, len(stored))
    return model


def read_metrics(path: str | Path) -> dict[str, Any]:
    file = resolve_checkpoint(path) / METRICS
    return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}
