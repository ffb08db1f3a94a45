"""A speaker's earlier results read again as their voice becomes known (realtime/reread.py)."""

from __future__ import annotations

import asyncio
import io
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from factories import result_factory, stats_factory
from rt_support import run_stages
from test_diarize_cli import feed
from test_voice_trust import trusting

from realtime.inference import EmotionModel, InferenceStage
from realtime.messages import (
    EmotionResult,
    PendingUtterance,
    SpeakerRevision,
    Transcript,
    Utterance,
    UtteranceConfirmed,
)
from realtime.reread import KEPT_PER_SPEAKER, EarlierReads
from unimse.inputs import ModelInput
from unimse.labels import MELD_EMOTIONS, POLARITIES
from unimse.prediction import Prediction
from unimse.voice_trust import TrustRow, VoiceHistory, settled_histories

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SESSION = "test-session"
WIDTH = len(POLARITIES) + 7 + 6


def trusted_result(
    seq: int, *, lead: float = 1.0, gate: float = 1.0, **changes: Any
) -> EmotionResult:
    """A result the voice trust read (its row: ``lead``, ``gate``)."""
    result = result_factory(seq=seq, speaker="ana", emotion="neutral", polarity="neutral")
    row = TrustRow(np.zeros(WIDTH, np.float32), np.zeros(WIDTH, np.float32), gate, lead)
    return replace(result, prediction=replace(result.prediction, trust=row), **changes)


