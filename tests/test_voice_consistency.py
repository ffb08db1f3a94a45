"""Neutral-voice consistency (train.consistency): a neutral voice beside words learns to leave the
words' label alone; only the rows that got a neutral clip count."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import tiny_unimse_config

from train.config import TrainConfig
from train.consistency import consistency_loss, inputs_of, text_only, voice_consistency
from train.staged import preserve_text_path
from unimse.factory import build_model
from unimse.inputs import ModelInput
from unimse.modeling import UniMSEOutput
from unimse.processor import LabelTargets, UniMSEProcessor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _output(seed: int, rows: int = 4) -> UniMSEOutput:
    g = torch.Generator().manual_seed(seed)
    return UniMSEOutput(
        torch.randn(rows, 3, generator=g),
        torch.randn(rows, 7, generator=g),
        torch.randn(rows, 6, generator=g),
        torch.randn(rows, generator=g),
    )


def test_loss_is_zero_for_equal_outputs_and_grows_with_the_gap() -> None:
    a, b = _output(0), _output(1)
    assert float(consistency_loss(a, a)) == pytest.approx(0.0, abs=1e-6)
    assert float(consistency_loss(a, b)) > 0.1


def _setup() -> tuple[torch.nn.Module, UniMSEProcessor, list[ModelInput]]:
    from unimse.backbones import load_tokenizer

    torch.manual_seed(5)
    config = tiny_unimse_config(visual=None)
    model = build_model(config)
    processor = UniMSEProcessor(config, load_tokenizer(config))
    voice = np.random.default_rng(0).standard_normal((30, 8)).astype(np.float32)
    texts = ["I love it", "this is awful", "what now?", "fine"]
    return model, processor, [ModelInput(t, "a", acoustic=voice) for t in texts]


def test_inputs_of_picks_rows_and_drops_targets_and_text_only_masks_the_audio() -> None:
    _, processor, inputs = _setup()
    targets = [LabelTargets(polarity=1, score=0.0, meld=0, iemocap=2) for _ in inputs]
    batch = processor.encode(inputs, targets)
    rows = torch.tensor([False, True, False, True])
    picked = inputs_of(batch, rows)
    assert picked.size == 2 and picked.weights is None and picked.meld is None
    assert torch.equal(picked.input_ids, batch.input_ids[rows])
    assert picked.acoustic_lengths is not None and int(picked.acoustic_lengths.min()) > 0
    masked = text_only(picked).acoustic_lengths
    assert masked is not None and int(masked.sum()) == 0
    languages = inputs_of(replace(batch, language=torch.tensor([0, 1, 0, 1])), rows).language
    assert languages is not None and languages.tolist() == [1, 1]  # the voice map each row reads


def test_no_paired_row_costs_nothing_and_the_mode_is_kept() -> None:
    model, processor, inputs = _setup()
    batch = processor.encode(inputs)
    model.train()
    assert float(voice_consistency(model, batch, torch.zeros(4, dtype=torch.bool))) == 0.0
    with torch.no_grad():
        assert float(voice_consistency(model, batch, torch.ones(4, dtype=torch.bool))) >= 0.0
    assert model.training


def test_training_on_the_loss_makes_a_neutral_voice_leave_the_words_alone() -> None:
    model, processor, inputs = _setup()
    trainable = preserve_text_path(model)
    params = [p for p in model.parameters() if p.requires_grad]
    with torch.no_grad():  # a voice that starts out moving the label
        for p in params:
            if all(p is not q for q in trainable):
                p.add_(0.5 * torch.randn_like(p))
        for w in trainable:
            w[:, -16:].normal_(0.0, 0.5)
    batch = processor.encode(inputs)
    every = torch.ones(len(inputs), dtype=torch.bool)

    def gap() -> float:
        with torch.no_grad():
            return float(voice_consistency(model, batch, every))

    before = gap()
    opt = torch.optim.Adam(params, lr=1e-2)
    model.train()
    for _ in range(40):
        loss = voice_consistency(model, batch, every)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert before > 0.05 and gap() < 0.2 * before


def test_config_needs_neutral_audio_and_a_non_negative_weight() -> None:
    base = {"data": {"datasets": ["meld"]}, "train": {"voice_consistency": 1.0}}
    with pytest.raises(ValueError, match="neutral_audio"):
        TrainConfig.from_dict(base)
    with pytest.raises(ValueError, match="voice_consistency"):
        TrainConfig.from_dict({"train": {"voice_consistency": -1.0}})


def test_pitch_shifted_neutral_voices_are_new_speakers_of_the_same_length() -> None:
    from train.audio_data import AudioSample
    from train.audio_datasets import pitch_shifted, speaker_key
    from unimse.labels import UniversalLabel

    t = np.arange(16_000, dtype=np.float32) / 16_000
    clip = AudioSample(
        "a",
        "07",
        (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32),
        UniversalLabel("neutral", 0.0, "neutral", "neutral"),
        "ravdess",
    )
    up, down = pitch_shifted([clip], 2.0)[0], pitch_shifted([clip], -2.0)[0]
    assert {speaker_key(up), speaker_key(down)} == {"ravdess/07+2st", "ravdess/07-2st"}
    assert up.audio.dtype == np.float32 and len(up.audio) == len(clip.audio)
    spectrum = np.abs(np.fft.rfft(up.audio))
    assert 215 < np.argmax(spectrum) < 235  # 200 Hz two semitones up: 224 Hz (1 Hz bins)
    assert up.label == clip.label and up.id == clip.id


def test_voice_shifts_need_neutral_audio_and_are_semitones() -> None:
    with pytest.raises(ValueError, match="neutral_voice_shifts needs"):
        TrainConfig.from_dict({"data": {"datasets": ["meld"], "neutral_voice_shifts": [2.0]}})
    with pytest.raises(ValueError, match="semitones"):
        TrainConfig.from_dict(
            {
                "data": {
                    "datasets": ["meld", "ravdess"],
                    "neutral_audio": {"meld": 1.0},
                    "neutral_voice_shifts": [0.0],
                }
            }
        )


def test_held_out_speakers_are_corpus_slash_speaker_of_an_audio_corpus() -> None:
    data = {"datasets": ["meld"], "held_out_speakers": ["ravdess/01", "emodb/03"]}
    config = TrainConfig.from_dict({"data": data})
    assert config.data.held_out_speakers == ("ravdess/01", "emodb/03")
    for bad in (["01"], ["meld/01"], ["ravdess/"]):
        with pytest.raises(ValueError, match="held_out_speakers"):
            TrainConfig.from_dict({"data": {**data, "held_out_speakers": bad}})
