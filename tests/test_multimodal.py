"""Multimodal training and evaluation: audio datasets, staged training (init_from, train_only),
modality dropout, SIMULATED visual sequences, `emotrack eval --dataset emodb|speech_av`, and
replays that must use audio and video.

Real data comes from ../shared/data (skipped with a reason when absent). Tiny random-weight
checkpoints are test doubles; the replay test that compares two emotions needs a *trained*
multimodal checkpoint (runs/multimodal/best, the shipped default once it has an acoustic spec, or
$EMOTRACK_TEST_MULTIMODAL_CHECKPOINT) and skips with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_unimse_config
from rt_support import REPO, replay_to_jsonl

from train.audio_datasets import (
    EMODB_SPLITS,
    EMODB_TRANSCRIPTS,
    load_audio_dataset,
    speech_av_split,
    unified_audio,
)
from train.augment import EpochAugmenter
from train.simulated_visual import (
    FER_CONFUSION,
    SimulatedVisualOptions,
    expression_of,
    simulate_fer_sequence,
)
from train.staged import (
    apply_train_only,
    freeze_modules,
    init_from_checkpoint,
    preserve_text_path,
    reset_pmf_inputs,
)
from unimse.checkpoint import CheckpointError, save_checkpoint
from unimse.factory import build_model
from unimse.features import ACOUSTIC_SPEC, VISUAL_SPEC
from unimse.inputs import DialogueTurn, ModelInput
from unimse.labels import MELD_EMOTIONS

TRAIN_ONLY = ("fusion", "backbone.encoder.layer.*.pmf", "heads")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- audio datasets -------------------------------------------------------------------------


def test_emodb_dev_split_loads_as_samples_with_cached_features(
    shared_data: Path, tmp_path: Path
) -> None:
    from train.loop import targets_for

    rows = load_audio_dataset(
        "emodb", "dev", shared_data, ACOUSTIC_SPEC, transcripts=True, cache_dir=tmp_path
    )
    audio_only = [r for r in rows if not r.text]
    with_text = [r for r in rows if r.text]
    assert len(audio_only) == len(with_text) == 35  # speaker 12, audio only + with transcript
    assert EMODB_SPLITS["dev"] == ("12",)
    for row in rows:
        assert row.dataset == "emodb" and row.split == "dev" and row.acoustic is not None
        assert row.acoustic.dtype == np.float32 and row.acoustic.shape[1] == 64
        assert 25 <= len(row.acoustic) <= 101  # 0.5-2.0 s at 50 frames/s
    assert {r.text for r in with_text} <= set(EMODB_TRANSCRIPTS.values())
    anger = next(r for r in rows if r.dialogue[5] == "W")
    assert (anger.polarity, anger.meld_emotion, anger.iemocap_emotion) == (
        "negative",
        "anger",
        "angry",
    )
    assert len(list((tmp_path / "features").glob("*.npy"))) == 35  # one per file
    again = load_audio_dataset("emodb", "dev", shared_data, ACOUSTIC_SPEC, cache_dir=tmp_path)
    assert len(again) == 35 and np.array_equal(again[0].acoustic, audio_only[0].acoustic)  # type: ignore[arg-type]
    boredom = unified_audio(next(r for r in rows if r.dialogue[5] == "L"))
    assert boredom.borrowed == {"score", "meld_emotion", "iemocap_emotion"}
    target = targets_for(unified_audio(anger), borrowed_weight=0.5)
    assert (target.meld_weight, target.score_weight, target.polarity_weight) == (1.0, 0.5, 1.0)


def test_speech_av_split_is_fixed_and_labels_are_derived(shared_data: Path, tmp_path: Path) -> None:
    test = load_audio_dataset("speech_av", "test", shared_data, ACOUSTIC_SPEC, cache_dir=tmp_path)
    assert [r.dialogue for r in test] == [f"{n:02d}" for n in range(2, 47, 4)]
    assert speech_av_split("03") == "train"
    unified = unified_audio(test[0])
    assert unified.borrowed == {"meld_emotion", "iemocap_emotion"}  # derived from valence/arousal
    assert unified.score == test[0].score  # 3 x annotated valence: gold


def test_neutral_conversations_are_the_neutral_clips_relative_to_the_speakers_calm_self(
    shared_data: Path, tmp_path: Path
) -> None:
    from dataclasses import replace

    from train.audio_datasets import neutral_conversation_samples, neutral_voice_clips

    spec = replace(ACOUSTIC_SPEC, encoder="stats", baseline=5.0)
    prior = np.zeros(spec.dim, dtype=np.float32)
    mixed = load_audio_dataset(
        "emodb", "dev", shared_data, spec, transcripts=True, cache_dir=tmp_path, prior=prior
    )
    talk = neutral_conversation_samples(
        "emodb", "dev", shared_data, spec, prior, transcripts=True, cache_dir=tmp_path
    )
    calm = [r for r in mixed if r.meld_emotion == "neutral" and r.polarity == "neutral"]
    assert talk and len(talk) == len(calm) < len(mixed)
    assert all(r.uid.endswith("@neutral-talk") and r.meld_emotion == "neutral" for r in talk)
    assert {r.uid.removesuffix("@neutral-talk") for r in talk} == {r.uid for r in calm}
    voices = neutral_voice_clips("emodb", "dev", shared_data, spec, prior, cache_dir=tmp_path)
    audio_only = [r.acoustic for r in talk if not r.text and r.acoustic is not None]
    assert all(np.array_equal(a, v) for a, v in zip(audio_only, voices, strict=True))
    # the same clips relative to the speaker's mixed (7-emotion) history differ
    mixed_view = next(r.acoustic for r in calm if not r.text and r.acoustic is not None)
    assert not np.allclose(audio_only[0], mixed_view)


def test_a_corpus_is_decoded_once_inside_the_read_once_block_only(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import train.audio_datasets as audio_datasets
    from train.audio_data import AudioSample, load_emodb

    calls: list[Path] = []

    def counting(folder: Path) -> list[AudioSample]:
        calls.append(folder)
        return load_emodb(folder)

    monkeypatch.setattr(audio_datasets, "load_emodb", counting)
    folder = shared_data / "emodb"
    with audio_datasets.corpora_read_once():
        first = audio_datasets.load_audio_corpus("emodb", folder)
        first.clear()  # a caller's list is its own
        again = audio_datasets.load_audio_corpus("emodb", folder)
    assert len(calls) == 1 and again
    audio_datasets.load_audio_corpus("emodb", folder)
    assert len(calls) == 2  # outside the block every call reads the folder


def test_audio_datasets_need_an_acoustic_spec() -> None:
    from train.config import TrainConfig

    with pytest.raises(ValueError, match="acoustic feature spec"):
        TrainConfig.from_dict({"data": {"datasets": ["emodb"]}})
    with pytest.raises(ValueError, match="simulated_visual applies"):
        TrainConfig.from_dict({"data": {"datasets": ["mosi"], "simulated_visual": {"mosi": 0.5}}})
    acoustic = {"name": "emotrack-acoustic-v1", "dim": 64}
    talk = {"datasets": ["emodb"], "neutral_conversations": True}
    with pytest.raises(ValueError, match="needs a speaker baseline"):
        TrainConfig.from_dict({"model": {"acoustic": acoustic}, "data": talk})
    with pytest.raises(ValueError, match="needs an acted corpus"):
        TrainConfig.from_dict(
            {
                "model": {"acoustic": {**acoustic, "encoder": "stats", "baseline": 5.0}},
                "data": {**talk, "datasets": ["meld", "speech_av"]},
            }
        )


# --- staged training ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(1)
    model = build_model(tiny_unimse_config(acoustic=None, visual=None))
    return save_checkpoint(model, tmp_path_factory.mktemp("stage1") / "text", half=False)


def test_init_from_loads_matching_weights_and_leaves_new_ones(text_checkpoint: Path) -> None:
    from safetensors.torch import load_file

    torch.manual_seed(2)
    model = build_model(tiny_unimse_config(acoustic=ACOUSTIC_SPEC, visual=VISUAL_SPEC))
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = init_from_checkpoint(model, text_checkpoint)
    stored = load_file(str(text_checkpoint / "model.safetensors"))
    state = model.state_dict()
    for key, value in stored.items():
        assert torch.equal(state[key], value), key
    assert any(k.startswith("backbone.encoder.layer.1.pmf.") for k in report.loaded)
    assert any(k.startswith("heads.") for k in report.loaded)
    new = [k for k in state if k.startswith("fusion.")]
    assert new and set(new) <= set(report.new)
    for key in new:
        assert torch.equal(state[key], fresh[key]), key  # left at initialisation
    assert not report.ignored


def test_init_from_refuses_another_architecture(text_checkpoint: Path, tmp_path: Path) -> None:
    wider = build_model(tiny_unimse_config(acoustic=None, visual=None, modality_dim=16))
    with pytest.raises(CheckpointError, match="has shape"):
        init_from_checkpoint(wider, text_checkpoint)
    with pytest.raises(CheckpointError, match="not found"):
        init_from_checkpoint(wider, tmp_path / "nothing")


def test_train_only_freezes_everything_else() -> None:
    model = build_model(tiny_unimse_config(acoustic=ACOUSTIC_SPEC, visual=VISUAL_SPEC))
    trainable = set(apply_train_only(model, TRAIN_ONLY))
    for name, param in model.named_parameters():
        expected = name.startswith(("fusion.", "heads.")) or (
            ".pmf." in name and name.startswith("backbone")
        )
        assert param.requires_grad == expected, name
        assert (name in trainable) == expected
    assert any(".pmf." in n for n in trainable) and any(n.startswith("fusion.") for n in trainable)
    with pytest.raises(ValueError, match="names no parameter"):
        apply_train_only(model, ["fusoin"])


def test_frozen_stage1_layers_are_still_stored(tmp_path: Path) -> None:
    """A stage-2 checkpoint must keep the backbone layers stage 1 fine-tuned, although they are
    frozen in stage 2 (the installed backbone no longer has their values)."""
    from safetensors.torch import load_file

    from unimse.config import UniMSEConfig

    model = build_model(UniMSEConfig(acoustic=ACOUSTIC_SPEC))  # the real MiniLM
    apply_train_only(model, ["fusion", "heads"])
    layer = "backbone.encoder.layer.5.layer.output.dense.weight"
    save_checkpoint(model, tmp_path / "without")
    save_checkpoint(model, tmp_path / "with", keep={layer})
    assert layer not in load_file(str(tmp_path / "without" / "model.safetensors"))
    assert layer in load_file(str(tmp_path / "with" / "model.safetensors"))


def train_steps(model: torch.nn.Module, batch: object, opt: torch.optim.Optimizer) -> None:
    """Five optimiser steps on one batch, in training mode."""
    model.train()
    for _ in range(5):
        loss = model(batch).loss
        assert loss is not None
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_preserve_text_trains_audio_and_video_but_keeps_text_only_outputs(
    text_checkpoint: Path,
) -> None:
    from unimse.backbones import load_tokenizer
    from unimse.processor import LabelTargets, UniMSEProcessor

    torch.manual_seed(3)
    config = tiny_unimse_config()  # test specs: acoustic 8-d, visual 6-d
    model = build_model(config)
    init_from_checkpoint(model, text_checkpoint)
    masked = preserve_text_path(model)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        *(n for n, _ in model.named_parameters() if n.startswith("fusion.")),
        *(
            n
            for n, _ in model.named_parameters()
            if n.endswith(("pmf.down.weight", "pmf.out.weight"))
        ),
    }
    processor = UniMSEProcessor(config, load_tokenizer(config))
    rng = np.random.default_rng(0)
    texts = ["I love it", "this is awful", "", "what now?"]
    text_only = processor.encode([ModelInput(t, "a") for t in texts])
    with_media = [
        ModelInput(
            t,
            "a",
            acoustic=rng.standard_normal((20, 8)).astype(np.float32),
            visual=rng.random((5, 6)).astype(np.float32),
        )
        for t in texts
    ]
    targets = [LabelTargets(polarity=i % 3, score=1.0, meld=i, iemocap=i) for i in range(4)]
    train_batch = processor.encode(with_media, targets)

    def outputs(batch):  # type: ignore[no-untyped-def]
        model.eval()
        with torch.no_grad():
            out = model(batch)
        return torch.cat([out.polarity_logits, out.meld_logits, out.score[:, None]], dim=1)

    text_before, media_before = outputs(text_only), outputs(processor.encode(with_media))
    frozen_text_columns = [w[:, : w.shape[1] - 16].clone() for w in masked]
    others = [p for p in model.parameters() if p.requires_grad and all(p is not q for q in masked)]
    opt = torch.optim.AdamW(
        [{"params": others}, {"params": masked, "weight_decay": 0.0}], lr=1e-2, weight_decay=0.01
    )
    train_steps(model, train_batch, opt)
    assert torch.equal(outputs(text_only), text_before)  # text alone: exactly as before
    assert not torch.allclose(outputs(processor.encode(with_media)), media_before)
    for weight, before in zip(masked, frozen_text_columns, strict=True):
        assert torch.equal(weight[:, : before.shape[1]], before)


def test_frozen_pmf_leaves_the_voice_the_modality_logits_only(text_checkpoint: Path) -> None:
    """Voice v7's set-up: PMF's audio columns reset and every PMF frozen; the voice still moves
    the output, through the modality logits, and PMF never learns to read it."""
    from unimse.backbones import load_tokenizer
    from unimse.fusion import PMF
    from unimse.processor import LabelTargets, UniMSEProcessor

    torch.manual_seed(5)
    config = tiny_unimse_config(visual=None, modality_logits=True)
    model = build_model(config)
    init_from_checkpoint(model, text_checkpoint)
    reset_pmf_inputs(model, ("audio",))
    masked = preserve_text_path(model)
    freeze_modules(model, ("backbone.encoder.layer.*.pmf",))
    pmfs = [m for m in model.modules() if isinstance(m, PMF)]
    assert pmfs and not any(p.requires_grad for m in pmfs for p in m.parameters())
    processor = UniMSEProcessor(config, load_tokenizer(config))
    rng = np.random.default_rng(1)
    voiced = [
        ModelInput(t, "a", acoustic=rng.standard_normal((12, 8)).astype(np.float32))
        for t in ("", "fine", "", "oh no")
    ]
    targets = [LabelTargets(polarity=i % 3, score=0.0, meld=i, iemocap=i) for i in range(4)]
    batch = processor.encode(voiced, targets)
    trainable = [p for p in model.parameters() if p.requires_grad]
    train_steps(model, batch, torch.optim.AdamW(trainable, lr=1e-2))
    for module in pmfs:
        assert module.down.weight[:, module.columns("audio")].abs().max() == 0
        assert module.out.weight[:, module.columns("audio")].abs().max() == 0
    assert masked  # the masked PMF weights exist but are frozen now
    model.eval()
    with torch.no_grad():
        voice = model(processor.encode(voiced)).meld_logits
        silent = model(processor.encode([ModelInput(i.text, "a") for i in voiced])).meld_logits
    assert not torch.allclose(voice, silent)


def test_trainer_runs_stage_two_on_audio_data(
    shared_data: Path, text_checkpoint: Path, tmp_path: Path
) -> None:
    """init_from + preserve_text + EMO-DB/speech_av + modality dropout + simulated visual +
    neutral-voice consistency through the real Trainer (tiny random backbone, a few real
    samples); text-only predictions survive."""
    from safetensors.torch import load_file

    from train.config import TrainConfig
    from train.loop import Trainer
    from unimse.inference import EmotionPredictor

    model = tiny_unimse_config(acoustic=ACOUSTIC_SPEC, visual=VISUAL_SPEC).to_dict()
    model["losses"] = {**model["losses"], "infonce_acoustic": 0.0, "infonce_visual": 0.0}
    config = TrainConfig.from_dict(
        {
            "model": model,
            "data": {
                "datasets": ["meld", "emodb", "speech_av"],
                "data_dir": str(shared_data),
                "limit_per_dataset": 24,
                "dev_datasets": ["emodb"],
                "transcripts": True,
                "simulated_visual": {"meld": 1.0},
                "neutral_audio": {"meld": 0.5},
            },
            "train": {
                "epochs": 1,
                "batch_size": 16,
                "init_from": str(text_checkpoint),
                "preserve_text": True,
                "modality_dropout": 0.5,
                "voice_consistency": 1.0,
                "threads": 1,
            },
        }
    )
    state = Trainer(config, tmp_path / "run").run()
    best = tmp_path / "run" / "best"
    assert state["best_epoch"] == 1 and set(state["history"][0]["dev"]) == {"emodb"}
    assert "voice_consistency" in state["history"][0]["train_loss"]
    meta = json.loads((best / "metrics.json").read_text())
    assert meta["init_from"] == str(text_checkpoint) and meta["preserve_text"] is True
    stored = load_file(str(best / "model.safetensors"))
    assert any(k.startswith("fusion.acoustic.") for k in stored)
    assert any(k.startswith("fusion.visual.") for k in stored)
    texts = [ModelInput("I am so happy for you", "a"), ModelInput("leave me alone", "b")]
    before = EmotionPredictor.load(text_checkpoint, device="cpu").predict(texts)
    after = EmotionPredictor.load(best, device="cpu").predict(texts)
    for old, new in zip(before, after, strict=True):
        for emotion in MELD_EMOTIONS:  # equal up to the float16 storage of `best`
            assert abs(old.emotion_probs[emotion] - new.emotion_probs[emotion]) < 0.01


# --- modality dropout and simulated visual --------------------------------------------------


def _encode(item: ModelInput) -> tuple[list[int], int, int]:
    return [len(item.text)], 0, 1


def test_modality_dropout_blanks_words_at_the_configured_rate() -> None:
    feats = np.zeros((5, 4), np.float32)
    context = (DialogueTurn("a", "earlier words"),)
    inputs = [ModelInput(f"words {i}", "s", context, acoustic=feats) for i in range(1000)]
    inputs += [ModelInput(f"text only {i}", "s", context) for i in range(200)]
    augmenter = EpochAugmenter.build(
        [], inputs, [_encode(x) for x in inputs], _encode, modality_dropout=0.3
    )
    view = augmenter.epoch(seed=5)
    blanked = [i for i, x in enumerate(view.inputs) if not x.text]
    assert 0.25 < len(blanked) / 1000 < 0.35 and view.text_blanked == len(blanked)
    assert all(i < 1000 for i in blanked)  # samples without audio keep their words
    assert all(view.inputs[i].context == context for i in blanked)  # context kept
    assert all(view.encoded[i] == ([0], 0, 1) for i in blanked)  # re-encoded without words
    assert [x.text for x in augmenter.epoch(seed=5).inputs] == [x.text for x in view.inputs]
    assert [x.text for x in augmenter.epoch(seed=6).inputs] != [x.text for x in view.inputs]
    assert augmenter.inputs[blanked[0]].text  # the fixed samples are not modified


def test_simulated_visual_sequences_are_valid_probability_rows() -> None:
    rng = np.random.default_rng(0)
    options = SimulatedVisualOptions(neutral_display=0.0)
    np.testing.assert_allclose(FER_CONFUSION.sum(axis=1), 1.0)
    for expression in MELD_EMOTIONS:
        tops = []
        for _ in range(200):
            seq = simulate_fer_sequence(expression, rng, options)
            assert seq.dtype == np.float32 and seq.shape[1] == 7
            assert 3 <= len(seq) <= 12
            assert (seq >= 0).all() and np.allclose(seq.sum(axis=1), 1.0, atol=1e-5)
            tops.append(int(seq.mean(axis=0).argmax()))
        hit = np.mean([t == MELD_EMOTIONS.index(expression) for t in tops])
        assert hit > 0.3, (expression, hit)  # the simulated FER is right more often than not
    with pytest.raises(ValueError, match="unknown expression"):
        simulate_fer_sequence("boredom", rng)


def test_simulated_visual_only_where_a_gold_expression_exists() -> None:
    from train.data import Sample
    from train.unification import UnifiedSample

    def unified(dataset: str, meld: str | None = None, iemocap: str | None = None) -> UnifiedSample:
        s = Sample("u", dataset, "train", "d", "s", "t", meld_emotion=meld, iemocap_emotion=iemocap)
        return UnifiedSample(
            s, "neutral", 0.0, meld or "neutral", iemocap or "neutral", frozenset()
        )

    samples = [unified("meld", "joy"), unified("mosi"), unified("iemocap", iemocap="frustrated")]
    samples += [unified("iemocap", iemocap="excited")]
    inputs = [u.sample.to_input() for u in samples]
    augmenter = EpochAugmenter.build(
        samples,
        inputs,
        [_encode(x) for x in inputs],
        _encode,
        simulated_visual={"meld": 1.0, "iemocap": 1.0},
        uses_visual=True,
    )
    view = augmenter.epoch(seed=0)
    assert [x.visual is not None for x in view.inputs] == [True, False, False, True]
    assert expression_of("iemocap", None, "excited") == "joy"
    with pytest.raises(ValueError, match="visual feature spec"):
        EpochAugmenter.build(samples, inputs, [], _encode, simulated_visual={"meld": 1.0})


def test_neutral_audio_pairs_text_samples_with_neutral_clips_only() -> None:
    from dataclasses import replace

    from train.data import Sample
    from train.unification import UnifiedSample

    def unified(dataset: str, emotion: str, text: str = "words") -> UnifiedSample:
        s = Sample("u", dataset, "train", "d", "s", text, meld_emotion=emotion)
        return UnifiedSample(s, "neutral", 0.0, emotion, "neutral", frozenset())

    neutral_clip, angry_clip = np.full((4, 3), 1.0, np.float32), np.full((4, 3), 2.0, np.float32)
    samples = [unified("meld", "joy") for _ in range(300)] + [unified("mosi", "joy")]
    samples += [unified("emodb", "neutral", ""), unified("emodb", "anger", "")]
    samples += [unified("emodb", "neutral", "Der Lappen liegt auf dem Eisschrank.")]
    inputs = [u.sample.to_input() for u in samples]
    inputs[-3] = replace(inputs[-3], acoustic=neutral_clip)
    inputs[-2] = replace(inputs[-2], acoustic=angry_clip)
    inputs[-1] = replace(inputs[-1], acoustic=neutral_clip * 3)  # transcript copy: not a clip
    augmenter = EpochAugmenter.build(
        samples, inputs, [_encode(x) for x in inputs], _encode, neutral_audio={"meld": 0.5}
    )
    view = augmenter.epoch(seed=3)
    paired = [i for i in range(300) if view.inputs[i].acoustic is not None]
    assert 0.4 < len(paired) / 300 < 0.6 and view.neutral_audio == len(paired)
    assert all(view.inputs[i].acoustic is neutral_clip for i in paired)  # only the neutral clip
    assert view.inputs[300].acoustic is None  # mosi is not listed
    assert all(view.inputs[i].text == "words" for i in paired)  # words and labels unchanged
    assert view.encoded == augmenter.encoded
    assert all(x.acoustic is None for x in augmenter.inputs[:300])  # fixed samples unmodified
    with pytest.raises(ValueError, match="no neutral training clip"):
        EpochAugmenter.build(samples[:-3], inputs[:-3], [], _encode, neutral_audio={"meld": 0.5})


def test_neutral_audio_tts_share_uses_the_samples_own_spoken_words() -> None:
    from train.data import Sample
    from train.unification import UnifiedSample

    def unified(dataset: str, emotion: str, text: str) -> UnifiedSample:
        s = Sample("u", dataset, "train", "d", "s", text, meld_emotion=emotion)
        return UnifiedSample(s, "neutral", 0.0, emotion, "neutral", frozenset())

    samples = [unified("meld", "joy", f"line {i}") for i in range(400)]
    samples.append(unified("emodb", "neutral", ""))
    inputs = [u.sample.to_input() for u in samples]
    clip = np.zeros((4, 3), np.float32)
    inputs[-1] = ModelInput("", acoustic=clip)
    spoken = {f"line {i}": np.full((2, 3), float(i), np.float32) for i in range(400)}
    asked: list[str] = []

    def speak(texts: list[str]) -> list[np.ndarray | None]:
        asked.extend(texts)
        return [None if t == "line 0" else spoken[t] for t in texts]  # line 0: inaudible

    augmenter = EpochAugmenter.build(
        samples,
        inputs,
        [_encode(x) for x in inputs],
        _encode,
        neutral_audio={"meld": 1.0},
        spoken_share=0.5,
        speak=speak,
    )
    assert sorted(asked) == sorted(spoken) and 0 not in augmenter.spoken
    view = augmenter.epoch(seed=1)
    own = [i for i in range(400) if view.inputs[i].acoustic is spoken.get(f"line {i}")]
    corpus = [i for i in range(400) if view.inputs[i].acoustic is clip]
    assert view.neutral_audio == 400 and len(own) + len(corpus) == 400
    assert 0.4 < len(own) / 400 < 0.6 and 0 in corpus
    with pytest.raises(ValueError, match="synthesiser"):
        EpochAugmenter.build(
            samples, inputs, [], _encode, neutral_audio={"meld": 1.0}, spoken_share=0.5
        )


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_tts_features_are_cached_per_text_and_survive_odd_text(tmp_path: Path) -> None:
    from train.tts_audio import tts_features, voice_and_rate

    calls: list[int] = []

    def extract(audio: np.ndarray) -> np.ndarray:
        calls.append(len(audio))
        return np.ones((len(audio) // 320 + 1, ACOUSTIC_SPEC.dim), np.float32)

    texts = ["-Yeah, right.", "I see.", "..."]
    first = tts_features(texts, ACOUSTIC_SPEC, extract, cache=tmp_path)
    assert first[0] is not None and first[1] is not None  # a leading dash is text, not an option
    assert len(first[0]) > 10 and voice_and_rate("I see.") == voice_and_rate("I see.")
    again = tts_features(texts, ACOUSTIC_SPEC, extract, cache=tmp_path)
    assert len(calls) == sum(f is not None for f in first)  # second run: all from the cache
    for a, b in zip(first, again, strict=True):
        assert (a is None and b is None) or np.array_equal(a, b)


def test_neutral_audio_config_needs_text_datasets_and_an_audio_corpus() -> None:
    from train.config import DataConfig

    DataConfig(datasets=("meld", "emodb"), neutral_audio={"meld": 0.5})
    with pytest.raises(ValueError, match="text datasets"):
        DataConfig(datasets=("meld", "emodb"), neutral_audio={"emodb": 0.5})
    with pytest.raises(ValueError, match="probability"):
        DataConfig(datasets=("meld", "emodb"), neutral_audio={"meld": 1.5})
    with pytest.raises(ValueError, match="needs an audio corpus"):
        DataConfig(datasets=("meld", "iemocap"), neutral_audio={"meld": 0.5})


# --- evaluation CLI --------------------------------------------------------------------------


def _cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:  # type: ignore[type-arg]
    from realtime.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_emodb_eval_cli_on_a_folder_of_wavs(
    tiny_multimodal_checkpoint: Path,
    shared_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    for name in ("03a01Wa", "03a01Nc", "08a02Fe", "10b03Tb", "12a01Lb", "13a05Ea", "12a05Ab"):
        shutil.copy(shared_data / "emodb" / f"{name}.wav", folder)
    result = _cli_json(
        capsys,
        "eval",
        "--dataset",
        "emodb",
        "--data-dir",
        str(folder),
        "--checkpoint",
        str(tiny_multimodal_checkpoint),
        "--json",
    )
    assert result["n"] == 7 and result["n_fused"] == 7 and result["split"] == "all"
    assert result["acoustic"] == "emotrack-acoustic-v1"
    assert result["language"] == "de"  # EMO-DB is German: what picks a voice map
    for key in ("audio_uar", "audio_wa", "fused_uar", "fused_wa"):
        assert 0.0 <= result[key] <= 100.0
    assert {f"audio_recall_{c}" for c in ("anger", "boredom", "neutral")} <= set(result)


def test_speech_av_eval_cli_reports_correlations(
    tiny_multimodal_checkpoint: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = _cli_json(
        capsys,
        "eval",
        "--dataset",
        "speech_av",
        "--split",
        "test",
        "--data-dir",
        str(shared_data),
        "--checkpoint",
        str(tiny_multimodal_checkpoint),
        "--json",
    )
    assert result["n"] == 12
    for key in ("valence_corr", "arousal_corr", "arousal_corr_intensity"):
        assert -1.0 <= result[key] <= 1.0


def test_eval_cli_bad_emodb_folder_is_one_line(
    tiny_multimodal_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from realtime.cli import main

    (tmp_path / "hello.wav").write_bytes(b"")
    argv = ["eval", "--dataset", "emodb", "--data-dir", str(tmp_path)]
    assert main([*argv, "--checkpoint", str(tiny_multimodal_checkpoint)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not an EMO-DB file name" in err[0]


# --- replays ---------------------------------------------------------------------------------


def trained_multimodal_checkpoint() -> Path:
    """A trained checkpoint with an acoustic spec, or a skip that says why there is none."""
    from unimse.checkpoint import default_checkpoint_dir
    from unimse.config import UniMSEConfig

    candidates = [REPO / "runs" / "multimodal" / "best", default_checkpoint_dir()]
    if os.environ.get("EMOTRACK_TEST_MULTIMODAL_CHECKPOINT"):
        candidates.insert(0, Path(os.environ["EMOTRACK_TEST_MULTIMODAL_CHECKPOINT"]))
    for folder in candidates:
        config = folder / "config.json"
        if config.is_file() and UniMSEConfig.load(config).acoustic is not None:
            return folder
    pytest.skip(
        "no trained checkpoint with an acoustic spec: runs/multimodal/best is missing and the "
        "shipped default is text only (train one with configs/train_multimodal.toml)"
    )


def emodb_as_16k_wav(source: Path, target: Path) -> Path:
    """An EMO-DB file as 16 kHz mono wav, with silence around it so the VAD cuts one utterance."""
    from train.audio_data import read_audio
    from unimse.synth import write_audio

    audio = read_audio(source, trim_zero_padding=True)
    silence = np.zeros(8000, np.float32)
    return write_audio(target, np.concatenate([silence, audio, silence, silence]))


def replay_results(media: Path, checkpoint: Path, out: Path, *extra: str) -> list[dict]:  # type: ignore[type-arg]
    return replay_to_jsonl(media, checkpoint, out, *extra, timeout=240)[1]


@pytest.mark.slow
def test_same_sentence_in_two_emotions_gives_different_predictions(
    shared_data: Path, tmp_path: Path
) -> None:
    checkpoint = trained_multimodal_checkpoint()
    results = {}
    for name in ("03a01Wa", "03a01Nc"):  # speaker 03, "Der Lappen liegt auf dem Eisschrank."
        wav = emodb_as_16k_wav(shared_data / "emodb" / f"{name}.wav", tmp_path / f"{name}.wav")
        found = replay_results(wav, checkpoint, tmp_path / f"{name}.jsonl")
        assert found, f"no utterance found in {name}"
        assert all("audio" in r["modalities"] for r in found)
        results[name] = found[0]
    anger, neutral = results["03a01Wa"], results["03a01Nc"]
    distance = sum(
        abs(anger["emotion_probs"][e] - neutral["emotion_probs"][e]) for e in MELD_EMOTIONS
    )
    differs = (anger["emotion"], anger["polarity"]) != (neutral["emotion"], neutral["polarity"])
    assert differs or distance >= 0.2, (anger, neutral)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_replaying_a_video_with_a_face_uses_video(
    tiny_multimodal_checkpoint: Path, tmp_path: Path
) -> None:
    from test_features import draw_face

    from unimse.synth import speak, speech_bounds, write_video

    speech = speak("I am so happy to see you again today.", "en-us+m3")
    first, last = speech_bounds(speech)
    silence = np.zeros(8000, np.float32)
    audio = np.concatenate([silence, speech[first:last], silence, silence])
    movie = tmp_path / "face.mp4"
    write_video(movie, draw_face(smile=True), audio)
    results = replay_results(movie, tiny_multimodal_checkpoint, tmp_path / "out.jsonl")
    assert results
    assert all({"text", "audio", "video"} <= set(r["modalities"]) for r in results), results
    no_camera = replay_results(
        movie, tiny_multimodal_checkpoint, tmp_path / "no-video.jsonl", "--no-video"
    )
    assert no_camera and all("video" not in r["modalities"] for r in no_camera)


def test_a_refit_trains_on_the_dev_speakers_for_the_chosen_epoch_count(
    shared_data: Path, text_checkpoint: Path, tmp_path: Path
) -> None:
    """[data] refit + [train] stop_epoch: EMO-DB's dev speaker trains too, nothing is evaluated,
    and the epoch the count names is kept as best/; [data] no_transcripts keeps EMO-DB audio
    only."""
    from train.config import TrainConfig
    from train.loop import Trainer

    model = tiny_unimse_config(acoustic=ACOUSTIC_SPEC, visual=None).to_dict()
    model["losses"] = {**model["losses"], "infonce_acoustic": 0.0}
    raw = {
        "model": model,
        "data": {
            "datasets": ["emodb"],
            "data_dir": str(shared_data),
            "dev_datasets": ["emodb"],
            "refit": True,
            "transcripts": True,
            "no_transcripts": ["emodb"],
        },
        "train": {
            "epochs": 3,
            "stop_epoch": 1,
            "batch_size": 32,
            "init_from": str(text_checkpoint),
            "preserve_text": True,
            "threads": 1,
        },
    }
    trainer = Trainer(TrainConfig.from_dict(raw), tmp_path / "run")
    samples, dev = trainer.load_data()
    assert dev == {}
    assert {u.sample.split for u in samples} == {"train", "dev"}  # speakers 03-11 and 12
    assert {u.sample.text for u in samples} == {""}  # no_transcripts: audio only
    state = trainer.run()
    assert (state["epoch"], state["best_epoch"]) == (1, 1)
    assert "dev" not in state["history"][0]
    meta = json.loads((tmp_path / "run" / "best" / "metrics.json").read_text())
    assert "refit" in meta["selection"] and meta["epoch"] == 1
    for data, train, match in (
        ({"refit": True}, {"epochs": 3, "stop_epoch": 1}, "dev_datasets must list only"),
        ({"refit": True, "dev_datasets": ["emodb"]}, {}, "stop_epoch"),
        ({}, {"epochs": 2, "stop_epoch": 3}, "stop_epoch must be in"),
        ({"no_transcripts": ["meld"]}, {}, "no_transcripts lists"),
    ):
        with pytest.raises(ValueError, match=match):
            TrainConfig.from_dict(
                {"model": model, "data": {"datasets": ["emodb", "meld"], **data}, "train": train}
            )
