"""The choice rules of benchmarks/neutral_cv.py, neutral_folds.py and neutral_trust.py (their
folds need hours of training: not run here)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import neutral_cv
import neutral_folds
import neutral_trust


def _row(scale: float, keeps: bool, audio: float, fused: float, emodb: float) -> dict[str, object]:
    return {
        "scale": scale,
        "keeps_words": keeps,
        "ravdess_audio_uar": audio,
        "ravdess_fused_uar": fused,
        "emodb_audio_uar": emodb,
    }


def test_the_audio_rank_wants_the_sentence_no_worse_and_the_fused_rank_the_best_sentence() -> None:
    rows = [
        _row(1.0, False, 90.0, 95.0, 90.0),  # spoils the words: never chosen
        _row(0.75, True, 80.0, 70.0, 80.0),  # best voice alone, the sentence worse than it
        _row(0.5, True, 70.0, 72.0, 70.0),
        _row(0.35, True, 60.0, 74.0, 60.0),
    ]
    assert neutral_cv.chosen(rows, "audio")["scale"] == 0.5
    assert neutral_cv.chosen(rows, "fused")["scale"] == 0.35
    assert neutral_cv.chosen(rows[:2], "audio") == "none keeps the words on every fold"
    assert neutral_cv.chosen(rows[:1], "fused") == "none keeps the words"


def test_a_gain_scales_the_voice_beside_words_only() -> None:
    import numpy as np
    import torch
    from conftest import tiny_unimse_config

    from unimse.modeling import ModalityLogits

    head = ModalityLogits(tiny_unimse_config(modality_logits=True)).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        head.acoustic.weight.normal_()
    rng = np.random.default_rng(0)
    text = rng.normal(size=(4, 16))
    voices = rng.normal(size=(4, 8))
    rows = np.array([1.0, 2.0, 0.5, 3.0])
    gained = neutral_folds.with_voice(head, text, voices, 0.5, True, lambda _t: rows)
    scaled = neutral_folds.with_voice(head, text, voices * rows[:, None], 0.5, True)
    torch.testing.assert_close(gained.meld_logits, scaled.meld_logits)
    alone = neutral_folds.with_voice(head, text, voices, 0.5, False, lambda _t: rows)
    plain = neutral_folds.with_voice(head, text, voices, 0.5, False)
    torch.testing.assert_close(alone.meld_logits, plain.meld_logits)  # no words: no gain


def test_a_step_hinge_setting_reaches_the_fold_head() -> None:
    import numpy as np
    from conftest import tiny_unimse_config

    config = tiny_unimse_config(modality_logits=True, voice_hinge="relu", visual=None)
    width = len(config.polarities) + len(config.meld_emotions) + len(config.iemocap_emotions)
    fold = {"acoustic_weight": np.eye(width, config.modality_dim, dtype=np.float32)}
    step = neutral_folds.voice_head(fold, config, neutral_folds.Setting(margin=2.0, hinge="step"))
    assert (step.hinge, step.margin) == ("step", 2.0)
    assert neutral_folds.Setting.of(config).hinge == "relu"


def _trust(
    threshold: float | None, cost: float, fused: float, audio: float = 80.0
) -> neutral_trust.TrustScore:
    trust = None if threshold is None else neutral_trust.VoiceTrust(threshold, 2.0, 1.0, 0.5)
    costs = dict.fromkeys(neutral_trust.TRUST_COSTS, cost)
    return neutral_trust.TrustScore(trust, costs, fused, [fused], audio, [])


def test_the_trust_rules_bound_the_words_cost_and_the_issue_rule_wants_the_voice_reached() -> None:
    scores = [
        _trust(None, -0.10, 70.0),  # the trust off
        _trust(2.0, -0.50, 80.5),  # past the issue's bound
        _trust(2.5, -0.30, 80.0),  # reaches the voice alone, costs 0.2 more than off
        _trust(3.0, -0.12, 79.9),  # the relative rule's pick: within 0.05 of off, best sentence
        _trust(3.5, -0.20, 80.0),  # reaches it too, at less harm than 2.5
    ]
    relative = neutral_trust.chosen_trust(scores, "relative", 0.4)
    assert relative is not None and relative.trust is not None
    assert relative.trust.threshold == 3.0
    issue = neutral_trust.chosen_trust(scores, "issue", 0.4)
    assert issue is not None and issue.trust is not None
    assert issue.trust.threshold == 3.5
    assert neutral_trust.chosen_trust(scores, "issue", 0.15) is None  # none reaches it within 0.15
    assert scores[4].reaches_audio == 1 and scores[3].reaches_audio == 0


def test_the_trust_grid_scores_settled_histories_as_live_use_ends_with_them() -> None:
    leads, speakers = [5.0, 1.0, -2.0, 3.0], ["A", "B", "A", "A"]
    settled = neutral_trust.histories_of(leads, speakers, seed=3, settled=True)
    assert settled.tolist() == [[3.0, 2], [0.0, 0], [8.0, 2], [5.0, 2]]
    causal = neutral_trust.histories_of(leads, speakers, seed=3)
    assert causal[:, 1].tolist() != settled[:, 1].tolist()  # earlier utterances only
