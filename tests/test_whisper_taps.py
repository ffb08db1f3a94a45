"""The voice read from Whisper's middle layers: the CTranslate2 weight reader, the PyTorch encoder
that gives the last layer to the decoder and the inner layers to the emotion model in one pass,
and speaker baselines (each speaker's running mean voice).

Real Whisper tiny.en and espeak-ng speech; a tiny random-weight checkpoint is a test double.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_unimse_config

from realtime.config import AsrOptions
from unimse.config import FeatureSpec
from unimse.ct2_weights import CT2FormatError, read_variables
from unimse.encoder_output import EncoderOutput
from unimse.voice_baseline import SpeakerBaselines, normalise_corpus, prior_of
from unimse.whisper import (
    encode_utterance,
    load_whisper,
    resolve_model,
    speech_states,
    states_key,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def spoken() -> np.ndarray:
    from unimse.synth import speak

    return speak("Please send me the report before Friday.", "en-us")


# --- reading CTranslate2 weights --------------------------------------------------------------


def test_the_tiny_en_encoder_weights_are_read_from_model_bin() -> None:
    variables = read_variables(resolve_model("tiny.en") / "model.bin", prefix="encoder/")
    assert variables["encoder/conv1/weight"].shape == (384, 80, 3)
    assert variables["encoder/conv1/weight"].dtype == np.float32
    assert variables["encoder/position_encodings/encodings"].shape == (1500, 384)
    assert int(variables["encoder/num_heads"]) == 6
    assert not any(name.startswith("decoder/") for name in variables)


def test_damaged_model_files_are_one_line_errors(tmp_path: Path) -> None:
    wrong_version = tmp_path / "v99.bin"
    wrong_version.write_bytes(struct.pack("I", 99) + b"\0" * 16)
    with pytest.raises(CT2FormatError, match="version 99"):
        read_variables(wrong_version)
    truncated = tmp_path / "cut.bin"
    truncated.write_bytes((resolve_model("tiny.en") / "model.bin").read_bytes()[:5000])
    with pytest.raises(CT2FormatError, match="truncated"):
        read_variables(truncated)
    with pytest.raises(CT2FormatError, match="cannot read"):
        read_variables(tmp_path / "missing.bin")


# --- one encoder pass, two readers ------------------------------------------------------------


@pytest.mark.slow
def test_the_torch_encoder_matches_ctranslate2_and_the_transcript_stays(
    spoken: np.ndarray,
) -> None:
    from realtime.asr import Transcriber

    transcriber = Transcriber.load(AsrOptions(model="tiny.en", beam_size=1, cpu_threads=1))
    plain = transcriber.transcribe(spoken)
    assert transcriber.states_key == "tiny.en"
    exact = load_whisper("tiny.en", compute_type="float32", threads=1)
    reference = speech_states(encode_utterance(exact, spoken), len(spoken))

    transcriber.tap_encoder((1, 2))
    assert transcriber.states_key == "tiny.en@1,2" == states_key("tiny.en", (1, 2))
    encoded = encode_utterance(transcriber.model, spoken)
    assert isinstance(encoded, EncoderOutput)
    final = encoded.final[0, : len(reference)]
    # CTranslate2 runs int8, the torch encoder float32: the same states up to quantisation.
    assert np.corrcoef(final.ravel(), reference.ravel())[0, 1] > 0.999
    assert encoded.taps.shape[-1] == 768

    tapped = transcriber.transcribe(spoken)
    assert tapped.text == plain.text and "report" in tapped.text.lower()
    assert tapped.window == "utterance" and tapped.states is not None
    assert tapped.states.shape == (len(reference), 768)
    assert transcriber.encoder_passes == 1  # one pass gave the words and the voice
    transcriber.tap_encoder((1, 2))  # tapping again at the same layers changes nothing
    assert transcriber.transcribe(spoken).text == plain.text


def test_layers_out_of_range_are_refused() -> None:
    from unimse.whisper_encoder import check_layers

    assert check_layers([1, 2], 4) == (1, 2)
    for bad in ([], [4], [-1, 2]):
        with pytest.raises(ValueError, match="out of range"):
            check_layers(bad, 4)


# --- speaker baselines ------------------------------------------------------------------------


def test_a_speaker_baseline_starts_from_the_prior_and_follows_the_speaker() -> None:
    prior = np.zeros(2, np.float32)
    baselines = SpeakerBaselines(prior, prior_weight=1.0)
    first = np.full((4, 2), 2.0, np.float32)
    # The first utterance counts half against the prior (weight 1): baseline 1.0.
    np.testing.assert_allclose(baselines.normalise("a", first), first - 1.0)
    # A view of an utterance still going on reads the baseline without changing it.
    view = baselines.normalise("a", np.full((3, 2), 5.0, np.float32), update=False)
    np.testing.assert_allclose(view, 5.0 - (2.0 + 5.0) / 3)
    np.testing.assert_allclose(baselines.baseline("a"), [1.0, 1.0])
    # Another speaker starts from the prior.
    np.testing.assert_allclose(baselines.baseline("b"), [0.0, 0.0])
    with pytest.raises(ValueError, match="do not fit"):
        baselines.normalise("a", np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="positive"):
        SpeakerBaselines(prior, prior_weight=0)


def test_corpus_normalisation_is_causal_per_speaker() -> None:
    rng = np.random.default_rng(1)
    feats = [rng.normal(size=(5, 3)).astype(np.float32) + i for i in range(6)]
    speakers = ["a", "b", "a", "b", "a", "b"]
    prior = prior_of(feats)
    shifted = normalise_corpus(feats, speakers, prior, 5.0, seed=3)
    again = normalise_corpus(feats, speakers, prior, 5.0, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(shifted, again, strict=True))
    # Each clip is shifted by one vector (the same for all its frames): frame differences stay.
    for raw, out in zip(feats, shifted, strict=True):
        np.testing.assert_allclose(out - out[0], raw - raw[0], atol=1e-5)
    # Changing speaker b's clips leaves speaker a's normalised clips alone.
    changed = [f + 10 if s == "b" else f for f, s in zip(feats, speakers, strict=True)]
    other = normalise_corpus(changed, speakers, prior, 5.0, seed=3)
    for i in (0, 2, 4):
        np.testing.assert_array_equal(other[i], shifted[i])


def test_a_baseline_needs_the_stats_encoder() -> None:
    assert FeatureSpec("x", 4, "stats", baseline=5).baseline == 5
    with pytest.raises(ValueError, match="baseline"):
        FeatureSpec("x", 4, "lstm", baseline=5)
    with pytest.raises(ValueError, match="baseline"):
        FeatureSpec("x", 4, "stats", baseline=-1)


def test_the_live_model_reads_each_speakers_voice_relative_to_its_mean(tmp_path: Path) -> None:
    """A checkpoint with a baseline stores its prior; live, each (session, speaker) keeps its own
    running mean, and the states the model sees are shifted by it."""

    from realtime.inference import EmotionModel
    from unimse.checkpoint import load_checkpoint, save_checkpoint
    from unimse.factory import build_model
    from unimse.fusion import voice_prior
    from unimse.inference import EmotionPredictor

    spec = FeatureSpec("whisper-tiny.en-mid-v2", 768, "stats", baseline=2.0)
    config = tiny_unimse_config(acoustic=spec, visual=None)
    model = build_model(config)
    prior = voice_prior(model)
    assert prior is not None
    prior.copy_(torch.full((768,), 0.5))
    save_checkpoint(model, tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt")
    predictor = EmotionPredictor(loaded, torch.device("cpu"), "test")
    live = EmotionModel.for_predictor(predictor)
    assert live.encoder_model == "tiny.en@1,2" and live.encoder_layers == (1, 2)
    assert live.baselines is not None
    states = np.ones((4, 768), np.float32)
    # (2 * 0.5 + 1) / 3 is the baseline after this first utterance of s1/A.
    np.testing.assert_allclose(live.voice(states, "s1", "A"), 1 - 2 / 3, rtol=1e-5)
    np.testing.assert_allclose(live.voice(states, "s2", "A"), 1 - 2 / 3, rtol=1e-5)
    np.testing.assert_allclose(live.voice(states, "s1", "A"), 1 - 3 / 4, rtol=1e-5)
    # A session that ended is forgotten; the others keep their speakers' voices.
    live.end_session("s1")
    assert live.baselines.speakers == ["s2/A"]


def test_corpus_features_with_a_baseline_need_its_prior() -> None:
    from train.audio_datasets import corpus_features

    spec = FeatureSpec("whisper-tiny.en-mid-v2", 768, "stats", baseline=5.0)
    with pytest.raises(ValueError, match="needs its prior"):
        corpus_features([], spec)


def test_a_revision_does_not_count_the_speakers_voice_twice() -> None:
    """A speculative result's voice is counted in the baseline; its revision (the same utterance,
    longer) is read against the baseline but not added again."""
    from rt_support import FakePredictor

    from realtime.inference import EmotionModel
    from realtime.messages import Transcript, Utterance

    model = EmotionModel(
        FakePredictor(acoustic_dim=2),
        acoustic=lambda audio: np.zeros((1, 2), np.float32),
        encoder_model="tiny.en",
        baselines=SpeakerBaselines(np.zeros(2, np.float32), prior_weight=1.0),
    )
    states = np.full((3, 2), 4.0, np.float32)

    def transcript(revision: int) -> Transcript:
        audio = np.zeros(16000, np.float32)
        utterance = Utterance("s", 0, 0.0, audio=audio, end=1.0, revision=revision)
        return Transcript(
            "s", 0, 0.0, utterance, "hello", encoder_states=states, encoder_model="tiny.en"
        )

    model.acoustic_features(transcript(0))
    assert model.baselines is not None
    np.testing.assert_allclose(model.baselines.baseline("s/speaker"), [2.0, 2.0])
    revised = model.acoustic_features(transcript(1))
    assert revised is not None
    np.testing.assert_allclose(revised, 4.0 - (2 * 2.0 + 4.0) / 3)  # read against it...
    np.testing.assert_allclose(model.baselines.baseline("s/speaker"), [2.0, 2.0])  # ...not added
