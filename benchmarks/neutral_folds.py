"""The fold dumps of benchmarks/neutral_cv.py and how they are scored: 4 folds of the training and
dev speakers (4 RAVDESS actors of 01-16 and one or two EMO-DB speakers each), what a fold model
or readout makes of its held-out speakers' clips and neutral voices (``dump_fold``), and the
words' logits plus those voices composed through ``ModalityLogits`` itself (``with_voice``): MELD /
IEMOCAP dev costs (``words_with_voice``), RAVDESS and EMO-DB UAs (``clip_scores``)."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import zip_longest
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import f1_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from speech_cv import class_names

from train.audio_data import EMODB, RAVDESS, AudioSample
from train.audio_datasets import neutral_voices, speaker_key, transcript_of
from train.audio_eval import predicted_class, true_class
from train.metrics import unweighted_accuracy
from train.voice_readout import training_voices
from unimse.config import FeatureSpec, UniMSEConfig
from unimse.inference import outputs_to_predictions, text_logits
from unimse.inputs import ModelInput
from unimse.modeling import ModalityLogits, UniMSEOutput
from unimse.speakers import FIRST_SPEAKER

FOLD_ACTORS = 4


@dataclass(frozen=True)
class Setting:
    """One candidate: the audio weight and the hinged voice's settings (UniMSEConfig's fields)."""

    scale: float = 1.0
    share: float = 0.0
    share_by: str = "flat"
    margin: float = 0.0
    cap: float = 0.0
    hinge: str = "relu"

    @classmethod
    def of(cls, config: UniMSEConfig) -> Setting:
        """The settings a checkpoint's config holds (its weight is in its weights: 1)."""
        return cls(
            1.0,
            config.voice_neutral_share,
            config.voice_share_by,
            config.voice_margin,
            config.voice_cap,
            config.voice_hinge,
        )


def folds_of(ravdess: list[AudioSample], emodb: list[AudioSample]) -> list[set[str]]:
    """Held-out speaker keys per fold: 4 RAVDESS actors each, EMO-DB speakers round-robin."""
    actors = sorted({speaker_key(s) for s in ravdess})
    folds = [set(actors[i : i + FOLD_ACTORS]) for i in range(0, len(actors), FOLD_ACTORS)]
    for i, speaker in enumerate(sorted({speaker_key(s) for s in emodb})):
        folds[i % len(folds)].add(speaker)
    return folds


def voice_vectors(model: Any, processor: Any, acoustic: list[np.ndarray]) -> np.ndarray:
    """The pooled voice vector the modality logits read (weight 1), one row per feature matrix."""
    captured: list[torch.Tensor] = []
    handle = model.modality_logits.register_forward_hook(
        lambda _m, args, _o: captured.append(args[1].detach())
    )
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(acoustic), 64):
                chunk = acoustic[start : start + 64]
                inputs = [ModelInput(text="", speaker=FIRST_SPEAKER, acoustic=a) for a in chunk]
                model(processor.encode(inputs))
    finally:
        handle.remove()
    return torch.cat(captured).float().numpy()


def dump_fold(
    target: Path,
    model: Any,
    processor: Any,
    test: list[AudioSample],
    clips: list[np.ndarray],
    spec: FeatureSpec,
    prior: np.ndarray,
) -> int:
    """Write what :func:`analyse` needs of one fold's model and held-out speakers; returns the
    number of neutral voices."""
    voices = {  # each corpus's held-out speakers' neutral voices
        c: neutral_voices([s for s in test if s.dataset == c], spec, prior)
        for c in (RAVDESS, EMODB)
    }
    both = [  # as emotrack calibrate pairs them: the corpora's voices interleaved
        clip for clips in zip_longest(*voices.values()) for clip in clips if clip is not None
    ]
    texts = sorted({transcript_of(s) or "" for s in test} | {""})
    np.savez(
        target,
        clip_voice=voice_vectors(model, processor, clips),
        neutral_both=voice_vectors(model, processor, both),
        neutral_ravdess=voice_vectors(model, processor, voices[RAVDESS]),
        acoustic_weight=model.modality_logits.acoustic.weight.detach().float().numpy(),
        text_logits=text_logits(model, processor, texts),
        texts=np.array(texts, dtype=object),
        clip_dataset=np.array([s.dataset for s in test]),
        clip_speaker=np.array([s.speaker for s in test]),
        clip_text=np.array([transcript_of(s) or "" for s in test], dtype=object),
        clip_class=np.array([true_class(s) for s in test]),
    )
    return len(both)


def without_trust(predictor: Any) -> Any:
    """``predictor`` with its voice trust off: a dump holds the voice beside words as the margin
    reads it (``analyse``'s sum, checked against the model), the trust scored apart (``trust``)."""
    config = replace(predictor.config, voice_trust=0.0, voice_trust_blank=())
    predictor.model.modality_logits.configure(config)
    predictor.config = predictor.model.config = config
    predictor.processor.config = config
    return predictor


