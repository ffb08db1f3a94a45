"""EMO-DB and speech_av loaders (real data from ../shared/data; skipped with a reason if absent)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from train.array_cache import save_array
from train.audio_data import (
    EMODB_CLASSES,
    EMODB_LABELS,
    AudioSample,
    emodb_class_of,
    emodb_class_of_prediction,
    load_emodb,
    load_speech_av,
    speech_av_label,
)
from unimse.labels import EMODB_JOINT_CLASSES, MELD_EMOTIONS, POLARITIES, UniversalLabel
from unimse.prediction import Prediction, mean_prediction


@pytest.fixture(scope="module")
def emodb(shared_data: Path) -> list[AudioSample]:
    return load_emodb(shared_data / "emodb")


@pytest.fixture(scope="module")
def speech_av(shared_data: Path) -> list[AudioSample]:
    return load_speech_av(shared_data / "speech_av")


def test_emodb_loads_all_files_with_labels(emodb: list[AudioSample]) -> None:
    assert len(emodb) == 339
    assert {s.speaker for s in emodb} == {"03", "08", "09", "10", "11", "12", "13"}
    assert {s.emotion for s in emodb} == set(EMODB_CLASSES)
    assert len({s.id for s in emodb}) == len(emodb)
    sample = next(s for s in emodb if s.id == "03a01Wa")
    assert sample.emotion == "anger" and sample.speaker == "03" and sample.dataset == "emodb"
    assert sample.label == UniversalLabel("negative", -2.0, "anger", "angry")
    counts = {c: sum(s.emotion == c for s in emodb) for c in EMODB_CLASSES}
    assert counts["anger"] == 84 and counts["disgust"] == 22


def test_emodb_audio_is_16k_float32_without_zero_padding(emodb: list[AudioSample]) -> None:
    for sample in emodb:
        assert sample.audio.dtype == np.float32 and sample.audio.ndim == 1
        assert 0.5 < sample.duration <= 2.0 + 1e-3
    padded = [s for s in emodb if s.duration < 1.99]
    assert padded, "the shared copy pads short files with zeros: some must have been trimmed"
    assert all(np.abs(s.audio[-40:]).max() > 0 for s in padded)


def test_every_emodb_class_survives_the_label_mapping(emodb: list[AudioSample]) -> None:
    assert all(emodb_class_of(s.label) == s.emotion for s in emodb)
    assert EMODB_LABELS["boredom"].polarity == "negative"
    assert EMODB_LABELS["boredom"].meld_emotion == EMODB_LABELS["neutral"].meld_emotion


def test_the_joint_class_table_is_the_emodb_label_mapping() -> None:
    assert tuple(EMODB_JOINT_CLASSES) == EMODB_CLASSES
    for name, (polarity, emotion) in EMODB_JOINT_CLASSES.items():
        assert (EMODB_LABELS[name].polarity, EMODB_LABELS[name].meld_emotion) == (polarity, emotion)


def _prediction(emotions: dict[str, float], polarities: dict[str, float]) -> Prediction:
    emotion_probs = {e: emotions.get(e, 0.0) for e in MELD_EMOTIONS}
    polarity_probs = {p: polarities.get(p, 0.0) for p in POLARITIES}
    return Prediction(
        emotion=max(emotion_probs, key=emotion_probs.__getitem__),
        emotion_probs=emotion_probs,
        iemocap_emotion="neutral",
        iemocap_probs={"neutral": 1.0},
        polarity=max(polarity_probs, key=polarity_probs.__getitem__),
        polarity_probs=polarity_probs,
        intensity=-1.0,
        modalities=("audio",),
    )


def test_a_prediction_is_read_back_as_the_jointly_most_probable_emodb_class() -> None:
    # The argmax label (surprise, negative) reads back as fear, which the model gives no
    # probability; together, negative + neutral (boredom) is the most probable class.
    prediction = _prediction({"surprise": 0.4, "neutral": 0.35, "anger": 0.25}, {"negative": 0.9})
    assert emodb_class_of(prediction.label) == "fear"
    assert emodb_class_of_prediction(prediction) == "boredom"
    calm = _prediction({"neutral": 0.6, "sadness": 0.4}, {"negative": 0.4, "neutral": 0.6})
    assert emodb_class_of_prediction(calm) == "neutral"


def test_speech_av_loads_valence_and_arousal(speech_av: list[AudioSample]) -> None:
    assert len(speech_av) == 47
    for sample in speech_av:
        assert sample.valence is not None and sample.arousal is not None
        assert -1 <= sample.valence <= 1 and -1 <= sample.arousal <= 1
        assert sample.derived_emotion and sample.dataset == "speech_av"
        assert sample.audio.dtype == np.float32 and sample.duration > 0.3
        if abs(sample.valence) >= 0.1:
            assert np.sign(sample.label.score) == np.sign(sample.valence)
    first = speech_av[0]
    assert (first.id, first.valence, first.arousal) == ("00", -0.7, 0.7)
    assert first.label == UniversalLabel("negative", -2.1, "anger", "angry")


def test_speech_av_label_quadrants() -> None:
    assert speech_av_label(0.05, 0.9) == UniversalLabel("neutral", 0.0, "neutral", "neutral")
    assert speech_av_label(0.5, 0.5).iemocap_emotion == "excited"
    assert speech_av_label(0.5, -0.5).iemocap_emotion == "happy"
    assert speech_av_label(-0.5, -0.5) == UniversalLabel("negative", -1.5, "sadness", "sad")


@pytest.mark.slow
def test_acoustic_normalisation_constants_fit_the_data(
    emodb: list[AudioSample], speech_av: list[AudioSample]
) -> None:
    from unimse.features import ACOUSTIC_SPEC, acoustic_extractor

    extract = acoustic_extractor(ACOUSTIC_SPEC)
    frames = np.concatenate([extract(s.audio) for s in emodb + speech_av])
    np.testing.assert_allclose(frames.mean(axis=0), 0.0, atol=0.02)
    np.testing.assert_allclose(frames.std(axis=0), 1.0, atol=0.02)


# --- errors (no shared data needed) -------------------------------------------------------------


def _wav(path: Path, seconds: float = 0.5, rate: int = 22_050) -> Path:
    t = np.arange(int(rate * seconds)) / rate
    sf.write(path, (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate)
    return path


def test_loader_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="EMO-DB folder not found"):
        load_emodb(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match=r"no \.wav files"):
        load_emodb(tmp_path)
    _wav(tmp_path / "03a01Qa.wav")
    with pytest.raises(ValueError, match=r"03a01Qa\.wav: not an EMO-DB file name"):
        load_emodb(tmp_path)
    (tmp_path / "03a01Qa.wav").unlink()
    (tmp_path / "03a01Wa.wav").write_bytes(b"not a wav file")
    with pytest.raises(ValueError, match=r"cannot read audio file .*03a01Wa\.wav"):
        load_emodb(tmp_path)


def test_emodb_loader_resamples_any_folder(tmp_path: Path) -> None:
    _wav(tmp_path / "16b10Tb.wav", seconds=0.5)
    (sample,) = load_emodb(tmp_path)
    assert sample.emotion == "sadness" and sample.speaker == "16"
    assert len(sample.audio) == pytest.approx(8000, abs=2)


def test_speech_av_errors_name_the_file(tmp_path: Path) -> None:
    _wav(tmp_path / "00.wav", rate=16_000)
    with pytest.raises(FileNotFoundError, match=r"valence\.csv"):
        load_speech_av(tmp_path)
    (tmp_path / "valence.csv").write_text("00.wav,0.5\n")
    (tmp_path / "arousal.csv").write_text("01.wav,0.5\n")
    with pytest.raises(ValueError, match=r"00\.wav has no rating in .*arousal\.csv"):
        load_speech_av(tmp_path)
    (tmp_path / "arousal.csv").write_text("00.wav,high\n")
    with pytest.raises(ValueError, match=r"arousal\.csv:1: expected 'file\.wav,value'"):
        load_speech_av(tmp_path)
    (tmp_path / "arousal.csv").write_text("00.wav,0.2")
    (sample,) = load_speech_av(tmp_path)
    assert sample.label.polarity == "positive" and sample.label.score == 1.5


def test_an_ensemble_averages_the_distributions_and_takes_their_argmax() -> None:
    sure = _prediction({"anger": 0.9, "neutral": 0.1}, {"negative": 0.9, "neutral": 0.1})
    unsure = _prediction({"anger": 0.2, "neutral": 0.8}, {"negative": 0.2, "neutral": 0.8})
    mean = mean_prediction([sure, unsure])
    assert mean.emotion_probs["anger"] == pytest.approx(0.55)
    assert (mean.emotion, mean.polarity) == ("anger", "negative")
    assert mean.intensity == pytest.approx(-1.0)
    assert mean_prediction([unsure]) == unsure
    with pytest.raises(ValueError, match="no predictions"):
        mean_prediction([])


def test_feature_cache_writers_of_one_key_never_collide(tmp_path: Path) -> None:
    # Two processes computing the same features once shared a temporary name (a crash).
    path = tmp_path / "features" / "key.npy"
    arrays = [np.full((3, 2), float(i), dtype=np.float32) for i in range(8)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda a: save_array(path, a), arrays))
    assert np.load(path).shape == (3, 2)
    assert [p.name for p in path.parent.iterdir()] == ["key.npy"]
