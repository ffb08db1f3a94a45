"""Emotional speech for the acoustic branch: EMO-DB and speech_av, in the universal label space.

Both loaders return :class:`AudioSample` objects holding 16 kHz mono float32 audio and a
:class:`~unimse.labels.UniversalLabel` (``polarity,score,meld_emotion,iemocap_emotion``).

EMO-DB mapping (:data:`unimse.labels.EMODB_LABELS`, beside the rest of the label space, since
the model's joint EMO-DB loss reads it). EMO-DB is acted German speech in 7 categories; the
universal space has a sentiment polarity, a score in [-3, 3] (CMU-MOSI scale) and the MELD and
IEMOCAP emotion vocabularies. Scores are a fixed valence-based choice, not a measurement: the acted
emotions are prototypical, so the negative ones get -2.0 (fear -1.6, more arousal than
displeasure), happiness +2.0, neutral 0.0.

- anger -> negative, -2.0, anger, angry
- disgust -> negative, -2.0, disgust, frustrated (IEMOCAP has no disgust; frustration is its
  negative, moderately aroused, non-angry class)
- fear -> negative, -1.6, fear, frustrated (IEMOCAP has no fear; same reasoning)
- happiness -> positive, 2.0, joy, happy
- sadness -> negative, -2.0, sadness, sad
- neutral -> neutral, 0.0, neutral, neutral
- boredom -> negative, -0.8, neutral, neutral. Boredom is low-arousal and mildly unpleasant, so the
  polarity is negative with low intensity. Neither vocabulary has boredom. Sadness is the other
  low-arousal negative class, but boredom carries no loss or distress, and MELD and IEMOCAP
  annotators label flat, disengaged speech neutral; acoustically, boredom in EMO-DB is confused
  mostly with neutral. Teaching the acoustic branch "sadness" for monotone speech would mislabel
  ordinary calm speech later.

Every EMO-DB class stays recoverable from a universal label (:func:`emodb_class_of`): the MELD
emotion names six of them, and polarity separates boredom (negative) from neutral (neutral). A
model's prediction is read back jointly (:func:`emodb_class_of_prediction`): the class whose
polarity and emotion are most probable together.

speech_av mapping. Valence v in [-1, 1] becomes score 3v (same scale as MOSI); |v| < 0.1 is
neutral with score 0.0, as neutral is everywhere else in the label space. The corpus has no
emotion categories, so they are derived from the valence/arousal quadrant of the circumplex
model: pleasant+aroused -> joy/excited, pleasant+calm -> joy/happy, unpleasant+aroused ->
anger/angry, unpleasant+calm -> sadness/sad, neutral -> neutral/neutral. All speech_av samples
have ``derived_emotion=True``, so training can give those fields a lower weight (like borrowed
labels).
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

from train.acted_labels import ACTED_LABELS
from unimse.labels import EMODB_JOINT_CLASSES, EMODB_LABELS, UniversalLabel
from unimse.prediction import Prediction

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
_TINY = 1e-12  # floor under a probability before its log
EMODB = "emodb"
SPEECH_AV = "speech_av"
RAVDESS = "ravdess"
# The language each speech corpus is spoken in (what a live transcript would say of it).
CORPUS_LANGUAGES: dict[str, str] = {EMODB: "de", RAVDESS: "en", SPEECH_AV: "en"}
EMODB_CODES: dict[str, str] = {
    "W": "anger",
    "L": "boredom",
    "E": "disgust",
    "A": "fear",
    "F": "happiness",
    "T": "sadness",
    "N": "neutral",
}
EMODB_CLASSES: tuple[str, ...] = tuple(EMODB_CODES.values())
VALENCE_NEUTRAL_BAND = 0.1

# RAVDESS emotion codes (3rd field of ``03-01-EE-II-SS-RR-NN``).
RAVDESS_CODES: dict[str, str] = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
# RAVDESS's eight names -> MELD emotion (calm counts as neutral); labels from train.acted_labels.
RAVDESS_MELD: dict[str, str] = {
    "neutral": "neutral",
    "calm": "neutral",
    "happy": "joy",
    "sad": "sadness",
    "angry": "anger",
    "fearful": "fear",
    "disgust": "disgust",
    "surprised": "surprise",
}
RAVDESS_LABELS: dict[str, UniversalLabel] = {
    name: ACTED_LABELS[meld] for name, meld in RAVDESS_MELD.items()
}
RAVDESS_STATEMENTS: dict[str, str] = {
    "01": "Kids are talking by the door.",
    "02": "Dogs are sitting by the door.",
}
# Leading/trailing silence is cut as a live VAD would (its 0.3 s pre-roll kept on both sides).
SPEECH_TRIM_DB = 35.0
SPEECH_MARGIN_S = 0.3


@dataclass(frozen=True)
class AudioSample:
    """One utterance of emotional speech with its universal label.

    ``emotion`` is the corpus' own category (EMO-DB, in English), ``valence``/``arousal`` its
    dimensional annotation (speech_av); ``derived_emotion`` is true when the label's emotion fields
    were inferred from valence/arousal rather than annotated.
    """

    id: str
    speaker: str
    audio: np.ndarray = field(compare=False, repr=False)  # float32, 16 kHz mono
    label: UniversalLabel
    dataset: str
    emotion: str | None = None
    valence: float | None = None
    arousal: float | None = None
    derived_emotion: bool = False

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def emodb_class_of(label: UniversalLabel) -> str:
    """The EMO-DB class a universal label stands for (inverse of :data:`EMODB_LABELS`)."""
    by_meld = {
        "anger": "anger",
        "disgust": "disgust",
        "fear": "fear",
        "joy": "happiness",
        "sadness": "sadness",
    }
    if label.meld_emotion in by_meld:
        return by_meld[label.meld_emotion]
    if label.meld_emotion == "surprise":  # not an EMO-DB class: decide by polarity
        return "happiness" if label.polarity == "positive" else "fear"
    return "boredom" if label.polarity == "negative" else "neutral"


def emodb_class_of_prediction(prediction: Prediction) -> str:
    """The EMO-DB class a prediction stands for: the class whose (polarity, MELD emotion) pair has
    the highest joint log-probability under the two heads. Unlike :func:`emodb_class_of` on the
    argmax label, this is the decision the joint class loss (``emodb_joint``) trains for."""
    scores = {
        name: math.log(max(prediction.polarity_probs[polarity], _TINY))
        + math.log(max(prediction.emotion_probs[emotion], _TINY))
        for name, (polarity, emotion) in EMODB_JOINT_CLASSES.items()
    }
    return max(scores, key=scores.__getitem__)


def read_audio(path: Path, *, trim_zero_padding: bool = False) -> np.ndarray:
    """A wav file as 16 kHz mono float32 (resampled with soxr); a one-line error if unreadable."""
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as error:
        raise ValueError(f"cannot read audio file {path}: {error}") from None
    audio = audio.mean(axis=1)
    if trim_zero_padding:
        nonzero = np.flatnonzero(audio)
        audio = audio[nonzero[0] : nonzero[-1] + 1] if len(nonzero) else audio[:0]
    if len(audio) == 0:
        raise ValueError(f"audio file {path} holds no sound")
    if rate != SAMPLE_RATE:
        audio = librosa.resample(audio, orig_sr=rate, target_sr=SAMPLE_RATE, res_type="soxr_hq")
    return np.ascontiguousarray(audio, dtype=np.float32)


def trim_silence(audio: np.ndarray) -> np.ndarray:
    """``audio`` without the silence before and after the speech, keeping a VAD-like margin."""
    _, (start, end) = librosa.effects.trim(audio, top_db=SPEECH_TRIM_DB)
    margin = int(SPEECH_MARGIN_S * SAMPLE_RATE)
    if end <= start:
        return audio
    return np.ascontiguousarray(audio[max(0, start - margin) : end + margin])


def ravdess_fields(name: str) -> tuple[str, str, str]:
    """(emotion, statement code, actor) of a RAVDESS file stem ``03-01-EE-II-SS-RR-NN``."""
    parts = name.split("-")
    if len(parts) != 7 or parts[2] not in RAVDESS_CODES or not all(p.isdigit() for p in parts):
        raise ValueError(
            f"{name}: not a RAVDESS file name (MM-CC-EE-II-SS-RR-NN with emotion EE 01-08, "
            "e.g. 03-01-05-02-01-01-07.flac)"
        )
    return RAVDESS_CODES[parts[2]], parts[4], parts[6]


def load_ravdess(data_dir: str | Path) -> list[AudioSample]:
    """RAVDESS speech clips under ``data_dir`` (``Actor_NN/*.flac`` or ``*.wav``), sorted by name.

    The speaker is the actor number (last name field); silence around the speech is trimmed
    (:func:`trim_silence`). The transcript is the statement the name's SS field names.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"RAVDESS folder not found: {data_dir}")
    files = sorted(
        (p for p in data_dir.rglob("*") if p.suffix.lower() in (".flac", ".wav")),
        key=lambda p: p.name,
    )
    if not files:
        raise FileNotFoundError(f"no .flac or .wav files under the RAVDESS folder {data_dir}")
    samples = []
    for path in files:
        emotion, _, actor = ravdess_fields(path.stem)
        samples.append(
            AudioSample(
                id=path.stem,
                speaker=actor,
                audio=trim_silence(read_audio(path)),
                label=RAVDESS_LABELS[emotion],
                dataset=RAVDESS,
                emotion=emotion,
            )
        )
    logger.info("loaded %d RAVDESS clips from %s", len(samples), data_dir)
    return samples


def ravdess_transcript(file_id: str) -> str:
    return RAVDESS_STATEMENTS.get(ravdess_fields(file_id)[1], "")


def _wav_files(data_dir: Path, corpus: str) -> list[Path]:
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{corpus} folder not found: {data_dir}")
    files = sorted(p for p in data_dir.iterdir() if p.suffix.lower() == ".wav")
    if not files:
        raise FileNotFoundError(f"no .wav files in the {corpus} folder {data_dir}")
    return files


def load_emodb(data_dir: str | Path) -> list[AudioSample]:
    """All EMO-DB-named wav files in ``data_dir`` (e.g. ``../shared/data/emodb``), sorted by name.

    Name ``SSTTTEV.wav``: speaker SS, text TTT, emotion code E (6th character), version V. The
    zero padding of the shared copy (files padded to 2.0 s) is trimmed, since live utterances never
    contain digital silence; the 22,050 Hz audio is resampled to 16 kHz.
    """
    samples = []
    for path in _wav_files(Path(data_dir), "EMO-DB"):
        code = path.stem[5:6]
        if len(path.stem) < 6 or code not in EMODB_CODES:
            raise ValueError(
                f"{path.name}: not an EMO-DB file name (6th character must be one of "
                f"{''.join(EMODB_CODES)}, e.g. 03a01Wa.wav)"
            )
        emotion = EMODB_CODES[code]
        samples.append(
            AudioSample(
                id=path.stem,
                speaker=path.stem[:2],
                audio=read_audio(path, trim_zero_padding=True),
                label=EMODB_LABELS[emotion],
                dataset=EMODB,
                emotion=emotion,
            )
        )
    logger.info("loaded %d EMO-DB utterances from %s", len(samples), data_dir)
    return samples


def speech_av_label(valence: float, arousal: float) -> UniversalLabel:
    """Universal label of a valence/arousal pair in [-1, 1] (see the module docstring)."""
    if abs(valence) < VALENCE_NEUTRAL_BAND:
        return UniversalLabel("neutral", 0.0, "neutral", "neutral")
    if valence > 0:
        return UniversalLabel(
            "positive", round(3.0 * valence, 2), "joy", "excited" if arousal > 0 else "happy"
        )
    return UniversalLabel(
        "negative",
        round(3.0 * valence, 2),
        "anger" if arousal > 0 else "sadness",
        "angry" if arousal > 0 else "sad",
    )


def _read_ratings(path: Path) -> dict[str, float]:
    if not path.is_file():
        raise FileNotFoundError(f"speech_av ratings file not found: {path}")
    ratings: dict[str, float] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or not "".join(row).strip():
                continue
            try:
                name, value = row[0].strip(), float(row[1])
            except (IndexError, ValueError):
                raise ValueError(
                    f"{path}:{number}: expected 'file.wav,value', got {','.join(row)!r}"
                ) from None
            if not -1.0 <= value <= 1.0:
                raise ValueError(f"{path}:{number}: value {value} outside [-1, 1]")
            ratings[name] = value
    return ratings


def load_speech_av(data_dir: str | Path) -> list[AudioSample]:
    """The speech_av clips (``../shared/data/speech_av``) with valence/arousal, sorted by name."""
    data_dir = Path(data_dir)
    files = _wav_files(data_dir, "speech_av")
    valence = _read_ratings(data_dir / "valence.csv")
    arousal = _read_ratings(data_dir / "arousal.csv")
    samples = []
    for path in files:
        for ratings, csv_name in ((valence, "valence.csv"), (arousal, "arousal.csv")):
            if path.name not in ratings:
                raise ValueError(f"{path.name} has no rating in {data_dir / csv_name}")
        v, a = valence[path.name], arousal[path.name]
        samples.append(
            AudioSample(
                id=path.stem,
                speaker="",  # speakers are not annotated
                audio=read_audio(path),
                label=speech_av_label(v, a),
                dataset=SPEECH_AV,
                valence=v,
                arousal=a,
                derived_emotion=True,
            )
        )
    logger.info("loaded %d speech_av clips from %s", len(samples), data_dir)
    return samples
