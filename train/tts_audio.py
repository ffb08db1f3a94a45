"""Neutral synthetic speech of a sample's own words (espeak-ng), for neutral-prosody pairing.

espeak-ng speaks with rule-based, emotionless prosody. A text sample paired with its own words
spoken that way keeps its text label, which teaches the fused text + audio path that an unfamiliar
voice or channel is not evidence of an emotion (see :mod:`train.augment`). Voice and speaking rate
vary by text; features are cached under ``~/.cache/emotrack/tts`` keyed by text, voice, rate and
feature spec.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from train.array_cache import save_array
from train.unification import DEFAULT_CACHE
from unimse.config import FeatureSpec
from unimse.synth import DEFAULT_VOICES, SynthesisError, speak, speech_bounds

logger = logging.getLogger(__name__)

RATES = (140, 155, 170, 185)  # words per minute


def voice_and_rate(text: str) -> tuple[str, int]:
    digest = int(hashlib.sha1(text.encode("utf-8")).hexdigest()[:8], 16)
    return DEFAULT_VOICES[digest % len(DEFAULT_VOICES)], RATES[(digest >> 4) % len(RATES)]


def _spoken_features(
    text: str, spec: FeatureSpec, extract: Callable[[np.ndarray], np.ndarray], cache: Path | None
) -> np.ndarray | None:
    voice, rate = voice_and_rate(text)
    key = hashlib.sha1(f"{spec.name}|{voice}|{rate}|{text}".encode()).hexdigest()[:20]
    path = None if cache is None else cache / "tts" / f"{key}.npy"
    if path is not None and path.is_file():
        cached = np.load(path, allow_pickle=False)
        if cached.ndim == 2 and cached.shape[1] == spec.dim:
            return cached
    audio = speak(text, voice, words_per_minute=rate)
    try:
        first, last = speech_bounds(audio)
    except SynthesisError:  # nothing audible (e.g. the text is only punctuation)
        return None
    features = np.asarray(extract(audio[first:last]), dtype=np.float32)
    if path is not None:
        save_array(path, features)
    return features


def tts_features(
    texts: Sequence[str],
    spec: FeatureSpec,
    extract: Callable[[np.ndarray], np.ndarray],
    cache: Path | None = DEFAULT_CACHE,
    workers: int = 2,
) -> list[np.ndarray | None]:
    """Acoustic features of each text spoken by espeak-ng; None where nothing is audible.

    Raises :class:`~unimse.synth.SynthesisError` when espeak-ng is missing or fails."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_spoken_features, t, spec, extract, cache) for t in texts]
        try:
            result = [f.result() for f in futures]
        except SynthesisError:
            for f in futures:
                f.cancel()
            raise
    logger.info(
        "neutral synthetic speech: %d utterances (%d inaudible)",
        len(result),
        sum(r is None for r in result),
    )
    return result
