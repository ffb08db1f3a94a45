"""Acoustic features: a 64-d frame-level sequence computed from 16 kHz utterance audio.

One function, :func:`emotrack_acoustic_v1`, serves training and live inference. Frames are 25 ms
Hann windows (512-point FFT) every 20 ms (50 frames per second; T = 1 + samples // 320, so T >= 1
for any input, empty audio included). Per frame:

====== ===== ===============================================================================
dims   count feature
====== ===== ===============================================================================
0-23   24    MFCC 0-23 of a 40-band log-mel spectrum (20-8000 Hz, -80 dB floor)
24-47  24    delta MFCC (regression over +-2 frames)
48     1     log energy (dB re full scale after level normalisation, floor -80 dB)
49     1     delta log energy
50     1     zero-crossing rate (40 ms frame)
51-53  3     spectral centroid, bandwidth and 85 % roll-off (kHz)
54     1     log10 spectral flatness
55     1     pitch in octaves re 150 Hz (0 where unvoiced)
56     1     periodicity: peak normalised autocorrelation in the 65-500 Hz lag range (0-1)
57     1     delta pitch (octaves per frame, 0 unless both neighbours are voiced)
58-63  6     spectral contrast, 5 octave bands from 200 Hz plus the top band
====== ===== ===============================================================================

Level normalisation: microphone gain and distance are unknown live, so absolute loudness carries
no emotion information that transfers from studio corpora. Before analysis the utterance is scaled
so that its 95th-percentile frame RMS sits at -20 dBFS (at most +60 dB of gain; near-digital
silence is left alone). Loudness *dynamics* within the utterance, spectral tilt and pitch are kept.

Feature normalisation: each dimension is standardised with fixed constants (:data:`FEATURE_MEAN`,
:data:`FEATURE_STD`) fitted once with :func:`fit_normalisation` on the frames of all EMO-DB and
speech_av utterances in ``../shared/data`` (zero padding trimmed). They are constants, not
per-utterance statistics, so a feature means the same thing in training and live.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

ACOUSTIC_V1 = "emotrack-acoustic-v1"
ACOUSTIC_DIM = 64
SAMPLE_RATE = 16_000
HOP = 320  # 20 ms
N_FFT = 512
WIN = 400  # 25 ms
PITCH_FRAME = 640  # 40 ms: at least 2.6 periods of the lowest pitch searched
F0_MIN, F0_MAX = 65.0, 500.0
N_MELS = 40
N_MFCC = 24
FLOOR_DB = -80.0
TARGET_DBFS = -20.0
MAX_GAIN_DB = 60.0
SILENCE_DBFS = -90.0
VOICING_THRESHOLD = 0.5
_AMIN = 10.0 ** (FLOOR_DB / 10.0)
_FREQS = np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE)
_LAG_MIN = int(SAMPLE_RATE // F0_MAX)
_LAG_MAX = int(np.ceil(SAMPLE_RATE / F0_MIN))
_PITCH_FFT = 1024  # >= PITCH_FRAME + _LAG_MAX: no circular wrap-around


@functools.cache
def _librosa() -> Any:
    """librosa, imported on first use: it pulls in scipy.signal (seconds at start-up)."""
    import librosa

    return librosa


@functools.cache
def _mel_and_window() -> tuple[np.ndarray, np.ndarray]:
    filters = _librosa().filters
    mel = filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=20.0, fmax=8000.0)
    return mel, filters.get_window("hann", WIN, fftbins=True)


FEATURE_NAMES: tuple[str, ...] = (
    *(f"mfcc{i}" for i in range(N_MFCC)),
    *(f"delta_mfcc{i}" for i in range(N_MFCC)),
    "log_energy",
    "delta_log_energy",
    "zcr",
    "centroid_khz",
    "bandwidth_khz",
    "rolloff_khz",
    "log10_flatness",
    "pitch_octaves",
    "periodicity",
    "delta_pitch",
    *(f"contrast{i}" for i in range(6)),
)

# Fitted by fit_normalisation() on EMO-DB (339 files) + speech_av (47 files): see module docstring.
# fmt: off
FEATURE_MEAN = np.array(
    [
        -259.8, 46.25, 5.341, 18.52, 1.608, 5.852, -1.669, -1.902, -3.708, 0.8049, -1.75, -1.131,
        -0.2418, 1.522, -3.009, 0.9998, -1.693, 0.06178, -1.155, 0.8563, -1.405, 0.7515, -0.8959,
        0.2577, 1.072, 0.1135, -0.005717, 0.01874, -0.01787, -0.01689, -0.01611, -0.02364, -0.03212,
        -0.0258, -0.01583, -0.0249, -0.01187, -0.01053, -0.01896, -0.004849, -0.01336, -0.009541,
        -0.01022, -0.008747, -0.008623, -0.007891, -0.005902, -0.004367, -34.2, 0.1707, 0.1276,
        1.706, 1.565, 3.178, -2.355, 0.3935, 0.7016, 0.0001604, 12.68, 10.37, 14.08, 14, 16.47,
        42.59,
    ],
    dtype=np.float32,
)
FEATURE_STD = np.array(
    [
        87.44, 38.34, 22.39, 18.4, 13.83, 11.71, 10.74, 9.885, 9.191, 8.427, 7.539, 7.539, 7.219,
        7.116, 7.085, 6.584, 6.836, 6.645, 6.261, 5.936, 5.665, 5.199, 4.913, 4.552, 27.54, 12.36,
        6.941, 5.55, 4.279, 3.562, 3.335, 3.112, 2.856, 2.526, 2.368, 2.336, 2.203, 2.059, 2.212,
        2.105, 2.14, 2.125, 2.037, 1.912, 1.853, 1.723, 1.613, 1.509, 12.97, 4.003, 0.1495, 1.164,
        0.4503, 1.837, 0.9424, 0.6865, 0.2656, 0.1498, 5.401, 5.707, 6.217, 5.087, 4.735, 11.8,
    ],
    dtype=np.float32,
)
# fmt: on


def _deltas(x: np.ndarray, width: int = 2) -> np.ndarray:
    """Regression deltas along axis 0 (frames) with edge padding; defined for any T >= 1."""
    padded = np.pad(x, [(width, width)] + [(0, 0)] * (x.ndim - 1), mode="edge")
    t = x.shape[0]
    num = sum(
        n * (padded[width + n : width + n + t] - padded[width - n : width - n + t])
        for n in range(1, width + 1)
    )
    return num / (2.0 * sum(n * n for n in range(1, width + 1)))


def _frames(audio: np.ndarray, length: int) -> np.ndarray:
    """(T, length) centred frames every HOP samples, zero padded: T = 1 + len(audio) // HOP."""
    padded = np.pad(audio, (length // 2, length // 2 + HOP))
    count = 1 + len(audio) // HOP
    return _librosa().util.frame(padded, frame_length=length, hop_length=HOP, axis=0)[:count]


def _level_normalise(frames: np.ndarray, audio: np.ndarray) -> tuple[np.ndarray, float]:
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    reference = float(np.percentile(rms, 95))
    reference_db = 20.0 * np.log10(max(reference, 1e-12))
    if reference_db <= SILENCE_DBFS:
        return audio, 1.0
    gain = 10.0 ** (min(TARGET_DBFS - reference_db, MAX_GAIN_DB) / 20.0)
    return audio * np.float32(gain), gain


def _pitch(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """F0 (Hz) and periodicity per frame from the energy-normalised autocorrelation."""
    frames = frames - frames.mean(axis=1, keepdims=True)
    n = frames.shape[1]
    spectrum = np.fft.rfft(frames, n=_PITCH_FFT, axis=1)
    autocorr = np.fft.irfft(np.abs(spectrum) ** 2, n=_PITCH_FFT, axis=1)[:, : _LAG_MAX + 1]
    energy = np.cumsum(frames**2, axis=1)
    lags = np.arange(_LAG_MAX + 1)
    head = energy[:, n - 1 - lags]  # sum of x[t]^2 for t < n - lag
    tail = energy[:, -1:] - np.concatenate(
        [np.zeros((len(frames), 1)), energy[:, :_LAG_MAX]], axis=1
    )
    r = autocorr / np.sqrt(head * tail + 1e-12)
    r[:, :_LAG_MIN] = 0.0
    best = r.max(axis=1)
    # Take the shortest lag whose peak is within 10 % of the best one (avoids subharmonic errors).
    candidate = (
        (r >= 0.9 * best[:, None])
        & (r > 0)
        & (r >= np.roll(r, 1, axis=1))
        & (r >= np.roll(r, -1, axis=1))
    )
    lag = np.where(candidate.any(axis=1), candidate.argmax(axis=1), _LAG_MAX)
    periodicity = np.clip(r[np.arange(len(r)), lag], 0.0, 1.0)
    return SAMPLE_RATE / lag, periodicity


def raw_features(audio: np.ndarray) -> np.ndarray:
    """Unnormalised (T, 64) float64 features of 16 kHz mono audio (see the module docstring)."""
    audio = _validate(audio)
    pitch_frames = _frames(audio, PITCH_FRAME)
    audio, gain = _level_normalise(pitch_frames, audio)
    pitch_frames = pitch_frames.astype(np.float64) * gain

    stft_frames = _frames(audio, N_FFT)  # 512-sample frames with the 400-sample window centred
    offset = (N_FFT - WIN) // 2
    mel, window = _mel_and_window()
    windowed = stft_frames[:, offset : offset + WIN].astype(np.float64) * window
    power = np.abs(np.fft.rfft(windowed, n=N_FFT, axis=1)) ** 2  # (T, 257)

    log_mel = 10.0 * np.log10(np.maximum(power @ mel.T, _AMIN))
    mfcc = _librosa().feature.mfcc(S=log_mel.T, n_mfcc=N_MFCC).T

    energy = 10.0 * np.log10(
        np.maximum(np.mean(pitch_frames[:, HOP // 2 : HOP // 2 + HOP] ** 2, axis=1), _AMIN)
    )
    signs = np.signbit(pitch_frames)
    zcr = np.mean(signs[:, 1:] != signs[:, :-1], axis=1)

    magnitude = np.sqrt(power)
    total = magnitude.sum(axis=1, keepdims=True)
    weights = magnitude / np.maximum(total, 1e-12)
    centroid = weights @ _FREQS
    bandwidth = np.sqrt(np.sum(weights * (_FREQS[None, :] - centroid[:, None]) ** 2, axis=1))
    cumulative = np.cumsum(magnitude, axis=1)
    rolloff = _FREQS[np.argmax(cumulative >= 0.85 * np.maximum(total, 1e-12), axis=1)]
    safe_power = np.maximum(power, _AMIN * 1e-4)
    flatness = np.exp(np.mean(np.log(safe_power), axis=1)) / np.mean(safe_power, axis=1)
    contrast = (
        _librosa()
        .feature.spectral_contrast(
            S=magnitude.T, sr=SAMPLE_RATE, n_fft=N_FFT, n_bands=5, fmin=200.0
        )
        .T
    )

    f0, periodicity = _pitch(pitch_frames)
    voiced = periodicity >= VOICING_THRESHOLD
    pitch = np.where(voiced, np.log2(f0 / 150.0), 0.0)
    both = voiced & np.roll(voiced, 1) & np.roll(voiced, -1)
    both[[0, -1]] = False
    delta_pitch = np.where(both, (np.roll(pitch, -1) - np.roll(pitch, 1)) / 2.0, 0.0)

    features = np.concatenate(
        [
            mfcc,
            _deltas(mfcc),
            energy[:, None],
            _deltas(energy[:, None]),
            zcr[:, None],
            np.stack([centroid, bandwidth, rolloff], axis=1) / 1000.0,
            np.log10(flatness)[:, None],
            pitch[:, None],
            periodicity[:, None],
            delta_pitch[:, None],
            contrast,
        ],
        axis=1,
    )
    assert features.shape[1] == ACOUSTIC_DIM, features.shape
    return features


def emotrack_acoustic_v1(audio: np.ndarray) -> np.ndarray:
    """(T, 64) float32 standardised features of one utterance of 16 kHz mono float audio."""
    features = (raw_features(audio) - FEATURE_MEAN) / FEATURE_STD
    return np.ascontiguousarray(features, dtype=np.float32)


def fit_normalisation(utterances: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and standard deviation over all frames of ``utterances``."""
    frames = np.concatenate([raw_features(u) for u in utterances], axis=0)
    if len(frames) == 0:
        raise ValueError("fit_normalisation needs at least one utterance")
    std = frames.std(axis=0)
    return frames.mean(axis=0).astype(np.float32), np.maximum(std, 1e-3).astype(np.float32)


def _validate(audio: np.ndarray) -> np.ndarray:
    array = np.asarray(audio)
    if array.ndim != 1:
        raise ValueError(
            f"acoustic features need mono audio of shape (samples,), got shape {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"acoustic features need float audio in [-1, 1] at 16 kHz, got dtype {array.dtype}"
        )
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise ValueError("audio contains NaN or infinite samples")
    return array
