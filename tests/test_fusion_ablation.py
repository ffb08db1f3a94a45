"""benchmarks/fusion_ablation.py's hinge report: which neutral clips the voice's hinge lets
through beside words (the real corpora's run is a benchmark; a tiny model here)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_unimse_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from unimse.config import FeatureSpec
from unimse.factory import build_model
from unimse.inference import EmotionPredictor
from unimse.inputs import ModelInput
from unimse.speakers import FIRST_SPEAKER

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_report_names_the_clips_that_move_the_words() -> None:
    import fusion_ablation

    torch.manual_seed(0)
    config = tiny_unimse_config(
        acoustic=FeatureSpec("test-acoustic", 8, "stats"),
        visual=None,
        modality_logits=True,
        voice_hinge="step",
        voice_margin=3.0,
    )
    model = build_model(config).eval()
    with torch.no_grad():
        model.modality_logits.acoustic.weight.normal_(std=0.5)
    predictor = EmotionPredictor(model, torch.device("cpu"), "test")
    rng = np.random.default_rng(0)
    clips = [rng.normal(scale=s, size=(6, 8)).astype(np.float32) for s in np.geomspace(0.1, 30, 8)]
    voices = [ModelInput(text="", speaker=FIRST_SPEAKER, acoustic=c) for c in clips]
    report = fusion_ablation.hinge_report(predictor, voices)

    def meld(acoustic: np.ndarray | None) -> dict[str, float]:
        item = ModelInput(text="fine.", speaker=FIRST_SPEAKER, acoustic=acoustic)
        return predictor.predict([item])[0].emotion_probs

    words = meld(None)
    moved = [
        i
        for i, c in enumerate(clips)
        if not np.allclose(list(meld(c).values()), list(words.values()), atol=1e-6)
    ]
    line = next(x for x in report.splitlines() if x.startswith("MELD"))
    named = [int(k) for k in re.findall(r"clip (\d+)", line)]
    assert 0 < len(moved) < len(clips), "some clips, not all, should pass the margin"
    assert named == moved
    assert "margin 3" in report.splitlines()[0]
