"""Per-epoch training views: modality dropout and SIMULATED visual evidence.

Both are redrawn every epoch from a seeded generator, so a run is reproducible and every sample
is seen in several modality combinations over training:

- Modality dropout: a sample with audio *and* words has its words blanked (utterance text ``""``;
  the past turns are kept) with probability ``modality_dropout``, so text + audio and audio only
  both occur (text only comes from the text datasets, which have no live-computable audio).
- Neutral-prosody pairing: a text sample of a dataset listed in ``[data] neutral_audio`` (words,
  no audio) gets, with that dataset's probability, the acoustic features of a random neutral
  training clip of the audio corpora, its label unchanged. Without it the fused text + audio
  path is only ever trained where the words carry no emotion (EMO-DB's fixed sentences), and the
  audio learns to overrule any text. With ``[data] neutral_audio_tts`` a share of the pairings
  uses the sample's own words spoken by espeak-ng instead (:mod:`train.tts_audio`).
- Simulated visual (:mod:`train.simulated_visual`): a sample of a dataset listed in
  ``[data] simulated_visual`` whose gold emotion has a facial counterpart gets, with that
  dataset's probability, a simulated FER probability sequence; otherwise no video.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from train.data import AUDIO_DATASETS
from train.simulated_visual import SimulatedVisualOptions, expression_of, simulate_fer_sequence
from train.unification import UnifiedSample
from unimse.inputs import ModelInput

logger = logging.getLogger(__name__)

Encoded = tuple[list[int], int, int]


@dataclass(frozen=True)
class EpochView:
    inputs: list[ModelInput]
    encoded: list[Encoded]
    text_blanked: int = 0
    simulated_visual: int = 0
    neutral_audio: int = 0


@dataclass
class EpochAugmenter:
    """Builds each epoch's inputs from the fixed training samples (see the module docstring)."""

    inputs: list[ModelInput]
    encoded: list[Encoded]
    modality_dropout: float = 0.0
    # index -> (input with the words blanked, its token ids); only samples with audio and words
    blanked: dict[int, tuple[ModelInput, Encoded]] = field(default_factory=dict)
    # index -> (gold expression, probability of attaching a simulated visual sequence)
    visual: dict[int, tuple[str, float]] = field(default_factory=dict)
    options: SimulatedVisualOptions = field(default_factory=SimulatedVisualOptions)
    # index -> probability of pairing with a neutral clip; the clips' feature sequences
    neutral: dict[int, float] = field(default_factory=dict)
    neutral_clips: list[np.ndarray] = field(default_factory=list)
    # index -> the sample's own words as neutral synthetic speech; used for a share of pairings
    spoken: dict[int, np.ndarray] = field(default_factory=dict)
    spoken_share: float = 0.0

    @classmethod
    def build(
        cls,
        samples: Sequence[UnifiedSample],
        inputs: list[ModelInput],
        encoded: list[Encoded],
        encode: Callable[[ModelInput], Encoded],
        *,
        modality_dropout: float = 0.0,
        simulated_visual: dict[str, float] | None = None,
        uses_visual: bool = False,
        neutral_audio: dict[str, float] | None = None,
        spoken_share: float = 0.0,
        speak: Callable[[list[str]], list[np.ndarray | None]] | None = None,
    ) -> EpochAugmenter:
        if not 0.0 <= modality_dropout <= 1.0:
            raise ValueError("modality_dropout must be in [0, 1]")
        blanked: dict[int, tuple[ModelInput, Encoded]] = {}
        if modality_dropout > 0:
            for i, item in enumerate(inputs):
                if item.acoustic is not None and item.text.strip():
                    quiet = replace(item, text="")
                    blanked[i] = (quiet, encode(quiet))
        visual: dict[int, tuple[str, float]] = {}
        chances = simulated_visual or {}
        if chances and not uses_visual:
            raise ValueError("simulated_visual needs a model with a visual feature spec")
        for i, unified in enumerate(samples):
            s = unified.sample
            p = chances.get(s.dataset, 0.0)
            if p <= 0:
                continue
            expression = expression_of(s.dataset, s.meld_emotion, s.iemocap_emotion)
            if expression is not None:
                visual[i] = (expression, p)
        neutral, clips = cls._neutral_pairing(samples, inputs, neutral_audio or {})
        spoken: dict[int, np.ndarray] = {}
        if neutral and spoken_share > 0:
            if speak is None:
                raise ValueError("neutral_audio_tts needs a speech synthesiser")
            order = sorted(neutral)
            for i, features in zip(order, speak([inputs[i].text for i in order]), strict=True):
                if features is not None:
                    spoken[i] = features
        if blanked:
            logger.info(
                "modality dropout %.2f over %d samples with audio and words",
                modality_dropout,
                len(blanked),
            )
        if visual:
            logger.info("SIMULATED visual sequences possible for %d training samples", len(visual))
        if neutral:
            logger.info(
                "neutral-prosody pairing possible for %d text samples (%d neutral clips)",
                len(neutral),
                len(clips),
            )
        return cls(
            inputs,
            encoded,
            modality_dropout,
            blanked,
            visual,
            neutral=neutral,
            neutral_clips=clips,
            spoken=spoken,
            spoken_share=spoken_share,
        )

    @staticmethod
    def _neutral_pairing(
        samples: Sequence[UnifiedSample], inputs: Sequence[ModelInput], chances: dict[str, float]
    ) -> tuple[dict[int, float], list[np.ndarray]]:
        if not chances:
            return {}, []
        clips = [
            item.acoustic
            for unified, item in zip(samples, inputs, strict=True)
            if item.acoustic is not None
            and unified.sample.dataset in AUDIO_DATASETS
            and unified.meld_emotion == "neutral"
            and not item.text.strip()
        ]
        if not clips:
            raise ValueError("neutral_audio: the audio corpora have no neutral training clip")
        eligible = {
            i: chances[unified.sample.dataset]
            for i, (unified, item) in enumerate(zip(samples, inputs, strict=True))
            if chances.get(unified.sample.dataset, 0.0) > 0
            and item.acoustic is None
            and item.text.strip()
        }
        return eligible, clips

    def epoch(self, seed: int) -> EpochView:
        if not self.blanked and not self.visual and not self.neutral:
            return EpochView(self.inputs, self.encoded)
        rng = np.random.default_rng([seed, 7919])
        inputs = list(self.inputs)
        encoded = list(self.encoded)
        dropped = 0
        for i in sorted(self.blanked):
            if rng.random() < self.modality_dropout:
                inputs[i], encoded[i] = self.blanked[i]
                dropped += 1
        simulated = 0
        for i in sorted(self.visual):
            expression, chance = self.visual[i]
            if rng.random() < chance:
                inputs[i] = replace(
                    inputs[i], visual=simulate_fer_sequence(expression, rng, self.options)
                )
                simulated += 1
        paired = 0
        for i in sorted(self.neutral):
            if rng.random() < self.neutral[i]:
                clip = self.neutral_clips[int(rng.integers(len(self.neutral_clips)))]
                if i in self.spoken and rng.random() < self.spoken_share:
                    clip = self.spoken[i]
                inputs[i] = replace(inputs[i], acoustic=clip)
                paired += 1
        return EpochView(inputs, encoded, dropped, simulated, paired)
