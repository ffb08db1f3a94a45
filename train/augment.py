"""Per-epoch training views: modality dropout and SIMULATED visual evidence.

Both are redrawn every epoch from a seeded generator, so a run is reproducible and every sample
is seen in several modality combinations over training:

- Modality dropout: a sample with audio *and* words has its words blanked (utterance text ``""``;
  the past turns are kept) with probability ``modality_dropout``, so text + audio and audio only
  both occur (text only comes from the text datasets, which have no live-computable audio).
- Simulated visual (:mod:`train.simulated_visual`): a sample of a dataset listed in
  ``[data] simulated_visual`` whose gold emotion has a facial counterpart gets, with that
  dataset's probability, a simulated FER probability sequence; otherwise no video.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

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
        if blanked:
            logger.info(
                "modality dropout %.2f over %d samples with audio and words",
                modality_dropout,
                len(blanked),
            )
        if visual:
            logger.info("SIMULATED visual sequences possible for %d training samples", len(visual))
        return cls(inputs, encoded, modality_dropout, blanked, visual)

    def epoch(self, seed: int) -> EpochView:
        if not self.blanked and not self.visual:
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
        return EpochView(inputs, encoded, dropped, simulated)
