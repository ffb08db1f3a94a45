"""The voice trust: an expressive speaker's voice is heard beside words that say nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_unimse_config
from factories import heads_output
from rt_support import FakePredictor

from unimse.config import UniMSEConfig
from unimse.inputs import ModelInput
from unimse.labels import IEMOCAP_EMOTIONS, MELD_EMOTIONS, POLARITIES
from unimse.modeling import ModalityLogits
from unimse.voice_baseline import conversation_order, normalise_corpus
from unimse.voice_trust import SpeakerExpressiveness, VoiceHistory, corpus_histories

WIDTH = len(POLARITIES) + len(MELD_EMOTIONS) + len(IEMOCAP_EMOTIONS)
NEUTRAL = MELD_EMOTIONS.index("neutral")
JOY = MELD_EMOTIONS.index("joy")


def trusting(**overrides: object) -> UniMSEConfig:
    settings: dict[str, object] = {
        "modality_logits": True,
        "voice_hinge": "step",
        "voice_margin": 4.0,
        "voice_wordless": 2.0,
        "voice_trust": 2.0,
        "voice_trust_width": 1.0,
        "voice_trust_prior": 1.0,
        "voice_trust_words": 0.5,
        "voice_trust_blank": tuple(float(i) / 10 for i in range(WIDTH)),
    }
    return tiny_unimse_config(**(settings | overrides))


def joyful_head(config: UniMSEConfig) -> ModalityLogits:
    """Modality logits whose voice map reads the first acoustic unit as joy (+1 per unit)."""
    head = ModalityLogits(config).eval()
    with torch.no_grad():
        head.acoustic.weight.zero_()
        head.acoustic.weight[len(POLARITIES) + JOY, 0] = 1.0
    return head


def neutral_words(n: int) -> torch.Tensor:
    """MELD logits of words that read as neutral (probability about 0.98)."""
    meld = torch.zeros(n, len(MELD_EMOTIONS))
    meld[:, NEUTRAL] = 6.0
    return meld


def read(
    head: ModalityLogits, meld: torch.Tensor, voice: float, history: VoiceHistory | None
) -> torch.Tensor:
    acoustic = torch.zeros(len(meld), 8)
    acoustic[:, 0] = voice
    past = None
    if history is not None:
        past = torch.tensor([[history.total, float(history.count)]] * len(meld))
    with torch.no_grad():
        out = head(
            heads_output(meld),
            acoustic,
            torch.zeros(len(meld), 8),
            torch.ones(len(meld)),
            None,
            past,
        )
    return torch.cat([out.polarity_logits, out.meld_logits, out.iemocap_logits], -1)


class LeadingPredictor(FakePredictor):
    """A fake predictor whose every voice leads neutral by 4."""

    def voice_leads(self, inputs: Sequence[ModelInput]) -> list[float]:
        return [4.0] * len(inputs)


def test_a_history_counts_only_how_far_a_voice_led_to_an_emotion() -> None:
    history = VoiceHistory().then(3.0).then(-2.0)
    assert history == VoiceHistory(3.0, 2)
    tracker = SpeakerExpressiveness()
    assert tracker.add("s/A", 5.0) == VoiceHistory()  # the history before the utterance
    assert tracker.add("s/A", 1.0) == VoiceHistory(5.0, 1)
    assert tracker.history("s/A") == VoiceHistory(6.0, 2)
    assert tracker.history("s/B") == VoiceHistory()
    tracker.forget("s/A")
    assert tracker.speakers == []
    with pytest.raises(ValueError, match="non-negative"):
        VoiceHistory(-1.0, 0)


def test_corpus_histories_hear_each_speaker_in_the_baselines_conversation_order() -> None:
    speakers = ["a", "b", "a", "a", "b", "c"]
    leads = [1.0, 2.0, 3.0, -1.0, 4.0, 5.0]
    histories = corpus_histories(leads, speakers)
    seen: dict[str, VoiceHistory] = {}
    for index in conversation_order(len(leads)):
        assert histories[index] == seen.get(speakers[index], VoiceHistory())
        seen[speakers[index]] = seen.get(speakers[index], VoiceHistory()).then(leads[index])
    # the same order the speaker baselines use: utterance k is read after the same utterances
    prior = np.zeros(1, np.float32)
    normalised = normalise_corpus(
        [np.full((1, 1), float(i)) for i in range(6)], speakers, prior, 1.0
    )
    order = conversation_order(len(leads))
    first_of_a = next(i for i in order if speakers[i] == "a")
    assert float(normalised[first_of_a][0, 0]) == pytest.approx(first_of_a / 2)
    with pytest.raises(ValueError, match="one speaker per lead"):
        corpus_histories([1.0], [])


def test_an_expressive_speaker_beside_neutral_words_reads_as_the_voice_alone() -> None:
    config = trusting()
    head = joyful_head(config)
    blank = torch.tensor(config.voice_trust_blank)
    meld = neutral_words(1)
    voice = 3.0  # joy leads neutral by 3: under the step margin of 4
    margin_only = read(head, meld, voice, None)
    assert int(margin_only[0, len(POLARITIES) :][: len(MELD_EMOTIONS)].argmax()) == NEUTRAL
    expressive = read(head, meld, voice, VoiceHistory(30.0, 5))  # mean lead 5.5 > 2 + 1
    alone = blank.clone()
    alone[len(POLARITIES) + JOY] += config.voice_wordless * voice
    torch.testing.assert_close(expressive[0], alone)
    # a new speaker: its first lead counts against a prior of 0 worth one utterance (3 / 2)
    new = read(head, meld, voice, VoiceHistory())
    torch.testing.assert_close(new, margin_only)
    halfway = read(head, meld, voice, VoiceHistory(2.0, 1))  # (2 + 3) / 3 = 1.67: still under 2
    torch.testing.assert_close(halfway, margin_only)
    partly = read(head, meld, voice, VoiceHistory(6.0, 2))  # (6 + 3) / 4 = 2.25: a quarter
    torch.testing.assert_close(partly[0], margin_only[0] + 0.25 * (alone - margin_only[0]))
    fully = read(head, meld, voice, VoiceHistory(7.0, 1))  # (7 + 3) / 3 = 3.33: all the way
    torch.testing.assert_close(fully[0], alone)


def test_a_new_speaker_can_start_undecided_from_a_prior_lead() -> None:
    config = trusting(voice_trust_start=2.0, voice_trust_prior=2.0)
    head = joyful_head(config)
    meld = neutral_words(1)
    margin_only = read(head, meld, 3.0, None)
    alone = torch.tensor(config.voice_trust_blank)
    alone[len(POLARITIES) + JOY] += config.voice_wordless * 3.0
    # (2 x 2 + 3) / (2 + 1) = 2.33: a third of the way at the first utterance
    first = read(head, meld, 3.0, VoiceHistory())
    torch.testing.assert_close(first[0], margin_only[0] + (alone - margin_only[0]) / 3)
    # the prior fades as the speaker's own leads come in: (4 + 0 + 3) / (2 + 4 + 1) = 1 < 2
    quiet = read(head, meld, 3.0, VoiceHistory(0.0, 4))
    torch.testing.assert_close(quiet, margin_only)
    # start 0 is the prior of leads 0, as before
    before = read(joyful_head(trusting()), meld, 3.0, VoiceHistory())
    torch.testing.assert_close(before, margin_only)
    with pytest.raises(ValueError, match="voice_trust_start"):
        trusting(voice_trust_start=-1.0)


def test_the_trust_shrinks_as_the_words_read_as_an_emotion_and_needs_words_and_a_voice() -> None:
    config = trusting()
    head = joyful_head(config)
    history = VoiceHistory(50.0, 5)
    words = torch.zeros(2, len(MELD_EMOTIONS))  # neutral probability 1 / 7 each
    words[1, MELD_EMOTIONS.index("anger")] = 8.0  # words that read as anger
    margin_only = read(head, words, 3.0, None)
    trusted = read(head, words, 3.0, history)
    blank = torch.tensor(config.voice_trust_blank)
    alone = blank.clone()
    alone[len(POLARITIES) + JOY] += config.voice_wordless * 3.0
    p = torch.softmax(words, -1)[:, NEUTRAL]
    t = (p / config.voice_trust_words).clamp(max=1.0).unsqueeze(-1)
    torch.testing.assert_close(trusted, margin_only + t * (alone - margin_only))
    assert float(t[1]) < 1e-3  # anger's words keep their reading
    # no voice: nothing to trust, the words as they are
    silent = read(head, words, 0.0, history)
    torch.testing.assert_close(silent, read(head, words, 0.0, None))
    # without words the voice is all there is anyway: the trust leaves those rows alone
    acoustic = torch.zeros(1, 8)
    acoustic[0, 0] = 3.0
    with torch.no_grad():
        out = head(
            heads_output(neutral_words(1)),
            acoustic,
            torch.zeros(1, 8),
            torch.zeros(1),
            None,
            torch.tensor([[50.0, 5.0]]),
        )
        plain = head(heads_output(neutral_words(1)), acoustic, torch.zeros(1, 8), torch.zeros(1))
    torch.testing.assert_close(out.meld_logits, plain.meld_logits)


def test_a_trust_needs_a_hinge_its_blank_logits_and_sane_settings() -> None:
    with pytest.raises(ValueError, match="voice_trust_blank"):
        trusting(voice_trust_blank=())
    with pytest.raises(ValueError, match="needs voice_hinge"):
        trusting(voice_hinge="off", voice_margin=0.0)
    with pytest.raises(ValueError, match="voice_trust_words"):
        trusting(voice_trust_words=0.0)
    with pytest.raises(ValueError, match="voice_trust_width"):
        trusting(voice_trust_width=0.0)
    with pytest.raises(ValueError, match="voice_trust must be"):
        trusting(voice_trust=-1.0)
    saved = trusting()
    assert UniMSEConfig.from_dict(saved.to_dict()) == saved  # the blank logits survive JSON


def test_the_model_reads_each_inputs_history_and_the_predictor_its_voice_lead() -> None:
    from unimse.backbones import load_tokenizer
    from unimse.factory import build_model
    from unimse.inference import EmotionPredictor
    from unimse.inputs import ModelInput
    from unimse.processor import UniMSEProcessor

    config = trusting(visual=None)
    model = build_model(config).eval()
    with torch.no_grad():
        model.modality_logits.acoustic.weight.normal_()
    processor = UniMSEProcessor(config, load_tokenizer(config))
    voice = torch.randn(5, 8).numpy()
    expressive = ModelInput(text="okay", acoustic=voice, voice_history=VoiceHistory(100.0, 3))
    batch = processor.encode([ModelInput(text="okay", acoustic=voice), expressive])
    assert batch.voice_history is not None
    assert batch.voice_history.tolist() == [[0.0, 0.0], [100.0, 3.0]]
    text_only = UniMSEProcessor(
        replace(config, voice_trust=0.0, voice_trust_blank=()), load_tokenizer(config)
    )
    assert text_only.encode([expressive]).voice_history is None
    predictor = EmotionPredictor(model, torch.device("cpu"), "test")
    leads = predictor.voice_leads([expressive, ModelInput(text="okay")])
    assert leads[1] == 0.0  # no voice, no lead
    with torch.no_grad():
        a, _, _ = model.fusion.encode(
            batch.size, torch.device("cpu"), batch.acoustic, batch.acoustic_lengths, None, None
        )
        voiced = model.modality_logits.voice(a, None)[:1]
    meld = voiced[0, len(POLARITIES) : len(POLARITIES) + len(MELD_EMOTIONS)]
    lead = float(torch.cat([meld[:NEUTRAL], meld[NEUTRAL + 1 :]]).max() - meld[NEUTRAL])
    assert leads[0] == pytest.approx(lead, abs=1e-5)
    assert predictor.voice_expressiveness() is not None


def test_the_models_voice_logits_are_what_its_forward_pass_adds_for_the_voice() -> None:
    from unimse.backbones import load_tokenizer
    from unimse.factory import build_model
    from unimse.processor import UniMSEProcessor

    config = tiny_unimse_config(visual=None, modality_logits=True)  # no hinge: the sum itself
    model = build_model(config).eval()
    processor = UniMSEProcessor(config, load_tokenizer(config))
    inputs = [
        ModelInput(text="okay", acoustic=torch.randn(5, 8).numpy()),
        ModelInput(text="fine", acoustic=torch.randn(9, 8).numpy()),
        ModelInput(text="no voice"),
    ]
    batch = processor.encode(inputs)
    assert batch.acoustic is not None and batch.acoustic_lengths is not None
    with torch.no_grad():
        model.modality_logits.acoustic.weight.normal_()
        voice = model.voice_logits(batch.acoustic, batch.acoustic_lengths)
        voiced = model(batch)
        model.modality_logits.acoustic.weight.zero_()
        silent = model(batch)
    assert voice is not None
    added = torch.cat(
        [
            voiced.polarity_logits - silent.polarity_logits,
            voiced.meld_logits - silent.meld_logits,
            voiced.iemocap_logits - silent.iemocap_logits,
        ],
        dim=-1,
    )
    torch.testing.assert_close(voice, added)
    assert voice[:2].abs().sum() > 0 and not voice[2].any()  # no voice, no logits
    text_only = build_model(tiny_unimse_config(visual=None)).eval()
    assert text_only.voice_logits(batch.acoustic, batch.acoustic_lengths) is None


def test_calibrate_writes_a_trust_with_the_blank_utterances_logits(tmp_path: Path) -> None:
    import json

    from train.calibrate import VoiceTrust, calibrate_checkpoint
    from unimse.checkpoint import save_checkpoint
    from unimse.factory import build_model
    from unimse.features import ACOUSTIC_SPEC
    from unimse.inference import EmotionPredictor, empty_logits

    config = tiny_unimse_config(
        acoustic=ACOUSTIC_SPEC, visual=None, modality_logits=True, voice_hinge="step"
    )
    source = save_checkpoint(build_model(config), tmp_path / "hinged", half=False)
    out = tmp_path / "trusting"
    trust = VoiceTrust(2.5, 2.0, start=1.5)
    calibrate_checkpoint(source, out, tmp_path, (), voice_trust=trust)
    written = UniMSEConfig.load(out / "config.json")
    assert (written.voice_trust, written.voice_trust_width) == (2.5, 2.0)
    assert written.voice_trust_start == 1.5
    assert written.voice_trust_prior == UniMSEConfig().voice_trust_prior  # kept as it was
    predictor = EmotionPredictor.load(out, device="cpu")
    before = EmotionPredictor.load(source, device="cpu")
    blank = torch.from_numpy(empty_logits(before.model, before.processor))
    assert written.voice_trust_blank == pytest.approx(tuple(blank.tolist()))
    after = torch.from_numpy(empty_logits(predictor.model, predictor.processor))
    torch.testing.assert_close(after, blank)  # the same heads
    assert json.loads((out / "calibration.json").read_text())["voice_trust"] == 2.5
    assert predictor.model.modality_logits.trust == 2.5


def test_live_use_counts_each_closed_utterance_once_and_reads_interim_ones_against_it() -> None:
    from realtime.inference import EmotionModel
    from unimse.inputs import ModelInput

    model = EmotionModel(LeadingPredictor(), expressiveness=SpeakerExpressiveness())
    voiced = ModelInput(text="okay", acoustic=np.zeros((3, 8), np.float32))
    first = model.with_history(voiced, "s1", "A", update=True)
    second = model.with_history(voiced, "s1", "A", update=True)
    interim = model.with_history(voiced, "s1", "A", update=False)
    other = model.with_history(voiced, "s2", "A", update=True)
    assert (first.voice_history, second.voice_history) == (VoiceHistory(), VoiceHistory(4.0, 1))
    assert interim.voice_history == VoiceHistory(8.0, 2)  # read against, not counted in
    assert other.voice_history == VoiceHistory()  # another session, another conversation
    silent = ModelInput(text="okay")
    assert model.with_history(silent, "s1", "A", update=True) is silent  # no voice: no history
    model.end_session("s1")
    assert model.expressiveness is not None and model.expressiveness.speakers == ["s2/A"]
    plain = EmotionModel(LeadingPredictor())  # a checkpoint without voice_trust
    assert plain.with_history(voiced, "s1", "A", update=True) is voiced


def test_a_relabelled_utterance_moves_its_lead_to_the_new_speakers_history() -> None:
    tracker = SpeakerExpressiveness()
    tracker.add("s/1", 5.0, utterance=0)
    tracker.add("s/1", -2.0, utterance=1)
    tracker.add("s/1", 3.0, utterance=2)
    tracker.move(2, "s/1", "s/2")
    assert tracker.history("s/1") == VoiceHistory(5.0, 2)
    assert tracker.history("s/2") == VoiceHistory(3.0, 1)
    tracker.move(2, "s/1", "s/2")  # no longer the old speaker's: nothing moves
    tracker.move(9, "s/1", "s/2")  # never heard: nothing moves
    assert tracker.history("s/2") == VoiceHistory(3.0, 1)
    tracker.move(0, "s/1", "s/3")
    tracker.move(1, "s/1", "s/3")  # the old speaker's last utterance: the speaker is gone
    assert tracker.speakers == ["s/2", "s/3"]
    assert tracker.history("s/3") == VoiceHistory(5.0, 2)
    tracker.move(2, "s/2", "s/3")  # moved once, it can move again
    assert tracker.history("s/3") == VoiceHistory(8.0, 3)


def test_live_diarisation_moves_the_voice_history_with_the_baseline() -> None:
    from realtime.inference import EmotionModel
    from realtime.messages import SpeakerRevision
    from unimse.inputs import ModelInput

    model = EmotionModel(LeadingPredictor(), expressiveness=SpeakerExpressiveness())
    voiced = ModelInput(text="okay", acoustic=np.zeros((3, 8), np.float32))
    model.with_history(voiced, "s", "speaker 1", update=True, utterance=0)
    model.with_history(voiced, "s", "speaker 1", update=True, utterance=1)
    model.revise_speaker(SpeakerRevision("s", 0, 0.0, utterance_seq=1, old="speaker 1", new="B"))
    assert model.expressiveness is not None
    assert model.expressiveness.history("s/speaker 1") == VoiceHistory(4.0, 1)
    assert model.expressiveness.history("s/B") == VoiceHistory(4.0, 1)


def test_a_settled_history_hears_all_of_a_speakers_other_utterances() -> None:
    from unimse.voice_trust import settled_histories

    assert VoiceHistory(8.0, 3).without(5.0) == VoiceHistory(3.0, 2)
    assert VoiceHistory(8.0, 3).without(-1.0) == VoiceHistory(8.0, 2)  # it counted 0
    with pytest.raises(ValueError, match="no utterance"):
        VoiceHistory().without(1.0)
    leads = [5.0, 1.0, -2.0, 3.0, 4.0]
    speakers = ["A", "B", "A", "A", "B"]
    settled = settled_histories(leads, speakers)
    assert settled == [
        VoiceHistory(3.0, 2),
        VoiceHistory(4.0, 1),
        VoiceHistory(8.0, 2),
        VoiceHistory(5.0, 2),
        VoiceHistory(1.0, 1),
    ]
    # the last utterance of a conversation hears what the causal read gave it
    causal = corpus_histories(leads, speakers, seed=0)
    last = {s: i for i in conversation_order(len(leads), 0) for s in [speakers[i]]}
    for index in last.values():
        assert settled[index] == causal[index]


def test_a_prediction_read_again_with_another_history_is_what_predict_gives_with_it() -> None:
    from unimse.factory import build_model
    from unimse.inference import EmotionPredictor

    config = trusting(visual=None)
    torch.manual_seed(0)
    model = build_model(config).eval()
    with torch.no_grad():
        model.modality_logits.acoustic.weight.normal_(std=3.0)
    predictor = EmotionPredictor(model, torch.device("cpu"), "test")
    voices = [torch.randn(5, 8).numpy() for _ in range(4)]
    first = [ModelInput(text="okay", acoustic=v) for v in voices]
    later = [VoiceHistory(30.0, 3), VoiceHistory(), VoiceHistory(2.0, 5), VoiceHistory(9.0, 2)]
    read = predictor.predict(first)
    assert all(p.trust is not None for p in read)
    again = predictor.reread(read, later)
    direct = predictor.predict(
        [replace(x, voice_history=h) for x, h in zip(first, later, strict=True)]
    )
    assert again == direct  # labels, probabilities, intensity, modalities
    moved = [a.emotion_probs != r.emotion_probs for a, r in zip(again, read, strict=True)]
    assert moved[0] and not moved[1]  # an expressive history moves it; an empty one does not
    assert predictor.reread([], []) == []
    plain = predictor.predict([ModelInput(text="okay")])  # no voice: the trust cannot move it
    assert plain[0].trust is not None and plain[0].trust.gate == 0.0
    untrusting = EmotionPredictor(
        build_model(trusting(visual=None, voice_trust=0.0, voice_trust_blank=())).eval(),
        torch.device("cpu"),
        "test",
    )
    unread = untrusting.predict(first[:1])
    assert unread[0].trust is None
    with pytest.raises(ValueError, match="voice trust"):
        untrusting.reread(unread, [VoiceHistory()])


def test_a_half_precision_model_reads_voice_leads_and_rereads() -> None:
    """CUDA loads the model in half precision: the voice-lead pass of every closed utterance
    fed float32 into half weights and failed ("expected m1 and m2 to have the same dtype")."""
    from unimse.factory import build_model
    from unimse.inference import EmotionPredictor

    torch.manual_seed(0)
    model = build_model(trusting(visual=None)).eval()
    with torch.no_grad():
        model.modality_logits.acoustic.weight.normal_(std=3.0)
    voices = [ModelInput(text="okay", acoustic=torch.randn(5, 8).numpy()) for _ in range(3)]
    full = EmotionPredictor(model, torch.device("cpu"), "test").voice_leads(voices)
    half = EmotionPredictor(model.half(), torch.device("cpu"), "test")
    assert half.half
    assert half.voice_leads(voices) == pytest.approx(full, abs=0.05)
    read = half.predict([replace(v, voice_history=VoiceHistory(30.0, 3)) for v in voices])
    again = half.reread(read, [VoiceHistory(30.0, 3)] * 3)
    assert [a.emotion for a in again] == [r.emotion for r in read]


def test_a_later_version_of_an_utterance_takes_its_earlier_versions_place() -> None:
    """``--speculative``: the speaker went on; the utterance counts once, with its last voice."""
    tracker = SpeakerExpressiveness()
    tracker.add("s/A", 2.0, utterance=0)
    assert tracker.add("s/A", 3.0, utterance=1) == VoiceHistory(2.0, 1)
    assert tracker.add("s/A", 8.0, utterance=1) == VoiceHistory(2.0, 1)  # not 5.0 over 2
    assert tracker.history("s/A") == VoiceHistory(10.0, 2)
    assert tracker.move(1, "s/A", "s/B") and not tracker.move(7, "s/A", "s/B")