def non_test_corpora(data_dir: Path) -> tuple[list[AudioSample], list[AudioSample]]:
    """RAVDESS and EMO-DB without their test speakers (their train and dev splits)."""
    clips = training_voices(data_dir)
    return [c for c in clips if c.dataset == RAVDESS], [c for c in clips if c.dataset == EMODB]


def write_held_out_config(base: Path, held: list[str], output: Path) -> Path:
    """``base`` (a voice stage's config) with ``held`` (corpus/speaker keys) in ``[data]
    held_out_speakers`` and ``output`` as its run folder; written to ``output`` + ".toml"."""
    text = base.read_text(encoding="utf-8")
    listed = ", ".join(f'"{k}"' for k in held)
    text = text.replace("[data]\n", f"[data]\nheld_out_speakers = [{listed}]\n", 1)
    text = "\n".join(
        f'output = "{output}"' if line.startswith("output =") else line
        for line in text.splitlines()
    )
    target = output.with_name(output.name + ".toml")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(f"# {base} holding out {' '.join(held)}\n{text}\n", encoding="utf-8")
    return target


def check_composition(
    fold: Any, predictor: Any, test: list[AudioSample], clips: list[np.ndarray]
) -> None:
    """The analysis's sum (the words' logits + the modality logits of the dumped voice) must give
    what the model itself predicts, on the held-out clips with their sentences."""
    cfg = predictor.config
    pick = [i for i, s in enumerate(test) if transcript_of(s)][:32]
    inputs = [
        ModelInput(text=transcript_of(test[i]) or "", speaker=FIRST_SPEAKER, acoustic=clips[i])
        for i in pick
    ]
    real = np.array(
        [[p.emotion_probs[c] for c in cfg.meld_emotions] for p in predictor.predict(inputs)]
    )
    texts = list(fold["texts"])
    words = fold["text_logits"][[texts.index(fold["clip_text"][i]) for i in pick]]
    out = with_voice(
        voice_head(fold, cfg, Setting.of(cfg)), words, fold["clip_voice"][pick], 1.0, True
    )
    summed = torch.softmax(out.meld_logits, -1).numpy()
    if not np.allclose(real, summed, atol=1e-4):
        raise SystemExit(f"composition differs from the model: {np.abs(real - summed).max():.2e}")


def voice_head(
    fold: Any, config: UniMSEConfig, setting: Setting, **overrides: Any
) -> ModalityLogits:
    """The fold's acoustic modality logits with ``setting``'s hinge, share, margin and cap (and
    ``overrides`` of other config fields)."""
    head = ModalityLogits(
        replace(
            config,
            voice_hinge=setting.hinge,
            voice_neutral_share=setting.share,
            voice_share_by=setting.share_by,
            voice_margin=setting.margin,
            voice_cap=setting.cap,
            # the weight is the setting's (``with_voice``), with words or not
            **({"voice_wordless": 1.0} | overrides),
        )
    )
    with torch.no_grad():
        head.acoustic.weight.copy_(torch.from_numpy(fold["acoustic_weight"]))
    return head.eval()


# Per utterance with words, a factor on the voice given the words' own logits (None: 1 everywhere).
Gain = Callable[[np.ndarray], np.ndarray] | None


def with_voice(
    head: ModalityLogits,
    text: np.ndarray,
    vectors: np.ndarray,
    scale: float,
    words: bool,
    gain: Gain = None,
    history: np.ndarray | None = None,
) -> UniMSEOutput:
    """What the model outputs for words whose own logits are ``text`` (polarity | MELD |
    IEMOCAP) beside voices whose pooled vectors are ``vectors``, the audio weight ``scale``
    (times ``gain(text)`` per utterance where there are words); ``history``: (N, 2) the voices'
    speaker histories (a head with ``voice_trust``)."""
    t = torch.from_numpy(text.astype(np.float32))
    out = UniMSEOutput(t[:, :3], t[:, 3:10], t[:, 10:], torch.zeros(len(t)))
    if words and gain is not None:
        vectors = vectors * gain(text)[:, None]
    acoustic = scale * torch.from_numpy(vectors.astype(np.float32))
    past = None if history is None else torch.from_numpy(history.astype(np.float32))
    with torch.no_grad():
        return head(
            out,
            acoustic,
            torch.zeros_like(acoustic),
            torch.full((len(t),), float(words)),
            history=past,
        )


