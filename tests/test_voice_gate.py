"""The voice gate: a neutral voice's vector goes to zero, the gate learns from its own target."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from conftest import tiny_unimse_config

from train.audio_data import RAVDESS_LABELS, AudioSample
from train.audio_datasets import to_sample, unified_audio
from train.data import Sample
from train.loop import targets_for, voice_emotional
from train.unification import UnifiedSample
from unimse.backbones import load_tokenizer
from unimse.config import FeatureSpec, LossWeights
from unimse.factory import build_model
from unimse.fusion import StatsEncoder
from unimse.inputs import ModelInput
from unimse.labels import EMODB_LABELS
from unimse.losses import voice_gate_cross_entropy
from unimse.processor import UniMSEProcessor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def gated_spec(dim: int = 8) -> FeatureSpec:
    return FeatureSpec("test-acoustic", dim, "stats", gate=True)


def test_a_voice_gate_needs_the_stats_encoder() -> None:
    with pytest.raises(ValueError, match="voice gate"):
        FeatureSpec("x", 4, "lstm", gate=True)


def test_a_closed_gate_gives_the_missing_voices_vector() -> None:
    encoder = StatsEncoder(gated_spec(12), tiny_unimse_config()).eval()
    assert encoder.gate is not None
    torch.manual_seed(0)
    voice = torch.randn(2, 5, 12)
    lengths = torch.tensor([5, 0])
    with torch.no_grad():
        encoder.gate.bias.fill_(-60.0)  # shut
        shut, _, logits = encoder.gated(voice, lengths)
        encoder.gate.bias.fill_(60.0)  # open: the ungated projection
        opened, _ = encoder(voice, lengths)
        encoder.gate = None
        ungated, _ = encoder(voice, lengths)
    assert logits is not None and logits[1] == 0  # no voice: no logit
    assert shut.abs().max() < 1e-12
    torch.testing.assert_close(opened, ungated)
    assert opened[0].abs().max() > 0 and opened[1].abs().max() == 0


def test_the_gate_loss_counts_voiced_rows_with_a_target_only() -> None:
    logits = torch.tensor([2.0, -1.0, 5.0, 0.3], requires_grad=True)
    target = torch.tensor([1.0, 0.0, -1.0, 0.0])
    lengths = torch.tensor([10, 10, 10, 0])
    loss = voice_gate_cross_entropy(logits, target, lengths)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[:2].detach(), target[:2])
    torch.testing.assert_close(loss.detach(), expected)
    loss.backward()
    assert logits.grad is not None and logits.grad[2:].abs().max() == 0
    none = voice_gate_cross_entropy(logits, torch.full((4,), -1.0), lengths)
    assert none.item() == 0 and none.requires_grad


def _acted(dataset: str, emotion: str) -> Sample:
    labels = RAVDESS_LABELS if dataset == "ravdess" else EMODB_LABELS
    clip = AudioSample("x", "01", torch.zeros(1).numpy(), labels[emotion], dataset, emotion)
    return to_sample(clip, "train", None)


def test_acted_clips_carry_the_language_of_their_corpus_to_the_model() -> None:
    """EMO-DB's clips are German (a German voice map reads them), RAVDESS's English."""
    assert _acted("emodb", "anger").to_input().language == "de"
    assert _acted("ravdess", "angry").to_input().language == "en"


@pytest.mark.parametrize(
    ("dataset", "emotion", "expected"),
    [
        ("ravdess", "angry", 1.0),
        ("ravdess", "calm", 0.0),
        ("ravdess", "neutral", 0.0),
        ("emodb", "boredom", 1.0),  # neutral emotion, negative polarity: a signal
        ("emodb", "neutral", 0.0),
    ],
)
def test_acted_clips_get_the_gate_target_of_their_emotion(
    dataset: str, emotion: str, expected: float
) -> None:
    item = unified_audio(_acted(dataset, emotion))
    assert voice_emotional(item) == expected
    assert targets_for(item, 0.5).voice_emotional == expected


def test_words_paired_with_neutral_voices_target_a_shut_gate() -> None:
    meld = Sample("m1", "meld", "train", "d1", "Ross", "I can't believe it!")
    item = UnifiedSample(meld, "positive", 1.0, "surprise", "excited", frozenset())
    assert voice_emotional(item) == 0.0


def test_the_model_trains_its_gate_with_the_gate_loss() -> None:
    config = tiny_unimse_config(
        acoustic=gated_spec(), losses=LossWeights(voice_gate=1.0), modality_logits=True
    )
    model = build_model(config)
    processor = UniMSEProcessor(config, load_tokenizer(config))
    torch.manual_seed(0)
    inputs = [
        ModelInput(text="", acoustic=torch.randn(6, 8).numpy()),
        ModelInput(text="fine", acoustic=torch.randn(4, 8).numpy()),
    ]
    targets = [
        targets_for(unified_audio(_acted("ravdess", "angry")), 0.5),
        targets_for(unified_audio(_acted("ravdess", "calm")), 0.5),
    ]
    out = model(processor.encode(inputs, targets))
    assert out.losses is not None and "voice_gate" in out.losses
    assert out.loss is not None
    out.loss.backward()
    gate = model.fusion.acoustic.gate
    assert gate.weight.grad is not None and gate.weight.grad.abs().sum() > 0


def test_voice_intensity_moves_the_intensity_only_with_a_voice_and_leaves_the_vector() -> None:
    config = tiny_unimse_config(modality_logits=True, voice_intensity=True, visual=None)
    model = build_model(config).eval()
    head = model.modality_logits.acoustic_intensity
    assert head is not None and head.weight.abs().max() == 0  # starts as no shift
    processor = UniMSEProcessor(config, load_tokenizer(config))
    torch.manual_seed(2)
    voice = torch.randn(9, 8).numpy()
    texts = ["", "so happy"]
    with torch.no_grad():
        text_only = model(processor.encode([ModelInput(text=t) for t in texts])).score
        head.weight.fill_(50.0)
        voiced = model(processor.encode([ModelInput(text=t, acoustic=voice) for t in texts]))
        again = model(processor.encode([ModelInput(text=t) for t in texts])).score
    assert torch.equal(text_only, again)  # no voice: exactly the heads' intensity
    assert not torch.allclose(voiced.score, text_only)
    assert voiced.score.abs().max() <= 3.0  # clamped to the intensity range
    model.train()
    encoder = model.fusion.acoustic
    batch = processor.encode([ModelInput(text="", acoustic=voice)])
    model.zero_grad()
    model(batch).score.sum().backward()
    assert head.weight.grad is not None
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in encoder.parameters())


def test_voice_intensity_needs_modality_logits() -> None:
    with pytest.raises(ValueError, match="voice_intensity"):
        tiny_unimse_config(voice_intensity=True)


@pytest.mark.parametrize("hinge", ["relu", "softplus"])
def test_the_voice_hinge_never_argues_for_neutral_and_leaves_text_only_outputs(hinge: str) -> None:
    config = tiny_unimse_config(modality_logits=True, voice_hinge=hinge, visual=None)
    model = build_model(config).eval()
    logits = model.modality_logits
    if hinge == "relu":  # small random start: a relu hinge at exactly zero passes no gradient
        assert logits.acoustic.weight.abs().max() > 0
    processor = UniMSEProcessor(config, load_tokenizer(config))
    torch.manual_seed(3)
    voice = torch.randn(9, 8).numpy()
    texts = ["okay then", "so happy"]  # words: the hinge applies
    starts = (0, 3, 3 + len(config.meld_emotions))
    heads = (config.polarities, config.meld_emotions, config.iemocap_emotions)
    seen: list[torch.Tensor] = []
    hook = logits.acoustic.register_forward_hook(lambda _m, args, _o: seen.append(args[0]))
    with torch.no_grad():
        logits.acoustic.weight.normal_()
        text_only = model(processor.encode([ModelInput(text=t) for t in texts]))
        model(processor.encode([ModelInput(text="", acoustic=voice)]))
        # A voice map that says "neutral" loudly (every head): the hinge makes it (about) no push.
        logits.acoustic.weight.zero_()
        for start, names in zip(starts, heads, strict=True):
            logits.acoustic.weight[start + names.index("neutral")] = 50.0 * seen[-1][0]
        voiced = model(processor.encode([ModelInput(text=t, acoustic=voice) for t in texts]))
        rows = torch.randn(4, logits.acoustic.out_features)
        pushes = logits.hinged(rows, torch.ones(4, 1))
        missing = logits.hinged(rows, torch.zeros(4, 1))
    hook.remove()
    for name in ("polarity_logits", "meld_logits", "iemocap_logits"):
        torch.testing.assert_close(
            getattr(voiced, name), getattr(text_only, name), atol=1e-4, rtol=0
        )
    assert pushes.min() >= 0 and missing.abs().max() == 0
    for start, names in zip(starts, heads, strict=True):
        assert pushes[:, start + names.index("neutral")].abs().max() == 0
    model.train()
    model.zero_grad()
    with torch.no_grad():
        logits.acoustic.weight.normal_(std=1e-3)
    batch = processor.encode([ModelInput(text="", acoustic=voice)])
    out = model(batch)
    (out.polarity_logits.sum() + out.meld_logits.sum() + out.iemocap_logits.sum()).backward()
    assert logits.acoustic.weight.grad is not None and logits.acoustic.weight.grad.abs().sum() > 0


def test_the_voice_hinge_needs_modality_logits_and_a_known_kind() -> None:
    with pytest.raises(ValueError, match="voice_hinge"):
        tiny_unimse_config(voice_hinge="relu")
    with pytest.raises(ValueError, match="voice_hinge"):
        tiny_unimse_config(modality_logits=True, voice_hinge="yes")


def hinged_model(seed: int) -> tuple[Any, UniMSEProcessor, np.ndarray]:
    """A tiny model with a relu-hinged voice, its processor and a random voice."""
    config = tiny_unimse_config(modality_logits=True, voice_hinge="relu", visual=None)
    model = build_model(config).eval()
    torch.manual_seed(seed)
    return model, UniMSEProcessor(config, load_tokenizer(config)), torch.randn(9, 8).numpy()


def worded_case(seed: int) -> tuple[Any, Any, Any, torch.Tensor]:
    """A hinged model with a random voice map: its modality logits, the batch "so happy" + a voice,
    and the words' own MELD logits."""
    model, processor, voice = hinged_model(seed)
    with torch.no_grad():
        model.modality_logits.acoustic.weight.normal_()
        text = model(processor.encode([ModelInput(text="so happy")])).meld_logits
    batch = processor.encode([ModelInput(text="so happy", acoustic=voice)])
    return model, model.modality_logits, batch, text