class ThresholdRereader:
    """Reads a prediction again as joy when its history's mean lead reaches ``threshold``."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.histories: list[list[VoiceHistory]] = []

    def reread(
        self, predictions: list[Prediction], histories: list[VoiceHistory]
    ) -> list[Prediction]:
        self.histories.append(list(histories))
        out = []
        for prediction, history in zip(predictions, histories, strict=True):
            heard = history.total / max(history.count, 1)
            emotion = "joy" if heard >= self.threshold else prediction.emotion
            probs = {e: (0.9 if e == emotion else 0.1 / 6) for e in MELD_EMOTIONS}
            out.append(replace(prediction, emotion=emotion, emotion_probs=probs))
        return out


def test_kept_results_are_read_again_with_the_speakers_other_utterances() -> None:
    earlier = EarlierReads()
    key = f"{SESSION}/ana"
    assert earlier.offer(trusted_result(0, lead=1.0)) == key
    assert earlier.offer(trusted_result(1, lead=9.0)) == key
    # counted in ana's history (her results are read again), not kept: the trust cannot move it
    assert earlier.offer(trusted_result(2, gate=0.0)) == key
    assert earlier.offer(replace(trusted_result(3), prediction=result_factory().prediction)) is None
    silent = trusted_result(4)
    silent = replace(silent, prediction=replace(silent.prediction, modalities=("text",)))
    assert earlier.offer(silent) is None  # no voice: none counted
    reader = ThresholdRereader(5.0)
    seqs = iter(range(100, 200))
    # ana so far: leads 1 and 9 (and two more the trust could not move, lead 0)
    history = VoiceHistory(10.0, 4)
    revised = earlier.reread(key, history, reader, seqs)
    assert reader.histories == [[VoiceHistory(9.0, 3), VoiceHistory(1.0, 3)]]
    assert revised == []  # means 3 and 0.33: nothing changes
    revised = earlier.reread(key, VoiceHistory(40.0, 5), reader, seqs)
    assert [(r.utterance_seq, r.seq, r.revision, r.reread) for r in revised] == [
        (0, 100, 1, True),
        (1, 101, 1, True),
    ]
    assert [r.emotion for r in revised] == ["joy", "joy"]
    assert revised[0].text == "utterance number 0" and revised[0].latency["total"] == 0.6
    assert earlier.reread(key, VoiceHistory(40.0, 5), reader, seqs) == []  # already joy
    assert (earlier.rereads, earlier.revised) == (6, 2)
    assert earlier.reread(f"{SESSION}/ben", VoiceHistory(40.0, 5), reader, seqs) == []


def test_speculative_results_wait_for_their_confirmation_and_diarisation_moves_them() -> None:
    earlier = EarlierReads()
    speculative = trusted_result(0, speculative=True)
    assert earlier.offer(speculative) is None
    assert earlier.confirm(UtteranceConfirmed(SESSION, 0, 0.0, utterance_seq=0, revision=1)) is None
    longer = trusted_result(0, speculative=True, revision=1)  # the speaker went on
    assert earlier.offer(longer) is None
    confirmed = UtteranceConfirmed(SESSION, 1, 0.0, utterance_seq=0, revision=1)
    assert earlier.confirm(confirmed) == f"{SESSION}/ana"
    reader = ThresholdRereader(0.0)
    (revised,) = earlier.reread(f"{SESSION}/ana", VoiceHistory(5.0, 2), reader, iter([7]))
    assert (revised.revision, revised.speculative, revised.reread) == (2, False, True)
    moved = SpeakerRevision(SESSION, 0, 0.0, utterance_seq=0, old="ana", new="ben")
    assert earlier.move(moved) == (f"{SESSION}/ana", f"{SESSION}/ben")
    assert earlier.reread(f"{SESSION}/ana", VoiceHistory(5.0, 2), reader, iter([8])) == []
    # moved with its speaker's name; already joy, so nothing to revise
    assert earlier.reread(f"{SESSION}/ben", VoiceHistory(5.0, 2), reader, iter([8])) == []
    assert earlier._kept[f"{SESSION}/ben"][0].speaker == "ben"
    earlier.offer(trusted_result(0, revision=3, gate=0.0))  # a later version it cannot move
    assert earlier.reread(f"{SESSION}/ben", VoiceHistory(5.0, 2), reader, iter([9])) == []
    assert reader.histories[-1:] == [[VoiceHistory(4.0, 1)]]  # ben's reads before the drop


def test_a_speaker_keeps_a_bounded_number_of_results() -> None:
    earlier = EarlierReads()
    for seq in range(KEPT_PER_SPEAKER + 5):
        earlier.offer(trusted_result(seq))
    kept = earlier._kept[f"{SESSION}/ana"]
    assert len(kept) == KEPT_PER_SPEAKER and min(kept) == 5
    earlier.forget()
    assert (
        earlier.reread(f"{SESSION}/ana", VoiceHistory(9.0, 9), ThresholdRereader(0), iter([])) == []
    )


def voiced(
    seq: int, states: np.ndarray, speaker: str = "A", text: str = "okay"
) -> PendingUtterance:
    utterance = Utterance(SESSION, seq, 0.0, audio=np.zeros(16_000, np.float32), speaker=speaker)
    transcript = Transcript(
        SESSION, seq, 0.0, utterance, text, encoder_states=states, encoder_model="tiny.en"
    )
    return PendingUtterance(transcript, ModelInput(text=text, speaker=speaker))


@pytest.fixture(scope="module")
def trusting_model() -> tuple[EmotionModel, list[np.ndarray]]:
    """A tiny random model with a voice trust (threshold 5) beside words, and 8 voices: 3 that
    lead neutral least, then the 5 that lead most (of 60), so that the speaker turns out
    expressive only after their first lines."""
    from unimse.factory import build_model
    from unimse.inference import EmotionPredictor

    torch.manual_seed(0)
    config = trusting(visual=None, voice_trust_words=0.1, voice_margin=10.0, voice_trust=5.0)
    model = build_model(config).eval()
    with torch.no_grad():
        model.modality_logits.acoustic.weight.normal_(std=3.0)
    predictor = EmotionPredictor(model, torch.device("cpu"), "test")
    rng = np.random.default_rng(0)
    voices = [rng.normal(size=(5, 8)).astype(np.float32) for _ in range(60)]
    leads = predictor.voice_leads([ModelInput(text="okay", acoustic=v) for v in voices])
    order = np.argsort(leads)
    chosen = [voices[i] for i in (*order[:3], *order[-5:])]
    emotion_model = EmotionModel(
        predictor, acoustic=lambda audio: np.zeros((1, 8), np.float32), encoder_model="tiny.en"
    )
    return emotion_model, chosen


def run_inference(model: EmotionModel, items: list[Any], *, reread: bool = True) -> list[Any]:
    fresh = replace(model, expressiveness=model.predictor.voice_expressiveness())

    async def run() -> list[Any]:
        with ThreadPoolExecutor(1) as executor:
            stage = InferenceStage(fresh, executor, max_batch=1, reread=reread)
            return await run_stages([stage], feed(items))

    return asyncio.run(run())


def test_live_use_ends_with_the_settled_read_eval_reports(
    trusting_model: tuple[EmotionModel, list[np.ndarray]],
) -> None:
    model, voices = trusting_model
    out = run_inference(model, [voiced(i, v) for i, v in enumerate(voices)])
    results = [m for m in out if isinstance(m, EmotionResult)]
    first = [r for r in results if not r.reread]
    rereads = [r for r in results if r.reread]
    assert [r.utterance_seq for r in first] == list(range(8))
    assert rereads, "the speaker's first lines should read otherwise once their voice is known"
    assert all(r.revision == 1 and r.speculative is False for r in rereads)
    assert 0 in {r.utterance_seq for r in rereads}  # the speaker's first line, at least
    assert [r.seq for r in results] == sorted(r.seq for r in results)  # numbered in order
    final = {r.utterance_seq: r for r in results}  # each utterance's last version
    predictions = [r.prediction for r in first]
    leads = [p.trust.lead for p in predictions if p.trust is not None]
    settled = model.predictor.reread(predictions, settled_histories(leads, ["A"] * len(leads)))
    assert [final[i].emotion for i in range(8)] == [p.emotion for p in settled]
    assert [r.emotion for r in first] != [p.emotion for p in settled]
    off = run_inference(model, [voiced(i, v) for i, v in enumerate(voices)], reread=False)
    assert not any(isinstance(m, EmotionResult) and m.reread for m in off)


def test_wordless_utterances_count_and_make_the_speakers_lines_read_again(
    trusting_model: tuple[EmotionModel, list[np.ndarray]],
) -> None:
    """A speaker whose expressive voice comes in laughs and sighs (no words): those count in
    the history, so the speaker's earlier lines are read beside them (they were not)."""
    model, voices = trusting_model
    items = [voiced(i, v) for i, v in enumerate(voices[:3])]
    items += [voiced(i, v, text="") for i, v in enumerate(voices[3:], 3)]
    out = run_inference(model, items)
    results = [m for m in out if isinstance(m, EmotionResult)]
    first = [r for r in results if not r.reread and r.utterance_seq < 3]
    final = {r.utterance_seq: r for r in results}
    predictions = [r.prediction for r in results if not r.reread]
    leads = [p.trust.lead for p in predictions if p.trust is not None]
    settled = model.predictor.reread(predictions, settled_histories(leads, ["A"] * len(leads)))
    assert [final[i].emotion for i in range(3)] == [p.emotion for p in settled[:3]]
    assert [r.emotion for r in first] != [final[i].emotion for i in range(3)]


