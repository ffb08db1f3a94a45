"""Loaders for the benchmark data in ``../shared/data`` (MELD, IEMOCAP, CMU-MOSI).

Every loader returns :class:`Sample` rows in dialogue order with their past turns attached.
A missing or malformed file, or one without a row of the split asked for, raises
:class:`DataError` with one line naming the file.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from train.datadir import DEFAULT_DATA_DIR
from unimse.inputs import DialogueTurn, ModelInput
from unimse.labels import (
    IEMOCAP_CODES,
    IEMOCAP_POLARITY,
    MELD_EMOTIONS,
    POLARITIES,
    UniversalLabel,
    polarity_of_score,
)
from unimse.voice_trust import VoiceHistory

DATASETS = ("meld", "iemocap", "mosi")
# Emotional speech corpora (train.audio_datasets): audio-only samples with acoustic features.
AUDIO_DATASETS = ("emodb", "speech_av", "ravdess")
# Face corpora (train.face_data): a face held over frames beside a neutral sentence.
FACE_DATASETS = ("ckplus",)
SPLITS = ("train", "dev", "test")
MAX_CONTEXT = 8  # past turns kept on each sample; the model config decides how many it reads


class DataError(RuntimeError):
    pass


@dataclass(frozen=True)
class Sample:
    uid: str
    dataset: str
    split: str
    dialogue: str
    speaker: str
    text: str
    context: tuple[DialogueTurn, ...] = ()
    polarity: str | None = None
    score: float | None = None
    meld_emotion: str | None = None
    iemocap_emotion: str | None = None
    acoustic: np.ndarray | None = field(default=None, compare=False, repr=False)
    visual: np.ndarray | None = field(default=None, compare=False, repr=False)
    language: str = ""  # the language it is spoken in ("": not known), which picks the voice map
    # its speaker's earlier utterances as the voice trust reads them (UniMSEConfig.voice_trust)
    voice_history: VoiceHistory = field(default_factory=VoiceHistory)

    def to_input(self) -> ModelInput:
        return ModelInput(
            self.text,
            self.speaker,
            self.context,
            self.acoustic,
            self.visual,
            self.language,
            self.voice_history,
        )

    @classmethod
    def labelled(
        cls,
        uid: str,
        dataset: str,
        split: str,
        dialogue: str,
        speaker: str,
        text: str,
        label: UniversalLabel,
        *,
        acoustic: np.ndarray | None = None,
        visual: np.ndarray | None = None,
        language: str = "",
    ) -> Sample:
        """A sample whose four label fields are those of ``label`` (the audio and face corpora)."""
        return cls(
            uid=uid,
            dataset=dataset,
            split=split,
            dialogue=dialogue,
            speaker=speaker,
            text=text,
            polarity=label.polarity,
            score=label.score,
            meld_emotion=label.meld_emotion,
            iemocap_emotion=label.iemocap_emotion,
            acoustic=acoustic,
            visual=visual,
            language=language,
        )


def _read_csv(path: Path, required: set[str]) -> list[dict[str, str]]:
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    try:
        with path.open(encoding="utf-8", errors="replace", newline="") as fh:
            reader = csv.DictReader(fh)
            missing = required - set(reader.fieldnames or ())
            if missing:
                raise DataError(f"{path}: missing columns {sorted(missing)}")
            return list(reader)
    except (csv.Error, UnicodeError) as exc:
        raise DataError(f"{path}: unreadable CSV ({exc})") from exc


def _of_split(samples: list[Sample], path: Path, split: str) -> list[Sample]:
    """``samples``, or a :class:`DataError` naming ``path`` when it has no row of ``split``."""
    if not samples:
        raise DataError(f"{path}: no rows of the {split} split")
    return samples


def _with_context(rows: list[Sample]) -> list[Sample]:
    """Attach up to MAX_CONTEXT past turns of the same dialogue (rows are in dialogue order)."""
    history: dict[str, list[DialogueTurn]] = defaultdict(list)
    out = []
    for row in rows:
        past = history[row.dialogue]
        out.append(Sample(**{**row.__dict__, "context": tuple(past[-MAX_CONTEXT:])}))
        past.append(DialogueTurn(row.speaker, row.text))
    return out


_MOJIBAKE = {
    "\u2019": "'",
    "\u2018": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u2014": "-",
    "\u2026": "...",
    "\ufffd": "'",
}


def clean_text(text: str) -> str:
    for bad, good in _MOJIBAKE.items():
        text = text.replace(bad, good)
    return " ".join(text.split())


def load_meld(data_dir: Path, split: str) -> list[Sample]:
    name = {"train": "train", "dev": "dev", "test": "test"}[split]
    path = data_dir / "meld" / f"{name}_sent_emo.csv"
    rows = _read_csv(
        path, {"Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID"}
    )
    samples = []
    for i, r in enumerate(rows):
        emotion, sentiment = r["Emotion"].strip().lower(), r["Sentiment"].strip().lower()
        if emotion not in MELD_EMOTIONS or sentiment not in POLARITIES:
            raise DataError(f"{path}: row {i + 2} has unknown labels {emotion!r}/{sentiment!r}")
        samples.append(
            Sample(
                uid=f"meld/{split}/{r['Dialogue_ID']}_{r['Utterance_ID']}",
                dataset="meld",
                split=split,
                dialogue=r["Dialogue_ID"],
                speaker=r["Speaker"].strip(),
                text=clean_text(r["Utterance"]),
                polarity=sentiment,
                meld_emotion=emotion,
            )
        )
    samples.sort(key=lambda s: (int(s.dialogue), int(s.uid.rsplit("_", 1)[1])))
    return _with_context(_of_split(samples, path, split))


def load_iemocap(data_dir: Path, split: str) -> list[Sample]:
    path = data_dir / "iemocap" / "iemocap_text.csv"
    rows = _read_csv(
        path, {"dialogue_id", "utterance_index", "speaker", "text", "emotion", "split"}
    )
    samples = []
    for i, r in enumerate(rows):
        if r["split"].strip() != split:
            continue
        code = r["emotion"].strip().lower()
        if code not in IEMOCAP_CODES:
            raise DataError(f"{path}: row {i + 2} has unknown emotion {code!r}")
        emotion = IEMOCAP_CODES[code]
        samples.append(
            Sample(
                uid=f"iemocap/{r['dialogue_id']}_{r['utterance_index']}",
                dataset="iemocap",
                split=split,
                dialogue=r["dialogue_id"],
                speaker=r["speaker"].strip(),
                text=clean_text(r["text"]),
                polarity=IEMOCAP_POLARITY[emotion],
                iemocap_emotion=emotion,
            )
        )
    samples.sort(key=lambda s: (s.dialogue, int(s.uid.rsplit("_", 1)[1])))
    return _with_context(_of_split(samples, path, split))


MOSI_SPLITS = {"train": "train", "dev": "valid", "test": "test"}


def load_mosi(data_dir: Path, split: str, features: bool = False) -> list[Sample]:
    """CMU-MOSI, standard fold. With ``features``, attach the bc-LSTM utterance-level audio/video
    vectors from ``mosi_features.npz`` as one-step sequences (benchmark ablations only: they cannot
    be computed live)."""
    path = data_dir / "mosi" / "mosi_labels.csv"
    rows = _read_csv(path, {"id", "video_id", "clip_id", "label", "std_split", "text_upper"})
    feats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if features:
        npz_path = data_dir / "mosi" / "mosi_features.npz"
        if not npz_path.is_file():
            raise DataError(f"data file not found: {npz_path}")
        try:
            with np.load(npz_path, allow_pickle=False) as npz:
                ids = [str(x) for x in npz["ids"]]
                audio, video = npz["audio"].astype(np.float32), npz["video"].astype(np.float32)
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(f"{npz_path}: unreadable ({exc})") from exc
        feats = {k: (audio[i : i + 1], video[i : i + 1]) for i, k in enumerate(ids)}
    samples = []
    for r in rows:
        if r["std_split"].strip() != MOSI_SPLITS[split] or not r["label"].strip():
            continue  # 4 utterances have no label
        score = float(r["label"])
        if not math.isfinite(score):
            continue
        a, v = feats.get(r["id"], (None, None))
        samples.append(
            Sample(
                uid=f"mosi/{r['id']}",
                dataset="mosi",
                split=split,
                dialogue=r["video_id"],
                speaker="speaker",
                text=clean_text(r["text_upper"].lower()),
                polarity=polarity_of_score(score),
                score=score,
                acoustic=a,
                visual=v,
            )
        )
    samples.sort(key=lambda s: (s.dialogue, int(s.uid.rsplit("_", 1)[1])))
    return _with_context(_of_split(samples, path, split))


def load_dataset(
    name: str, split: str, data_dir: Path = DEFAULT_DATA_DIR, **kwargs: bool
) -> list[Sample]:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    loader = {"meld": load_meld, "iemocap": load_iemocap, "mosi": load_mosi}[name]
    return loader(Path(data_dir), split, **kwargs)
