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
- Held faces: every CK+ training sample (:mod:`train.face_data`, one FER row of a real face) is
  held for a random number of frames in :data:`~train.face_data.FACE_FRAMES` (1..12), redrawn each
  epoch: live utterances carry a few to a dozen frames of the same face, and the visual LSTM
  should read it whatever the count.
- Unrelated real faces: a text sample of a dataset listed in ``[data] unrelated_face`` whose own
  label is not neutral (its words carry the emotion) gets, with that dataset's probability, the
  face of a random CK+ training image (held 1..12 frames), its label unchanged, so a face does not
  overrule clear words. Samples labelled neutral are left without a face: "neutral words, angry
  face" is anger, which is what the CK+ samples teach.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from train.data import AUDIO_DATASETS, FACE_DATASETS, Sample
from train.face_data import FACE_FRAMES, held_face
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
    held_faces: int = 0
    unrelated_faces: int = 0


def words_carry_emotion(sample: Sample) -> bool:
    """Whether a text sample's own annotation is not neutral (MELD / IEMOCAP emotion; MOSI
    polarity)."""
    own = sample.meld_emotion or sample.iemocap_emotion
    if own is not None:
        return own != "neutral"
    return sample.polarity not in (None, "neutral")


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
    # index -> the (1, 7) feature row of a CK+ training face, held for FACE_FRAMES frames
    faces: dict[int, np.ndarray] = field(default_factory=dict)
    # index -> probability of attaching an unrelated CK+ face; the pool of face rows
    unrelated: dict[int, float] = field(default_factory=dict)
    face_pool: list[np.ndarray] = field(default_factory=list)

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
        neutral_clips: Sequence[np.ndarray] | None = None,
        spoken_share: float = 0.0,
        speak: Callable[[list[str]], list[np.ndarray | None]] | None = None,
        unrelated_face: dict[str, float] | None = None,
    ) -> EpochAugmenter:
        """``neutral_clips``: the voices paired with words under ``neutral_audio`` (default: the
        neutral audio-only training clips among ``inputs``)."""
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
        if neutral and neutral_clips is not None:
            clips = list(neutral_clips)
        spoken: dict[int, np.ndarray] = {}
        if neutral and spoken_share > 0:
            if speak is None:
                raise ValueError("neutral_audio_tts needs a speech synthesiser")
            order = sorted(neutral)
            for i, features in zip(order, speak([inputs[i].text for i in order]), strict=True):
                if features is not None:
                    spoken[i] = features
        faces: dict[int, np.ndarray] = {}
        for i, unified in enumerate(samples):
            face = inputs[i].visual
            if unified.sample.dataset in FACE_DATASETS and face is not None:
                faces[i] = face[:1]
        unrelated = cls._unrelated_pairing(samples, inputs, unrelated_face or {})
        if unrelated and not faces:
            raise ValueError("unrelated_face: no CK+ training face to attach (add 'ckplus')")
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
        if faces:
            logger.info("%d real faces held for %d-%d frames per epoch", len(faces), *FACE_FRAMES)
        if unrelated:
            logger.info(
                "unrelated real faces possible for %d text samples whose words carry an emotion",
                len(unrelated),
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
            faces=faces,
            unrelated=unrelated,
            face_pool=list(faces.values()),
        )

    @staticmethod
    def _unrelated_pairing(
        samples: Sequence[UnifiedSample], inputs: Sequence[ModelInput], chances: dict[str, float]
    ) -> dict[int, float]:
        if not chances:
            return {}
        return {
            i: chances[unified.sample.dataset]
            for i, (unified, item) in enumerate(zip(samples, inputs, strict=True))
            if chances.get(unified.sample.dataset, 0.0) > 0
            and item.visual is None
            and item.text.strip()
            and words_carry_emotion(unified.sample)
        }

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
        if not (self.blanked or self.visual or self.neutral or self.faces or self.unrelated):
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
        low, high = FACE_FRAMES
        for i in sorted(self.faces):
            frames = int(rng.integers(low, high + 1))
            inputs[i] = replace(inputs[i], visual=held_face(self.faces[i], frames))
        unrelated = 0
        for i in sorted(self.unrelated):
            if rng.random() < self.unrelated[i]:
                face = self.face_pool[int(rng.integers(len(self.face_pool)))]
                frames = int(rng.integers(low, high + 1))
                inputs[i] = replace(inputs[i], visual=held_face(face, frames))
                unrelated += 1
        return EpochView(inputs, encoded, dropped, simulated, paired, len(self.faces), unrelated)
