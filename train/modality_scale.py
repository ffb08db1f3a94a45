"""Choosing a modality's weight on dev (``emotrack calibrate --audio-scale / --video-scale``).

Modality scales multiply one branch's encoder output projection by a factor from
:data:`SCALE_GRID`, chosen on dev as the best mean of a criterion (:class:`ScaleCriterion`) that
rewards using the modality and punishes letting it overrule the words. Scale 0 would be text only;
1 leaves the checkpoint as trained.

- Audio: an acoustic branch that misreads a new voice overrules clear words (text + a neutral clip
  of an unseen speaker lost 6-16 WF1 on MELD / IEMOCAP with the first acoustic branch).
  Criterion: :class:`AudioScaleDevData`: the scale that recognises emotional speech of the dev
  speakers best among those that keep MELD / IEMOCAP dev WF1 with a neutral voice within
  :data:`NEUTRAL_VOICE_TOLERANCE` of text only.
- Video: a visual branch can ignore faces (the first one, trained on SIMULATED FER evidence,
  answered neutral for most real CK+ faces) or trust them over clear words (a smiling face turned
  sad sentences into joy). Criterion: :class:`VideoScaleDevData`, on REAL faces of the CK+ dev
  subjects (never trained on): recognising a face beside a neutral sentence against keeping the
  words' label when an unrelated face is shown.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from itertools import zip_longest
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from train.audio_data import AudioSample
from train.audio_datasets import (
    EMODB_SPLITS,
    RAVDESS_SPLITS,
    corpus_folder,
    is_neutral,
    load_audio_corpus,
    neutral_voices,
    select_split,
    speaker_key,
)
from train.audio_eval import audio_metrics, progress_total, with_voice_histories
from train.data import DataError, Sample, load_dataset
from train.evaluate import dataset_metrics, evaluate, predict_samples
from train.face_data import FACE_FRAMES, held_face, load_face_dataset
from unimse.checkpoint import (
    VOICE_READOUT,
    CheckpointError,
)
from unimse.fusion import ModalityEncoder, StatsEncoder
from unimse.inference import EmotionPredictor
from unimse.inputs import ModelInput
from unimse.prediction import Prediction
from unimse.speakers import FIRST_SPEAKER

logger = logging.getLogger(__name__)

SCALE_GRID = (1.0, 0.5, 0.35, 0.25, 0.125)
# Audio: WF1 a neutral voice may cost on MELD / IEMOCAP dev, against text only (scale 0).
NEUTRAL_VOICE_TOLERANCE = 0.5
# Video: WF1 an unrelated face may cost the dev utterances whose words read as an emotion (set
# before the criterion's first scores were read).
FACE_WORDS_TOLERANCE = 2.0
# modality -> the fusion encoder whose output projection a scale multiplies
BRANCHES = {"audio": "acoustic", "video": "visual"}


def projection(modality: str) -> tuple[str, str]:
    """Names of the tensors a ``modality`` scale multiplies."""
    branch = BRANCHES[modality]
    return (f"fusion.{branch}.proj.weight", f"fusion.{branch}.proj.bias")


ACOUSTIC_PROJECTION = projection("audio")
VISUAL_PROJECTION = projection("video")


@dataclass(frozen=True)
class ScaleChoice:
    modality: str  # "audio" or "video"
    scale: float
    # per candidate scale: the criterion's dev scores and their mean (empty for a given factor)
    scores: dict[str, dict[str, float]]


class ScaleCriterion(Protocol):
    """Dev data for one modality's scale, loaded once and scored once per candidate scale."""

    @property
    def size(self) -> int:
        """Predictions one :meth:`scores` call makes (for a progress bar)."""
        ...

    def scores(
        self, predictor: EmotionPredictor, progress: Callable[[int], None] | None = None
    ) -> dict[str, float]: ...

    def pick(self, scores: dict[str, dict[str, float]]) -> str:
        """The chosen grid key, given every candidate's scores."""
        ...

    def reference_scores(self, predictor: EmotionPredictor) -> dict[str, float] | None:
        """The scores at scale 0 (no such modality) if known without a pass over the dev data
        with the branch zeroed, else None."""
        ...