def test_a_relabelled_utterance_is_read_with_its_new_speakers_voice(
    trusting_model: tuple[EmotionModel, list[np.ndarray]],
) -> None:
    model, voices = trusting_model
    items: list[Any] = [voiced(0, voices[0], "B")]
    items += [voiced(i, v) for i, v in enumerate(voices[3:], 1)]
    items.append(SpeakerRevision(SESSION, 0, 0.0, utterance_seq=0, old="B", new="A"))
    out = run_inference(model, items)
    rereads = [m for m in out if isinstance(m, EmotionResult) and m.reread]
    assert [(r.utterance_seq, r.speaker) for r in rereads][-1] == (0, "A")
    assert isinstance(out[-2], EmotionResult) and out[-2].utterance_seq == 0  # after the revision


def test_a_reread_is_published_marked_and_counted_apart() -> None:
    from rich.console import Console

    from realtime.serialize import result_to_dict, validate
    from realtime.sinks.dashboard import DashboardSink

    first = result_factory(seq=0)
    again = replace(
        first, seq=5, revision=1, reread=True, prediction=result_factory(seq=1).prediction
    )
    line = result_to_dict(again)
    assert line["reread"] is True and line["revision"] == 1
    validate(line)
    assert "reread" not in result_to_dict(first)
    dashboard = DashboardSink(console=Console(file=io.StringIO(), width=80))
    dashboard.record(first)
    dashboard.record(again)
    assert (dashboard.reread, dashboard.replaced) == (1, 0)
    assert [r.emotion for r in dashboard._results] == [again.emotion]
    frame = io.StringIO()
    Console(file=frame, width=120).print(dashboard.render())
    assert "(re-read)" in frame.getvalue()
    assert dashboard._stage_latencies["total"] == [0.6]  # the re-read's latency is the first's
    dashboard.update_stats(stats_factory())
    text = io.StringIO()
    Console(file=text, width=200).print(dashboard.summary())
    assert "revised on re-reading 1" in text.getvalue()