def text_dev(args: argparse.Namespace) -> dict[str, dict[str, np.ndarray]]:
    """MELD / IEMOCAP dev: text-only log-probabilities of both emotion heads, the gold labels and
    the training split's label mix (``prior``), computed once with the shipped text path and
    cached in ``--out``."""
    cache = args.out / "text_dev.npz"
    if cache.exists():
        loaded = np.load(cache)
        return {
            d: {k: loaded[f"{d}_{k}"] for k in ("meld", "iemocap", "gold", "prior")}
            for d in ("meld", "iemocap")
        }
    from train.data import load_dataset
    from unimse.inference import EmotionPredictor

    predictor = EmotionPredictor.load(args.init, device="cpu")
    cfg = predictor.config
    result: dict[str, dict[str, np.ndarray]] = {}
    for dataset, classes in (("meld", cfg.meld_emotions), ("iemocap", cfg.iemocap_emotions)):
        samples = [replace(s, acoustic=None) for s in load_dataset(dataset, "dev", args.data_dir)]
        preds = predictor.predict([s.to_input() for s in samples])
        gold = [s.meld_emotion if dataset == "meld" else s.iemocap_emotion for s in samples]
        train = load_dataset(dataset, "train", args.data_dir)
        counts = Counter(s.meld_emotion if dataset == "meld" else s.iemocap_emotion for s in train)
        result[dataset] = {
            "prior": np.array([counts[c] / len(train) for c in classes]),
            "meld": np.log([[p.emotion_probs[c] for c in cfg.meld_emotions] for p in preds]),
            "iemocap": np.log([[p.iemocap_probs[c] for c in cfg.iemocap_emotions] for p in preds]),
            "gold": np.array([classes.index(g or "") for g in gold]),
        }
    arrays: dict[str, Any] = {f"{d}_{k}": v for d, r in result.items() for k, v in r.items()}
    np.savez(cache, **arrays)
    return result


def words_with_voice(
    text: dict[str, dict[str, np.ndarray]],
    fold: Any,
    head: ModalityLogits,
    scale: float,
    voices: str,
    reweight: bool = False,
    harm_only: bool = False,
    gain: Gain = None,
    histories: np.ndarray | None = None,
) -> dict[str, float]:
    """MELD / IEMOCAP dev WF1 with the fold's neutral voices (``voices``: "ravdess" or "both")
    beside the utterances (voice i mod n beside utterance i), minus text only; with
    ``reweight`` each utterance weighs as its class's share of the training split over its share
    of dev (dev's label mix differs: IEMOCAP dev has 16 % neutral, train 24 %, and a voice's cost
    falls mostly on neutral words); with ``harm_only`` the voice gets no credit for turning wrong
    words right (a pessimistic cost: a split whose words are read better, as MELD's and IEMOCAP's
    test splits are, has more to lose and less to gain)."""
    neutral = fold[f"neutral_{voices}"]
    deltas = {}
    for dataset in ("meld", "iemocap"):
        t = text[dataset]
        gold = t["gold"].tolist()
        weight = None
        if reweight:
            share = np.bincount(t["gold"], minlength=len(t["prior"])) / len(gold)
            weight = (t["prior"] / np.where(share > 0, share, 1.0))[t["gold"]]
        logits = np.concatenate([np.zeros((len(gold), 3)), t["meld"], t["iemocap"]], -1)
        pick = np.arange(len(gold)) % len(neutral)
        past = None if histories is None else histories[pick]
        out = with_voice(head, logits, neutral[pick], scale, True, gain, past)
        own = t[dataset].argmax(-1).tolist()
        voiced = (out.meld_logits if dataset == "meld" else out.iemocap_logits).argmax(-1)
        if harm_only:  # no credit where the voice turns wrong words right
            right = torch.tensor(own) == torch.from_numpy(t["gold"])
            voiced = torch.where(right, voiced, torch.tensor(own))
        deltas[dataset] = 100.0 * (
            f1_score(gold, voiced.tolist(), average="weighted", sample_weight=weight)
            - f1_score(gold, own, average="weighted", sample_weight=weight)
        )
    return deltas


def clip_scores(
    fold: Any,
    head: ModalityLogits,
    scale: float,
    config: UniMSEConfig,
    gain: Gain = None,
    histories: np.ndarray | None = None,
) -> dict[str, float]:
    """RAVDESS audio / audio + sentence UA and EMO-DB audio UA of the fold's held-out clips
    (``histories``: their speaker histories, for a head with ``voice_trust``)."""
    scores: dict[str, float] = {}
    for corpus, condition in ((RAVDESS, "audio"), (RAVDESS, "fused"), (EMODB, "audio")):
        mask = fold["clip_dataset"] == corpus
        if not mask.any():
            continue
        heard = clip_reads(fold, corpus, condition == "fused", head, scale, config, gain, histories)
        got = unweighted_accuracy(fold["clip_class"][mask].tolist(), heard, class_names(corpus))
        scores[f"{corpus}_{condition}_uar"] = got["uar"]
    return scores


def clip_reads(
    fold: Any,
    corpus: str,
    fused: bool,
    head: ModalityLogits,
    scale: float,
    config: UniMSEConfig,
    gain: Gain = None,
    histories: np.ndarray | None = None,
) -> list[str]:
    """The class read in each of the fold's held-out ``corpus`` clips, by the voice alone or
    (``fused``) beside its sentence."""
    texts = list(fold["texts"])
    mask = fold["clip_dataset"] == corpus
    words = fold["clip_text"][mask] if fused else [""] * int(mask.sum())
    text = fold["text_logits"][[texts.index(w) for w in words]]
    past = None if histories is None else histories[mask]
    out = with_voice(head, text, fold["clip_voice"][mask], scale, fused, gain, past)
    preds = outputs_to_predictions(out, config, [("audio",)] * len(text))
    return [predicted_class(corpus, p) for p in preds]