def test_the_voice_hinge_applies_to_utterances_with_words_only() -> None:
    model, processor, voice = hinged_model(4)
    config = model.config
    with torch.no_grad():
        model.modality_logits.acoustic.weight.normal_()
        batch = processor.encode([ModelInput(text="", acoustic=voice), ModelInput(text="so happy")])
        assert batch.words is not None and batch.words.tolist() == [0.0, 1.0]
        without_words = model(batch).meld_logits[0]
        batch.words = None  # every row hinged
        hinged = model(batch).meld_logits[0]
        batch.words = torch.zeros(2)  # no row hinged
        unhinged = model(batch).meld_logits[0]
    neutral = config.meld_emotions.index("neutral")
    assert torch.equal(without_words, unhinged)
    assert not torch.equal(without_words, hinged)
    # Without words the voice may push neutral up; hinged it never moves the neutral logit.
    with torch.no_grad():
        text = model(processor.encode([ModelInput(text=""), ModelInput(text="so happy")]))
    assert hinged[neutral] == text.meld_logits[0, neutral]


def test_a_neutral_share_adds_back_part_of_the_unhinged_voice_on_worded_rows() -> None:
    model, logits, batch, _ = worded_case(5)
    outputs = []
    with torch.no_grad():
        for share in (0.0, 0.25, 1.0):
            logits.neutral_share = share
            outputs.append(model(batch).meld_logits)
        batch.words = torch.zeros(1)  # no words: the raw voice
        raw = model(batch).meld_logits
    hinged, quarter, full = outputs
    torch.testing.assert_close(full, raw)
    torch.testing.assert_close(quarter, hinged + 0.25 * (raw - hinged))
    assert not torch.allclose(hinged, raw)
    with pytest.raises(ValueError, match="voice_neutral_share"):
        tiny_unimse_config(modality_logits=True, voice_neutral_share=0.5)