def best_mean(scores: dict[str, dict[str, float]]) -> str:
    """The candidate with the best mean score; ties go to the larger scale."""
    return max(sorted(scores, key=float, reverse=True), key=lambda k: scores[k]["mean"])


def keeps_words(
    scores: dict[str, float], reference: dict[str, float], suffix: str, tolerance: float
) -> bool:
    """Every score named ``*suffix`` (a WF1 of words beside a modality) within ``tolerance`` of
    the same score at the reference scale (0: no audio / no face)."""
    return all(v >= reference[k] - tolerance for k, v in scores.items() if k.endswith(suffix))


# Corpora of emotional speech whose dev speakers the audio scale is chosen on (when present).
AUDIO_DEV_CORPORA = ("ravdess", "emodb")


def readout_fitted_on_dev(folder: Path) -> list[str]:
    """The dev speakers the audio scale is chosen on (:class:`AudioScaleDevData`) that the
    checkpoint's voice readout was fitted on: `emotrack fit-voice` fits every non-test speaker
    but those it held out (its record, :data:`VOICE_READOUT`); none for a voice without one."""
    record = folder / VOICE_READOUT
    if not record.is_file():
        return []
    held = set(json.loads(record.read_text()).get("held_out_speakers", []))
    splits = {"ravdess": RAVDESS_SPLITS, "emodb": EMODB_SPLITS}
    dev = [f"{c}/{s}" for c in AUDIO_DEV_CORPORA for s in splits[c]["dev"]]
    return [speaker for speaker in dev if speaker not in held]


