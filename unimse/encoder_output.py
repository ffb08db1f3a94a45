"""What one Whisper encoder pass gives when its inner layers are tapped (numpy only, so that the
light :mod:`unimse.whisper` and the torch :mod:`unimse.whisper_encoder` can both name it)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EncoderOutput:
    """One encoder pass over a batch of windows: ``final`` (B, T, d), what the decoder reads, and
    ``taps`` (B, T, d * len(layers)), the chosen layers' states side by side per frame."""

    final: np.ndarray
    taps: np.ndarray