def test_an_unsure_share_follows_how_sure_the_words_are() -> None:
    model, logits, batch, text = worded_case(6)
    with torch.no_grad():
        logits.neutral_share = 0.0
        hinged = model(batch).meld_logits
        batch.words = torch.zeros(1)
        raw = model(batch).meld_logits
        batch.words = torch.ones(1)
        logits.neutral_share, logits.share_by = 0.8, "unsure"
        unsure = model(batch).meld_logits
    share = 0.8 * (1.0 - torch.softmax(text, dim=-1).amax())
    torch.testing.assert_close(unsure, hinged + share * (raw - hinged))
    with pytest.raises(ValueError, match="voice_share_by"):
        tiny_unimse_config(voice_share_by="loud")


def test_a_voice_margin_and_cap_bound_what_a_hinged_voice_adds_to_words() -> None:
    model, logits, batch, words = worded_case(7)
    text = words[0]
    neutral = model.config.meld_emotions.index("neutral")
    with torch.no_grad():
        batch.words = torch.zeros(1)  # no words: the raw voice, whatever the margin
        raw = model(batch).meld_logits[0] - text
        batch.words = torch.ones(1)
        pushes = []
        for margin, cap in ((0.0, 0.0), (0.5, 0.0), (1e6, 0.0), (0.5, 0.1)):
            logits.margin, logits.cap = margin, cap
            pushes.append(model(batch).meld_logits[0] - text)
    above = raw - raw[neutral]
    torch.testing.assert_close(pushes[0], above.clamp(min=0.0))
    torch.testing.assert_close(pushes[1], (above - 0.5).clamp(min=0.0))
    assert bool((pushes[0] > 0).any()) and not bool(pushes[2].any())
    torch.testing.assert_close(pushes[3], (above - 0.5).clamp(min=0.0, max=0.1))  # capped
    with pytest.raises(ValueError, match="voice_margin"):
        tiny_unimse_config(modality_logits=True, voice_margin=0.5)
    with pytest.raises(ValueError, match="voice_margin"):
        tiny_unimse_config(modality_logits=True, voice_hinge="relu", voice_margin=-1.0)
    with pytest.raises(ValueError, match="voice_cap"):
        tiny_unimse_config(modality_logits=True, voice_cap=1.0)