@dataclass(frozen=True)
class AudioScaleDevData:
    """Audio: MELD / IEMOCAP dev WF1 with a neutral clip of an unseen (dev) speaker of any of the
    emotional-speech corpora beside every utterance (speech carrying no emotion should leave the
    words' label alone), and the dev speakers' audio-only UAR of the emotional-speech corpora
    (emotional speech should be recognised). :meth:`pick` takes the best UAR among the scales
    whose neutral-voice WF1 stays within :data:`NEUTRAL_VOICE_TOLERANCE` of text only (scale 0,
    always scored). With ``voice_trust`` each neutral voice comes with its speaker's history
    (:meth:`heard_in_conversation`)."""

    with_neutral_speech: dict[str, list[Sample]]  # meld / iemocap dev, a neutral clip each
    emotional_dev: dict[str, list[AudioSample]]  # corpus -> its dev speakers' files
    neutral_clips: list[np.ndarray]  # dev speakers' neutral voices: utterance i hears i mod n
    neutral_speakers: list[str]  # whose each clip is

    @classmethod
    def load(cls, predictor: EmotionPredictor, data_dir: Path) -> AudioScaleDevData:
        spec = predictor.config.acoustic
        if spec is None:
            raise CheckpointError("audio scale: the checkpoint has no acoustic branch")
        corpora = [c for c in AUDIO_DEV_CORPORA if (data_dir / c).is_dir()]
        if not corpora:
            raise CheckpointError(
                f"audio scale: no emotional-speech corpus ({', '.join(AUDIO_DEV_CORPORA)}) "
                f"in {data_dir}"
            )
        emotional = {
            corpus: select_split(
                load_audio_corpus(corpus, corpus_folder(corpus, data_dir)), corpus, "dev"
            )
            for corpus in corpora
        }
        by_corpus = []
        for dev in emotional.values():
            items = [x for x in dev if is_neutral(x)]  # each voice with its speaker
            voices = neutral_voices(items, spec, predictor.voice_prior)
            by_corpus.append(list(zip(voices, map(speaker_key, items), strict=True)))
        neutral = [  # every dev speaker's neutral voice, interleaved: more voices, fewer quirks
            voice for voices in zip_longest(*by_corpus) for voice in voices if voice is not None
        ]
        paired = {
            dataset: [
                replace(x, acoustic=neutral[i % len(neutral)][0])
                for i, x in enumerate(load_dataset(dataset, "dev", data_dir))
            ]
            for dataset in ("meld", "iemocap")
        }
        clips, speakers = (list(column) for column in zip(*neutral, strict=True))
        return cls(paired, emotional, clips, speakers)

    @property
    def size(self) -> int:
        speech = sum(len(v) for v in self.with_neutral_speech.values())
        return speech + sum(progress_total(c, s) for c, s in self.emotional_dev.items())

    def scores(
        self, predictor: EmotionPredictor, progress: Callable[[int], None] | None = None
    ) -> dict[str, float]:
        heard = self.heard_in_conversation(predictor)
        scores = {
            f"{dataset}_neutral_speech_wf1": evaluate(
                predictor, dataset, samples, progress=progress
            )["wf1"]
            for dataset, samples in heard.items()
        }
        for corpus, samples in self.emotional_dev.items():
            metrics = audio_metrics(corpus, predictor, samples, progress=progress)
            scores[f"{corpus}_audio_uar"] = metrics["audio_uar"]
        return scores

    def heard_in_conversation(self, predictor: EmotionPredictor) -> dict[str, list[Sample]]:
        """The MELD / IEMOCAP dev utterances with their neutral clips; with ``voice_trust`` each
        clip with its speaker's voice history as a conversation gives it, read at the scale in
        place (the leads the trust counts move with the scale)."""
        if not predictor.config.voice_trust:
            return self.with_neutral_speech
        voices = [
            ModelInput(text="", speaker=FIRST_SPEAKER, acoustic=c) for c in self.neutral_clips
        ]
        heard = with_voice_histories(predictor, voices, self.neutral_speakers)
        n = len(heard)
        return {
            dataset: [
                replace(x, voice_history=heard[i % n].voice_history) for i, x in enumerate(samples)
            ]
            for dataset, samples in self.with_neutral_speech.items()
        }

    def pick(self, scores: dict[str, dict[str, float]]) -> str:
        text_only = scores.get(str(0.0))
        if text_only is None:
            return best_mean(scores)

        def speech_uar(key: str) -> float:
            return float(np.mean([v for k, v in scores[key].items() if k.endswith("_audio_uar")]))

        allowed = [
            k
            for k in scores
            if float(k) > 0
            and keeps_words(scores[k], text_only, "_neutral_speech_wf1", NEUTRAL_VOICE_TOLERANCE)
        ]
        if not allowed:
            logger.warning(
                "audio scale: every scale costs a neutral voice > %s WF1; best mean",
                NEUTRAL_VOICE_TOLERANCE,
            )
            return best_mean(scores)
        return max(sorted(allowed, key=float, reverse=True), key=speech_uar)

    def reference_scores(self, predictor: EmotionPredictor) -> dict[str, float] | None:
        return None  # its text-only pass is the zero scale's own


