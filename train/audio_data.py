"""Emotional speech for the acoustic branch: EMO-DB and speech_av, in the universal label space.

Both loaders return :class:`AudioSample` objects holding 16 kHz mono float32 audio and a
:class:`~unimse.labels.UniversalLabel` (``polarity,score,meld_emotion,iemocap_emotion``).

EMO-DB mapping (:data:`EMODB_LABELS`). EMO-DB is acted German speech in 7 categories; the universal
space has a sentiment polarity, a score in [-3, 3] (CMU-MOSI scale) and the MELD and IEMOCAP
emotion vocabularies. Scores are a fixed valence-based choice, not a measurement: the acted
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
emotion names six of them, and polarity separates boredom (negative) from neutral (neutral).

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
from dataclasses import dataclass, field
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

from unimse.labels import UniversalLabel

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
EMODB = "emodb"
SPEECH_AV = "speech_av"
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
EMODB_LABELS: dict[str, UniversalLabel] = {
    "anger": UniversalLabel("negative", -2.0, "anger", "angry"),
    "boredom": UniversalLabel("negative", -0.8, "neutral", "neutral"),
    "disgust": UniversalLabel("negative", -2.0, "disgust", "frustrated"),
    "fear": UniversalLabel("negative", -1.6, "fear", "frustrated"),
    "happiness": UniversalLabel("positive", 2.0, "joy", "happy"),
    "sadness": UniversalLabel("negative", -2.0, "sadness", "sad"),
    "neutral": UniversalLabel("neutral", 0.0, "neutral", "neutral"),
}
VALENCE_NEUTRAL_BAND = 0.1


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