def test_a_step_hinge_adds_a_whole_lead_past_the_margin_and_nothing_below_it() -> None:
    model, logits, batch, words = worded_case(7)
    text = words[0]
    neutral = model.config.meld_emotions.index("neutral")
    with torch.no_grad():
        batch.words = torch.zeros(1)
        raw = model(batch).meld_logits[0] - text
        alone = model(batch).meld_logits[0]
        batch.words = torch.ones(1)
        logits.hinge = "step"
        lead = raw - raw[neutral]
        margin = float(lead.max()) / 2  # one class or more passes it, neutral never does
        logits.margin = margin
        stepped = model(batch).meld_logits[0] - text
        logits.margin = 0.0
        at_zero = model(batch).meld_logits[0] - text
        batch.words = torch.zeros(1)
        alone_stepped = model(batch).meld_logits[0]
    torch.testing.assert_close(stepped, torch.where(lead > margin, lead, torch.zeros_like(lead)))
    assert bool((stepped > margin).any()) and float(stepped[neutral]) == 0.0
    torch.testing.assert_close(at_zero, lead.clamp(min=0.0))  # margin 0: relu's push
    torch.testing.assert_close(alone_stepped, alone)  # without words the voice is unhinged
    assert tiny_unimse_config(modality_logits=True, voice_hinge="step").voice_hinge == "step"


def test_a_wordless_factor_weighs_the_voice_alone_and_leaves_words_as_they_were() -> None:
    model, logits, batch, words = worded_case(8)
    text = words[0]
    with torch.no_grad():
        batch.words = torch.ones(1)
        worded = model(batch).meld_logits[0]
        batch.words = torch.zeros(1)
        alone = model(batch).meld_logits[0] - text
        logits.wordless = 2.5
        louder = model(batch).meld_logits[0] - text
        batch.words = torch.ones(1)
        worded_after = model(batch).meld_logits[0]
    torch.testing.assert_close(louder, 2.5 * alone)
    assert bool(alone.abs().sum() > 0)
    torch.testing.assert_close(worded_after, worded)
    with pytest.raises(ValueError, match="voice_wordless"):
        tiny_unimse_config(modality_logits=True, voice_wordless=0.0)


def test_words_that_read_as_neutral_hear_the_voice_up_to_its_weight_without_words() -> None:
    from factories import heads_output

    from unimse.config import UniMSEConfig
    from unimse.modeling import ModalityLogits

    with pytest.raises(ValueError, match="voice_neutral_words must be >= 0"):
        UniMSEConfig(backbone="minilm", modality_logits=True, voice_neutral_words=-1.0)
    with pytest.raises(ValueError, match="voice_neutral_words needs modality_logits"):
        UniMSEConfig(backbone="minilm", voice_neutral_words=4.0)
    settings = {"modality_logits": True, "voice_hinge": "relu", "voice_wordless": 3.0}
    plain = ModalityLogits(tiny_unimse_config(**settings)).eval()
    gated = ModalityLogits(tiny_unimse_config(**settings, voice_neutral_words=4.0)).eval()
    torch.manual_seed(2)
    with torch.no_grad():
        plain.acoustic.weight.normal_()
        gated.acoustic.weight.copy_(plain.acoustic.weight)
    config = tiny_unimse_config()
    meld = torch.zeros(3, len(config.meld_emotions))
    meld[0, config.meld_emotions.index("neutral")] = 8.0  # words that say nothing
    meld[1, config.meld_emotions.index("anger")] = 8.0  # angry words
    out = heads_output(meld)
    voice = torch.randn(3, config.modality_dim)
    no_face = torch.zeros_like(voice)
    words = torch.tensor([1.0, 1.0, 0.0])
    p = torch.softmax(meld, -1)[:, config.meld_emotions.index("neutral")] ** 4
    gain = 1.0 + 2.0 * p * words  # up to voice_wordless (3) where the words read as neutral
    expected = plain(out, gain.unsqueeze(-1) * voice, no_face, words)
    got = gated(out, voice, no_face, words)
    torch.testing.assert_close(got.meld_logits, expected.meld_logits)
    assert gain[0] > 2.9 and gain[1] < 1.01 and gain[2] == 1.0  # no words: voice_wordless alone