@dataclass(frozen=True)
class VideoScaleDevData:
    """Video, on REAL faces of the CK+ dev subjects (:mod:`train.face_data`; no CK+ dev face is
    trained on, by the FER network of ``emotrack-visual-v2`` or by the face stage):

    - ``ckplus_face_acc``: accuracy over the six shared expressions of every dev face beside the
      neutral sentence (the words say nothing, so this rewards reading the face);
    - ``meld_emotional_words_face_wf1`` / ``iemocap_...``: MELD / IEMOCAP dev WF1 over the
      utterances whose words alone read as an emotion (text-only prediction not neutral), each
      beside a random CK+ dev face unrelated to what is said (this punishes a face that overrules
      words that say something);
    - ``meld_unrelated_face_wf1`` / ``iemocap_...``: the same faces over every dev utterance,
      reported only: an emotional face beside words that read as neutral moves them, which is
      what CK+ asks, so its cost on neutral-labelled utterances cannot count against the face.

    Faces are held 1..12 frames (:func:`train.face_data.eval_frames` for CK+, seeded draws for the
    unrelated ones), read by the checkpoint's own visual feature spec. The grid also scores 0 (no
    face: text only). :meth:`pick`: the best CK+ accuracy among the scales whose emotional-words
    WF1 stays within :data:`FACE_WORDS_TOLERANCE` of text only on each corpus, ties to the
    smaller scale (until 2026-12-05: the best mean of CK+ and the unrelated-face WF1s, which
    pulled against each other once the words read "A: Okay." as surely neutral)."""

    faces: list[Sample]  # CK+ dev faces, neutral sentence
    unrelated_face: dict[str, list[Sample]]  # meld / iemocap dev, a random CK+ dev face each
    emotional_words: dict[str, list[bool]]  # per utterance: its words alone read as an emotion
    text_only: dict[str, list[Prediction]]  # meld / iemocap dev, the words alone

    @classmethod
    def load(cls, predictor: EmotionPredictor, data_dir: Path, seed: int = 0) -> VideoScaleDevData:
        spec = predictor.config.visual
        if spec is None:
            raise CheckpointError("video scale: the checkpoint has no visual branch")
        try:
            faces = load_face_dataset("dev", data_dir, spec, held=True)
        except DataError as exc:
            raise DataError(f"video scale needs the CK+ dev faces: {exc}") from None
        rows = [s.visual[:1] for s in faces if s.visual is not None]
        if not rows:
            raise DataError(f"video scale: no scored CK+ dev face under {data_dir}")
        rng = np.random.default_rng(seed)
        low, high = FACE_FRAMES
        unrelated: dict[str, list[Sample]] = {}
        emotional: dict[str, list[bool]] = {}
        text_only: dict[str, list[Prediction]] = {}
        for dataset in ("meld", "iemocap"):
            dev = load_dataset(dataset, "dev", data_dir)
            text_only[dataset] = predict_samples(predictor, dev)
            emotional[dataset] = [_label(dataset, p) != "neutral" for p in text_only[dataset]]
            unrelated[dataset] = [
                replace(
                    s,
                    visual=held_face(
                        rows[int(rng.integers(len(rows)))], int(rng.integers(low, high + 1))
                    ),
                )
                for s in dev
            ]
        return cls(faces, unrelated, emotional, text_only)

    @property
    def size(self) -> int:
        return len(self.faces) + sum(len(v) for v in self.unrelated_face.values())

    def scores(
        self, predictor: EmotionPredictor, progress: Callable[[int], None] | None = None
    ) -> dict[str, float]:
        faces = evaluate(predictor, "ckplus", self.faces, progress=progress)["acc"]
        preds = {
            dataset: predict_samples(predictor, samples, progress=progress)
            for dataset, samples in self.unrelated_face.items()
        }
        return self._scores(faces, preds)

    def reference_scores(self, predictor: EmotionPredictor) -> dict[str, float]:
        """No face: the CK+ sentence alone and the words' own predictions from :meth:`load`
        (a face scaled by 0 adds nothing, so the zero scale needs no pass with faces)."""
        blank = [replace(s, visual=None) for s in self.faces]
        return self._scores(evaluate(predictor, "ckplus", blank)["acc"], self.text_only)

    def _scores(self, faces_acc: float, preds: dict[str, list[Prediction]]) -> dict[str, float]:
        scores = {"ckplus_face_acc": faces_acc}
        for dataset, samples in self.unrelated_face.items():
            keep = self.emotional_words[dataset]
            scores[f"{dataset}_emotional_words_face_wf1"] = dataset_metrics(
                dataset,
                [s for s, k in zip(samples, keep, strict=True) if k],
                [p for p, k in zip(preds[dataset], keep, strict=True) if k],
            )["wf1"]
            scores[f"{dataset}_unrelated_face_wf1"] = dataset_metrics(
                dataset, samples, preds[dataset]
            )["wf1"]
        return scores

    def pick(self, scores: dict[str, dict[str, float]]) -> str:
        no_face = scores.get(str(0.0))
        if no_face is None:
            return best_mean(scores)

        allowed = [
            k
            for k in scores
            if float(k) > 0
            and keeps_words(scores[k], no_face, "_emotional_words_face_wf1", FACE_WORDS_TOLERANCE)
        ]
        if not allowed:
            smallest = min((k for k in scores if float(k) > 0), key=float)
            logger.warning(
                "video scale: every scale costs emotional words > %s WF1; the smallest, %s",
                FACE_WORDS_TOLERANCE,
                smallest,
            )
            return smallest
        return max(sorted(allowed, key=float), key=lambda k: scores[k]["ckplus_face_acc"])


