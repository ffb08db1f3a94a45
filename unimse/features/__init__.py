"""Live-computable feature extractors, shared by training and real-time inference.

- ``emotrack-acoustic-v1`` (64-d, 50 frames/s): MFCCs and deltas, energy, spectral shape, pitch
  and periodicity from 16 kHz utterance audio; see :mod:`unimse.features.acoustic`.
- ``whisper-tiny.en-v1`` (384-d) and ``whisper-base-v1`` (512-d), 50 frames/s: the Whisper
  encoder states of the utterance's frames (:mod:`unimse.whisper`). Live, the ASR stage
  hands them over from its own encoder pass when it runs the same model.
- ``whisper-tiny.en-mid-v2`` (768-d, 50 frames/s): the states of ``tiny.en``'s two middle
  encoder layers (blocks 1 and 2 of 0-3) side by side, from the same single encoder pass
  (:mod:`unimse.whisper_encoder`); emotion is clearer there than in the last layer.
- ``emotrack-visual-v1`` (7-d, one row per frame with a face): FER-2013 expression probabilities
  of the largest face, in MELD emotion order; see :mod:`unimse.features.visual`.
- ``emotrack-visual-v2`` (7-d, the same rows and order): the same network fine-tuned on CK+
  training subjects (``fer_mini_xception_ckplus.safetensors``: FER-2013 base, CK+ fine-tuning,
  research use only under the CK+ agreement; see :mod:`unimse.features.visual` and
  ``unimse/features/weights/README.md``).

Look extractors up by the :class:`~unimse.config.FeatureSpec` stored in a checkpoint's config; an
unknown name or a dimension that differs from the extractor's raises ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from unimse.config import FeatureSpec
from unimse.features.acoustic import ACOUSTIC_DIM, ACOUSTIC_V1, SAMPLE_RATE, emotrack_acoustic_v1
from unimse.features.visual import (
    DEFAULT_MAX_FRAMES,
    VISUAL_DIM,
    VISUAL_V1,
    VISUAL_V2,
    FaceBox,
    VisualExtractor,
    VisualFeatures,
)
from unimse.whisper import WhisperStates

ACOUSTIC_SPEC = FeatureSpec(ACOUSTIC_V1, ACOUSTIC_DIM)
VISUAL_SPEC = FeatureSpec(VISUAL_V1, VISUAL_DIM)
VISUAL_SPEC_V2 = FeatureSpec(VISUAL_V2, VISUAL_DIM)

_ACOUSTIC: dict[str, tuple[int, Callable[[np.ndarray], np.ndarray]]] = {
    ACOUSTIC_V1: (ACOUSTIC_DIM, emotrack_acoustic_v1),
}


class WhisperFeature(NamedTuple):
    """Whisper encoder states: the model, the state dimension, and the encoder layers read
    (None: the last layer, as CTranslate2 returns it)."""

    model: str
    dim: int
    layers: tuple[int, ...] | None = None


WHISPER_SPECS: dict[str, WhisperFeature] = {
    "whisper-tiny.en-v1": WhisperFeature("tiny.en", 384),
    "whisper-base-v1": WhisperFeature("base", 512),
    "whisper-tiny.en-mid-v2": WhisperFeature("tiny.en", 768, (1, 2)),
}
_WHISPER_EXTRACTORS: dict[str, WhisperStates] = {}


def whisper_feature_of(spec: FeatureSpec | None) -> WhisperFeature | None:
    """The Whisper encoder states ``spec`` names (None for other features)."""
    if spec is None:
        return None
    return WHISPER_SPECS.get(spec.name)


def acoustic_extractor(spec: FeatureSpec) -> Callable[[np.ndarray], np.ndarray]:
    """The function mapping 16 kHz mono float32 utterance audio to a (T, spec.dim) float32 array.

    Whisper extractors are shared per spec (one loaded encoder each, loaded on first use)."""
    if spec.name in WHISPER_SPECS:
        model, dim, layers = WHISPER_SPECS[spec.name]
        if spec.dim != dim:
            raise ValueError(
                f"acoustic feature {spec.name!r} has dimension {dim}, spec says {spec.dim}"
            )
        if spec.name not in _WHISPER_EXTRACTORS:
            _WHISPER_EXTRACTORS[spec.name] = WhisperStates(model, dim, layers=layers)
        return _WHISPER_EXTRACTORS[spec.name]
    if spec.name not in _ACOUSTIC:
        known = sorted([*_ACOUSTIC, *WHISPER_SPECS])
        raise ValueError(f"unknown acoustic feature spec {spec.name!r}; known: {known}")
    dim, function = _ACOUSTIC[spec.name]
    if spec.dim != dim:
        raise ValueError(
            f"acoustic feature {spec.name!r} has dimension {dim}, spec says {spec.dim}"
        )
    return function


def visual_extractor(
    spec: FeatureSpec,
    *,
    weights: str | Path | None = None,
    max_frames: int | None = DEFAULT_MAX_FRAMES,
) -> VisualExtractor:
    """A :class:`VisualExtractor` for ``spec`` (loads the spec's shipped FER weights: FER-2013 for
    v1, CK+-fine-tuned for v2; or ``weights``); an unknown spec is a ``ValueError``."""
    return VisualExtractor(spec, weights=weights, max_frames=max_frames)


__all__ = [
    "ACOUSTIC_SPEC",
    "SAMPLE_RATE",
    "VISUAL_SPEC",
    "VISUAL_SPEC_V2",
    "FaceBox",
    "VisualExtractor",
    "VisualFeatures",
    "WhisperFeature",
    "acoustic_extractor",
    "visual_extractor",
    "whisper_feature_of",
]