async def test_delivery_counts_a_reread_apart_and_the_report_takes_it(tmp_path: Path) -> None:
    from realtime.fanout import DeliveryStage, FanOut
    from realtime.report.load import load_session
    from realtime.sinks.jsonl import JsonlSink

    stats = stats_factory()
    out = tmp_path / "out.jsonl"
    fanout = FanOut([JsonlSink(path=out, validate=True)], 64)
    stage = DeliveryStage(fanout, lambda: stats)
    await fanout.open()
    first = result_factory(seq=0, emotion="neutral")
    again = replace(result_factory(seq=2, emotion="joy"), utterance_seq=0, revision=1, reread=True)
    await run_stages([stage], feed([first, result_factory(seq=1), again]))
    await asyncio.gather(*(runner.run() for runner in fanout.runners))
    await fanout.close(stats)
    assert (stage.results, stage.rereads) == (2, 1)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(x["utterance_seq"], x.get("reread")) for x in lines] == [
        (0, None),
        (1, None),
        (0, True),
    ]
    session = load_session(out)
    assert [u.emotion for u in session.utterances][:1] == ["joy"]  # in the first one's place


def test_final_results_keep_each_utterances_last_version_in_its_place() -> None:
    from realtime.serialize import final_results, result_to_dict

    first, second = result_to_dict(result_factory(seq=0)), result_to_dict(result_factory(seq=1))
    again = result_to_dict(replace(result_factory(seq=2), utterance_seq=0, revision=1, reread=True))
    other = {**result_to_dict(result_factory(seq=0)), "session": "another"}
    relabel = {"kind": "speaker_revised", "session": SESSION, "utterance_seq": 1}
    lines = [first, second, relabel, again, other, {"kind": "partial"}]
    assert final_results(lines) == [again, second, other]
    assert final_results([*lines, first]) == [again, second, other]  # delivered again, late


def test_a_takeover_goes_on_after_the_furthest_speech_not_the_last_result() -> None:
    from realtime.serialize import result_to_dict
    from realtime.serve.client import resume_point

    first, second = result_factory(seq=0), result_factory(seq=1)  # speech to 1.5 and 3.5 s
    again = replace(result_factory(seq=2), utterance_seq=0, start=0.0, end=1.5, revision=1)
    results = [result_to_dict(r) for r in (first, second, replace(again, reread=True))]
    assert resume_point(results) == (3.5, 3, 2)
    assert resume_point([]) == (0.0, 0, 0)