def _label(dataset: str, prediction: Prediction) -> str:
    return prediction.emotion if dataset == "meld" else prediction.iemocap_emotion


CRITERIA: dict[str, Callable[[EmotionPredictor, Path], ScaleCriterion]] = {
    "audio": AudioScaleDevData.load,
    "video": VideoScaleDevData.load,
}


def _branch_encoder(predictor: EmotionPredictor, modality: str) -> ModalityEncoder | StatsEncoder:
    encoder = getattr(getattr(predictor.model, "fusion", None), BRANCHES[modality], None)
    if not isinstance(encoder, ModalityEncoder | StatsEncoder):
        raise CheckpointError(
            f"{modality} scale: the checkpoint has no {BRANCHES[modality]} branch"
        )
    return encoder


@contextmanager
def scaled_branch(predictor: EmotionPredictor, modality: str, scale: float) -> Iterator[None]:
    """Temporarily multiply ``modality``'s encoder output projection by ``scale``."""
    encoder = _branch_encoder(predictor, modality)
    saved = [t.detach().clone() for t in (encoder.proj.weight, encoder.proj.bias)]
    try:
        with torch.no_grad():
            encoder.proj.weight.mul_(scale)
            encoder.proj.bias.mul_(scale)
        yield
    finally:
        with torch.no_grad():
            encoder.proj.weight.copy_(saved[0])
            encoder.proj.bias.copy_(saved[1])


def scale_scores(
    predictor: EmotionPredictor,
    modality: str,
    criterion: ScaleCriterion,
    scale: float,
    progress: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """``criterion``'s dev scores with ``modality`` scaled by ``scale``, and their mean."""
    with scaled_branch(predictor, modality, scale):
        return with_mean(criterion.scores(predictor, progress))


def with_mean(scores: dict[str, float]) -> dict[str, float]:
    """``scores`` and their mean (``"mean"``)."""
    return {**scores, "mean": float(np.mean(list(scores.values())))}


def select_scale(
    predictor: EmotionPredictor,
    modality: str,
    data_dir: Path,
    grid: Sequence[float] = SCALE_GRID,
    progress: Callable[[int, int], None] | None = None,
) -> ScaleChoice:
    """The grid scale the modality's criterion picks from its dev scores (see
    :class:`AudioScaleDevData`, :class:`VideoScaleDevData`). The grid also scores 0 (text only)
    as the reference. ``progress(done, total)`` is called as predictions are made."""
    _branch_encoder(predictor, modality)
    criterion = CRITERIA[modality](predictor, data_dir)
    if 0.0 not in grid:
        grid = (*grid, 0.0)
    total = criterion.size * len(grid)
    tick = None if progress is None else (lambda k: progress(k, total))
    scores = {}
    for scale in grid:
        known = criterion.reference_scores(predictor) if scale == 0.0 else None
        if known is None:
            scores[str(scale)] = scale_scores(predictor, modality, criterion, scale, tick)
        else:  # the zero scale from what the criterion already read
            scores[str(scale)] = with_mean(known)
            if tick is not None:
                tick(criterion.size)
        logger.info("%s scale %s: %s", modality, scale, scores[str(scale)])
    return ScaleChoice(modality, float(criterion.pick(scores)), scores)


def scale_choice(
    predictor: EmotionPredictor,
    modality: str,
    requested: float | str,
    data_dir: Path,
    progress: Callable[[str, int, int], None] | None,
) -> ScaleChoice:
    if requested == "auto":
        tick = None if progress is None else (lambda k, n: progress(f"{modality} scale", k, n))
        return select_scale(predictor, modality, data_dir, progress=tick)
    factor = float(requested)
    if not 0.0 <= factor <= 1.0:
        raise ValueError(f"{modality} scale must be in [0, 1], got {factor}")
    return ScaleChoice(modality, factor, {})
