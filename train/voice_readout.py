"""A convex voice readout: the voice stage's linear path fitted by L-BFGS instead of SGD.

With PMF's audio columns off (the shipped voice stages since v7), a voice reaches the output
through a linear path only: pooled, speaker-baselined Whisper states -> batch norm -> projection
-> modality logits, added to the heads' logits of the words (of the empty transcript when there
are none). A linear map from the standardised pooled states to the polarity, MELD and IEMOCAP
logits is therefore one the model carries exactly, and fitting it is convex:
:func:`fit_readout` minimises, by L-BFGS with an L2 penalty per weight,

- the three heads' cross-entropy on every acted clip and on every neutral voice as a
  conversation gives it (label neutral, the speaker's baseline taken over its neutral clips:
  ``[data] neutral_conversations`` of the voice stage), EMO-DB's rows weighted ``emodb_weight``,
  the neutral voices' ``neutral_weight``;
- EMO-DB's joint class loss (its 7 classes read from polarity + emotion, as ``emotrack eval
  --dataset emodb`` reads them); with ``losses = "joint"`` EMO-DB's rows train through it only.

:func:`install_readout` writes the map into a model (batch norm = the standardisation, the first
rows of the projection = the map, the acoustic modality logits = the identity on them) and keeps
the stage's intensity read of the voice as it was; :func:`fit_voice` does it for a checkpoint
(``emotrack fit-voice``). Like a voice stage, the result has weight 1 with and without words:
``emotrack calibrate`` sets the weights, hinge and margin afterwards.
:func:`graft_shared_readout` (``scripts/graft_voice.py``) puts one built checkpoint's shared
readout into another built alike, the rest kept bit for bit.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from train.acted_labels import ACTED_LABELS
from train.audio_data import CORPUS_LANGUAGES, EMODB, RAVDESS, AudioSample, emodb_class_of
from train.audio_datasets import (
    DEFAULT_CACHE,
    cached_features,
    corpus_features,
    corpus_folder,
    load_audio_corpus,
    neutral_voices,
    select_split,
    speaker_key,
)
from train.calibrate import CALIBRATION
from train.config import ReadoutSettings
from train.data import DataError
from unimse.checkpoint import (
    CONFIG,
    VOICE_READOUT,
    CheckpointError,
    check_output_folder,
    read_stored,
    resolve_checkpoint,
    write_derived,
    write_labels,
)
from unimse.config import FeatureSpec, UniMSEConfig
from unimse.features import acoustic_extractor
from unimse.fusion import PMF, StatsEncoder
from unimse.inference import empty_logits
from unimse.labels import EMODB_JOINT_CLASSES, UniversalLabel, emodb_joint_indices
from unimse.losses import joint_class_cross_entropy
from unimse.voice_baseline import prior_of

logger = logging.getLogger(__name__)

NEUTRAL = ACTED_LABELS["neutral"]
# The voice tensors a readout rewrites (with the prior buffer); every other tensor is kept.
VOICE_TENSOR_PREFIXES = ("fusion.acoustic.", "modality_logits.acoustic")
LANGUAGE_MAPS = "modality_logits.acoustic_by_language."  # one voice map per listed language


@dataclass(frozen=True)
class ReadoutRows:
    """What a readout is fitted on: pooled voice statistics (N, 2 x state dim), their labels,
    which rows are EMO-DB clips, the speaker-baseline prior they were pooled with, and which rows
    are neutral voices as a conversation gives them (None: none)."""

    pooled: np.ndarray
    labels: list[UniversalLabel]
    emodb: np.ndarray
    prior: np.ndarray
    neutral_voice: np.ndarray | None = None
    corpus: np.ndarray | None = None  # each row's corpus (a clip's, or its speaker's)


@dataclass(frozen=True)
class VoiceReadout:
    """heads' logits = ``weight @ z + bias`` with z = (pooled - ``mean``) / sqrt(``var`` + eps):
    polarity | MELD | IEMOCAP, at the voice's weight 1."""

    mean: np.ndarray
    var: np.ndarray
    weight: np.ndarray
    bias: np.ndarray
    eps: float = 1e-5  # BatchNorm1d's

    def standardise(self, pooled: np.ndarray) -> np.ndarray:
        return ((pooled - self.mean) / np.sqrt(self.var + self.eps)).astype(np.float32)

    def logits(self, pooled: np.ndarray) -> np.ndarray:
        return self.standardise(pooled) @ self.weight.T + self.bias


def pooled_statistics(features: Sequence[np.ndarray]) -> np.ndarray:
    """Mean and standard deviation over the frames of each utterance, as
    :class:`unimse.fusion.StatsEncoder` pools them."""
    return np.stack(
        [np.concatenate([f.mean(0), np.sqrt(np.maximum(f.var(0), 1e-8))]) for f in features]
    ).astype(np.float32)


def readout_rows(
    clips: Sequence[AudioSample],
    spec: FeatureSpec,
    cache_dir: Path | None = DEFAULT_CACHE,
    synthetic: Sequence[str] = (),
) -> ReadoutRows:
    """Every clip of ``clips`` (RAVDESS and EMO-DB) and, per corpus, its speakers' neutral voices
    as a conversation gives them (label neutral), relative to speaker baselines whose prior is the
    mean voice of ``clips``; with ``synthetic``, also those sentences spoken by espeak-ng
    (:func:`synthetic_voices`, corpus :data:`SYNTHETIC`), neutral voices too."""
    prior = prior_of(corpus_features(clips, replace(spec, baseline=0.0), cache_dir))
    calm: list[np.ndarray] = []
    calm_corpus: list[str] = []
    for corpus in (RAVDESS, EMODB):
        voices = neutral_voices([c for c in clips if c.dataset == corpus], spec, prior, cache_dir)
        calm += voices
        calm_corpus += [corpus] * len(voices)
    if synthetic:
        voices = [v for v in synthetic_voices(synthetic, spec, prior, cache_dir) if v is not None]
        calm += voices
        calm_corpus += [SYNTHETIC] * len(voices)
    features = [*corpus_features(clips, spec, cache_dir, prior), *calm]
    return ReadoutRows(
        pooled_statistics(features),
        [c.label for c in clips] + [NEUTRAL] * len(calm),
        np.array([c.dataset == EMODB for c in clips] + [False] * len(calm)),
        prior,
        np.array([False] * len(clips) + [True] * len(calm)),
        np.array([c.dataset for c in clips] + calm_corpus),
    )


SYNTHETIC = "synthetic"  # ReadoutRows.corpus of espeak-ng's voices


def synthetic_voices(
    texts: Sequence[str],
    spec: FeatureSpec,
    prior: np.ndarray | None,
    cache_dir: Path | None = DEFAULT_CACHE,
) -> list[np.ndarray | None]:
    """``texts`` spoken by espeak-ng (voice and rate by text: :mod:`train.tts_audio`; None where
    nothing is audible), each voice a speaker whose utterances are one conversation, relative to
    its running mean voice from ``prior`` on (a spec with a speaker baseline): emotionless speech
    of a kind no corpus holds."""
    from train.tts_audio import tts_features, voice_and_rate
    from unimse.voice_baseline import normalise_corpus

    raw = replace(spec, baseline=0.0)
    spoken = tts_features(texts, raw, acoustic_extractor(raw), cache_dir)
    if not spec.baseline:
        return spoken
    if prior is None:
        raise ValueError(f"{spec.name}: a speaker baseline needs its prior")
    audible = [(i, f) for i, f in enumerate(spoken) if f is not None]
    voices = [voice_and_rate(texts[i])[0] for i, _ in audible]
    heard = normalise_corpus([f for _, f in audible], voices, prior, spec.baseline)
    out: list[np.ndarray | None] = [None] * len(texts)
    for (i, _), features in zip(audible, heard, strict=True):
        out[i] = features
    return out


def synthetic_sentences(data_dir: Path, count: int) -> list[str]:
    """``count`` sentences of MELD's training dialogues (4 words or more, evenly spaced) for
    :func:`synthetic_voices`."""
    from train.data import load_dataset

    if count <= 0:
        return []
    texts = [s.text for s in load_dataset("meld", "train", data_dir) if len(s.text.split()) >= 4]
    if not texts:
        raise DataError(f"no MELD training sentences under {data_dir}")
    step = max(1, len(texts) // count)
    return texts[::step][:count]


def fit_readout(
    rows: ReadoutRows,
    empty: np.ndarray,
    config: UniMSEConfig,
    settings: ReadoutSettings,
    max_iter: int = 500,
    standardisation: tuple[np.ndarray, np.ndarray] | None = None,
) -> VoiceReadout:
    """The convex fit of the module docstring; ``empty``: the heads' logits of the empty
    transcript (polarity | MELD | IEMOCAP), to which the voice's logits add;
    ``standardisation``: the (mean, var) to standardise with (default: the rows' own)."""
    if not len(rows.labels):
        raise DataError("no voices to fit a readout on")
    mean, var = standardisation or (rows.pooled.mean(0), rows.pooled.var(0))
    readout = VoiceReadout(mean, var, np.zeros(0), np.zeros(0))
    x = torch.from_numpy(readout.standardise(rows.pooled))
    sizes = list(config.head_sizes)
    targets = [
        torch.tensor([config.polarities.index(lab.polarity) for lab in rows.labels]),
        torch.tensor([config.meld_emotions.index(lab.meld_emotion) for lab in rows.labels]),
        torch.tensor([config.iemocap_emotions.index(lab.iemocap_emotion) for lab in rows.labels]),
    ]
    emodb = torch.from_numpy(rows.emodb)
    classes = list(EMODB_JOINT_CLASSES)
    joint = torch.tensor(
        [
            classes.index(emodb_class_of(lab)) if e else -1
            for lab, e in zip(rows.labels, rows.emodb.tolist(), strict=True)
        ]
    )
    calm = (
        torch.zeros_like(emodb)
        if rows.neutral_voice is None
        else torch.from_numpy(rows.neutral_voice)
    )
    weight = torch.where(
        emodb, settings.emodb_weight, torch.where(calm, settings.neutral_weight, 1.0)
    )
    if rows.corpus is not None:  # espeak-ng's rows: a weight of their own
        synthetic = torch.from_numpy(np.asarray(rows.corpus == SYNTHETIC))
        weight = torch.where(synthetic, settings.synthetic_weight, weight)
    emodb_mass = settings.emodb_weight * float(emodb.sum())  # the joint loss is a mean
    heads_on = ~emodb if settings.losses == "joint" else torch.ones_like(emodb)
    head_weight = weight
    if settings.emodb_heads != 1.0:  # EMO-DB's rows in the heads' loss at a share of their weight
        head_weight = weight * torch.where(emodb, settings.emodb_heads, 1.0)
    base = torch.from_numpy(empty.astype(np.float32))
    w = torch.zeros(sum(sizes), x.shape[1], requires_grad=True)
    b = torch.zeros(sum(sizes), requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b], max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        heads = torch.split(base + x @ w.T + b, sizes, dim=-1)
        loss = sum(
            (
                F.cross_entropy(h[heads_on], t[heads_on], reduction="none") * head_weight[heads_on]
            ).sum()
            for h, t in zip(heads, targets, strict=True)
        )
        joint_loss = joint_class_cross_entropy(heads[0], heads[1], joint, emodb_joint_indices())
        total = (loss + emodb_mass * joint_loss) / weight.sum() + settings.l2 * (w**2).sum()
        total.backward()
        return total

    opt.step(closure)
    return replace(readout, weight=w.detach().numpy(), bias=b.detach().numpy())


def _voice_modules(model: nn.Module) -> tuple[StatsEncoder, Any]:
    """The model's stats voice encoder and modality logits, if a readout can stand for them."""
    encoder = getattr(getattr(model, "fusion", None), "acoustic", None)
    logits = getattr(model, "modality_logits", None)
    if not isinstance(encoder, StatsEncoder) or logits is None:
        raise CheckpointError("a voice readout needs a stats voice encoder and modality logits")
    if encoder.gate is not None:
        raise CheckpointError("a voice readout cannot stand for a gated voice")
    for module in model.modules():
        if isinstance(module, PMF):
            cols = module.columns("audio")
            if module.down.weight[:, cols].any() or module.out.weight[:, cols].any():
                raise CheckpointError(
                    "the voice reaches the backbone through PMF: a readout cannot stand for it"
                )
    return encoder, logits


def install_readout(model: nn.Module, readout: VoiceReadout, prior: np.ndarray) -> None:
    """Write ``readout`` into ``model``'s voice path, with the speaker-baseline ``prior`` its
    rows were pooled with. The intensity read of the voice stays the function of the pooled
    states it was (rewritten over the new standardisation)."""
    encoder, logits = _voice_modules(model)
    heads, dim = readout.weight.shape
    width = encoder.proj.out_features
    if heads + 1 > width or logits.acoustic.weight.shape[0] != heads:
        raise CheckpointError(f"a {heads}-logit readout needs a voice vector wider than {heads}")
    if dim != encoder.norm.num_features:
        raise CheckpointError(
            f"a readout over {dim} statistics; the voice pools {encoder.norm.num_features}"
        )
    with torch.no_grad():
        norm = encoder.norm
        running_mean, running_var = norm.running_mean, norm.running_var
        assert running_mean is not None and running_var is not None  # BatchNorm1d tracks them
        scale = torch.from_numpy(np.sqrt(readout.var + readout.eps).astype(np.float32))
        mean = torch.from_numpy(readout.mean.astype(np.float32))
        intensity_w = intensity_b = None
        if logits.acoustic_intensity is not None:  # the old read, over raw pooled states
            gain = norm.weight / torch.sqrt(running_var + norm.eps)
            read = logits.acoustic_intensity.weight[0] @ encoder.proj.weight  # (dim,)
            raw_w = read * gain
            raw_b = logits.acoustic_intensity.weight[0] @ encoder.proj.bias + read @ (
                norm.bias - gain * running_mean
            )
            intensity_w = raw_w * scale  # over z = (pooled - mean) / scale
            intensity_b = raw_b + raw_w @ mean
        running_mean.copy_(mean)
        running_var.copy_(torch.from_numpy(readout.var.astype(np.float32)))
        norm.eps = readout.eps
        norm.weight.fill_(1.0)
        norm.bias.zero_()
        encoder.proj.weight.zero_()
        encoder.proj.bias.zero_()
        encoder.proj.weight[:heads].copy_(torch.from_numpy(readout.weight))
        encoder.proj.bias[:heads].copy_(torch.from_numpy(readout.bias))
        logits.acoustic.weight.zero_()
        logits.acoustic.weight[:, :heads].copy_(torch.eye(heads))
        if intensity_w is not None and intensity_b is not None:
            encoder.proj.weight[heads].copy_(intensity_w)
            encoder.proj.bias[heads] = intensity_b
            logits.acoustic_intensity.weight.zero_()
            logits.acoustic_intensity.weight[0, heads] = 1.0
        if encoder.baseline_weight:
            buffer = encoder.get_buffer("baseline_prior")
            buffer.copy_(torch.from_numpy(prior.astype(np.float32)))


def human_standard(rows: ReadoutRows) -> tuple[np.ndarray, np.ndarray]:
    """The (mean, var) of the rows of human speech (RAVDESS and EMO-DB, their neutral voices
    included): what a readout standardises with, whatever synthetic voices it also hears."""
    human = language_rows(rows, RAVDESS, EMODB)
    return human.pooled.mean(0), human.pooled.var(0)


def language_rows(rows: ReadoutRows, *corpora: str) -> ReadoutRows:
    """The rows of ``corpora``'s clips and their speakers' neutral voices (the prior kept)."""
    if rows.corpus is None:
        raise DataError("these readout rows do not say their corpora")
    keep = np.isin(rows.corpus, corpora)
    return ReadoutRows(
        rows.pooled[keep],
        [lab for lab, k in zip(rows.labels, keep.tolist(), strict=True) if k],
        rows.emodb[keep],
        rows.prior,
        None if rows.neutral_voice is None else rows.neutral_voice[keep],
        rows.corpus[keep],
    )


def install_language_readout(model: nn.Module, readout: VoiceReadout, language: str) -> None:
    """Write ``readout``'s polarity and MELD logits into ``model``'s voice map for ``language``
    (``config.voice_languages``), after :func:`install_readout` of the shared readout, whose
    standardisation ``readout`` must share: its rows go to free rows of the projection, past the
    shared readout's logits and intensity read; the language's IEMOCAP logits are the shared
    map's."""
    encoder, logits = _voice_modules(model)
    languages = tuple(logits.languages)
    if language not in languages:
        raise CheckpointError(f"the model has no voice map for language {language!r}")
    shared = logits.acoustic.weight.shape[0]  # the shared readout's logits
    first = shared + (1 if logits.acoustic_intensity is not None else 0)
    own = sum(logits.sizes[:2])  # polarity and MELD
    if first + own > encoder.proj.out_features:
        raise CheckpointError(
            f"a {language!r} readout needs {first + own} rows of the voice vector; it has "
            f"{encoder.proj.out_features}"
        )
    norm = encoder.norm
    assert norm.running_mean is not None and norm.running_var is not None
    if not np.allclose(norm.running_mean.numpy(), readout.mean, atol=1e-5) or not np.allclose(
        norm.running_var.numpy(), readout.var, rtol=1e-5
    ):
        raise CheckpointError("a language readout must share the installed standardisation")
    with torch.no_grad():
        encoder.proj.weight[first : first + own].copy_(torch.from_numpy(readout.weight[:own]))
        encoder.proj.bias[first : first + own].copy_(torch.from_numpy(readout.bias[:own]))
        layer = logits.acoustic_by_language[languages.index(language)]
        layer.weight.zero_()
        for i in range(own):
            layer.weight[i, first + i] = 1.0
        for i in range(own, shared):  # IEMOCAP: the shared readout's rows
            layer.weight[i, i] = 1.0


def training_voices(data_dir: Path, held_out: Collection[str] = ()) -> list[AudioSample]:
    """RAVDESS's and EMO-DB's training and dev speakers (never their test speakers), less the
    speakers in ``held_out`` (``corpus/speaker``, as ``[data] held_out_speakers``)."""
    clips: list[AudioSample] = []
    for corpus in (RAVDESS, EMODB):
        samples = load_audio_corpus(corpus, corpus_folder(corpus, data_dir))  # or a DataError
        for split in ("train", "dev"):
            clips += select_split(samples, corpus, split)
    unknown = set(held_out) - {speaker_key(c) for c in clips}
    if unknown:
        raise DataError(f"held-out speakers not among the training speakers: {sorted(unknown)}")
    return [c for c in clips if speaker_key(c) not in held_out]


def check_fit_voice_paths(source: str | Path, output: Path) -> Path:
    """:func:`fit_voice`'s checks of its paths, cheap enough to run before any data is read:
    ``source``'s checkpoint folder (found), and ``output`` another folder that can be written."""
    folder = resolve_checkpoint(source)
    if output.resolve() == folder.resolve():
        raise CheckpointError("fit-voice writes a new checkpoint: --output must differ")
    check_output_folder(output)
    return folder


def fit_voice(
    source: str | Path,
    output: Path,
    data_dir: Path,
    settings: ReadoutSettings,
    held_out: Collection[str] = (),
    baseline: float | None = None,
    cache_dir: Path | None = DEFAULT_CACHE,
    progress: Callable[[str, int, int], None] | None = None,
    german: ReadoutSettings | None = None,
    synthetic: Sequence[str] = (),
) -> dict[str, Any]:
    """Write ``output``: ``source`` with its voice path a readout fitted on RAVDESS's and EMO-DB's
    non-test speakers (less ``held_out``) and, with ``synthetic``, those sentences spoken by
    espeak-ng as neutral voices (read in the human voices' standardisation, so the German
    readout does not move), at weight 1 with and without words; ``baseline``: a
    new speaker-baseline prior weight (``FeatureSpec.baseline``; None: the source's);
    ``german``: also a readout of German voices (language "de") fitted with these settings on
    EMO-DB's rows alone (:func:`install_language_readout`). Returns the record also written to
    ``output``/voice_readout.json. ``progress(step, done, total)`` hears each step (total 0: a
    step without a count)."""
    from unimse.factory import build_model
    from unimse.inference import EmotionPredictor

    folder = check_fit_voice_paths(source, output)
    predictor = EmotionPredictor.load(folder, device="cpu")
    config, model = predictor.config, predictor.model
    spec = config.acoustic
    if spec is None or not spec.baseline:
        raise CheckpointError(f"{folder}: a readout needs a speaker-baselined voice")
    if baseline is not None:
        spec = replace(spec, baseline=baseline)  # validated by FeatureSpec
        config = replace(config, acoustic=spec)
    languages = (CORPUS_LANGUAGES[EMODB],) if german is not None else ()
    if config.voice_languages != languages:  # the source's weights, the language maps asked for
        config = replace(config, voice_languages=languages)
        rebuilt = build_model(config).eval()
        missing, unexpected = rebuilt.load_state_dict(model.state_dict(), strict=False)
        if any(not k.startswith(LANGUAGE_MAPS) for k in [*missing, *unexpected]):
            raise CheckpointError(f"{folder}: cannot change this model's language voice maps")
        model = rebuilt
    _voice_modules(model)  # fail before any audio is read
    tell = progress or (lambda _step, _done, _total: None)
    tell("loading the training voices", 0, 0)
    clips = training_voices(data_dir, held_out)
    extract = acoustic_extractor(spec)
    for done, clip in enumerate(clips, 1):  # into the cache once, so the steps below only read
        cached_features(clip.audio, spec, extract, cache_dir)
        tell("Whisper states of the clips (cached)", done, len(clips))
    if synthetic:
        tell(f"speaking {len(synthetic)} sentences with espeak-ng (cached)", 0, 0)
    rows = readout_rows(clips, spec, cache_dir, synthetic)
    tell(f"fitting the readout on {len(rows.labels)} voices", 0, 0)
    empty = empty_logits(model, predictor.processor)
    readout = fit_readout(rows, empty, config, settings, standardisation=human_standard(rows))
    install_readout(model, readout, rows.prior)
    logger.info("voice readout %s on %d voices -> %s", settings, len(rows.labels), output)
    if german is not None:
        own = language_rows(rows, EMODB)
        tell(f"fitting the German readout on {len(own.labels)} voices", 0, 0)
        standard = (readout.mean, readout.var)
        fitted = fit_readout(own, empty, config, german, standardisation=standard)
        install_language_readout(model, fitted, CORPUS_LANGUAGES[EMODB])
    tensors, metadata = read_stored(folder)
    state = model.state_dict()
    dtype = tensors["modality_logits.acoustic.weight"].dtype
    for name in [n for n in tensors if n.startswith(LANGUAGE_MAPS) and n not in state]:
        del tensors[name]  # a language map the source had and the output does not
    for name, value in state.items():
        if name in tensors and name.startswith(VOICE_TENSOR_PREFIXES):
            tensors[name] = value.detach().to(tensors[name].dtype).contiguous()
        elif name.startswith(LANGUAGE_MAPS):  # new: stored as the shared map is
            tensors[name] = value.detach().to(dtype).contiguous()
    record: dict[str, Any] = {
        "source": str(source),
        "method": "convex voice readout (train/voice_readout.py)",
        "settings": asdict(settings),
        "held_out_speakers": sorted(held_out),
        "speaker_baseline": spec.baseline,
        "german_readout": None if german is None else asdict(german),
        "voices": len(rows.labels),
        "clips": len(clips),
        "synthetic_sentences": len(synthetic),
    }
    previous = folder / CALIBRATION  # what the source's other branches were calibrated with
    if previous.exists():
        record["source_calibration"] = json.loads(previous.read_text(encoding="utf-8"))
    written = replace(config, voice_wordless=1.0)  # calibrate sets the weights
    # not the source's calibration record
    with write_derived(folder, output, tensors, metadata, skip=(CALIBRATION,)) as staging:
        written.save(staging / CONFIG)
        write_labels(written, staging)  # its feature spec, the baseline weight included
        (staging / VOICE_READOUT).write_text(json.dumps(record, indent=2) + "\n")
    return record


GRAFT_RECORD = "voice_graft.json"  # where the graft says what it took from where
# What must match for one checkpoint's shared readout to stand in another's: the voice's
# standardisation and speaker-baseline prior (the rows read them) and the maps that read the rows
GRAFT_SHARED = (
    "fusion.acoustic.norm.running_mean",
    "fusion.acoustic.norm.running_var",
    "fusion.acoustic.norm.weight",
    "fusion.acoustic.norm.bias",
    "fusion.acoustic.baseline_prior",
    "modality_logits.acoustic.weight",
)


def graft_shared_readout(base: str | Path, donor: str | Path, output: Path) -> int:
    """Write ``output``: a copy of checkpoint ``base`` (config, calibration and every tensor)
    whose shared voice readout (the projection's rows that the shared voice map reads: polarity
    | MELD | IEMOCAP logits) is ``donor``'s. Both must be built alike (same config, same
    standardisation, baseline prior and voice map, within float16 rounding), as two fits of one
    recipe with different voices are; the intensity read and the language maps stay ``base``'s,
    so a refit of the shared readout leaves what it did not change bit for bit. Returns the rows
    taken."""
    base_dir, donor_dir = resolve_checkpoint(base), resolve_checkpoint(donor)
    if output.resolve() in (base_dir.resolve(), donor_dir.resolve()):
        raise CheckpointError("the graft writes a new checkpoint: --output must differ")
    check_output_folder(output)
    if UniMSEConfig.load(base_dir / CONFIG) != UniMSEConfig.load(donor_dir / CONFIG):
        raise CheckpointError(f"{base_dir} and {donor_dir} differ in config: no graft")
    tensors, metadata = read_stored(base_dir)
    given, _ = read_stored(donor_dir)
    for name in GRAFT_SHARED:
        if name not in tensors or name not in given:
            raise CheckpointError(f"no {name}: a graft needs a readout voice in both")
        if not torch.allclose(tensors[name].float(), given[name].float(), rtol=1e-3, atol=1e-5):
            raise CheckpointError(f"{name} differs: {donor_dir}'s readout reads another voice")
    heads = int(tensors["modality_logits.acoustic.weight"].shape[0])
    for name in ("fusion.acoustic.proj.weight", "fusion.acoustic.proj.bias"):
        tensors[name] = tensors[name].clone()
        tensors[name][:heads] = given[name][:heads].to(tensors[name].dtype)
    record: dict[str, Any] = {"base": str(base), "donor": str(donor), "rows": heads}
    fitted = donor_dir / VOICE_READOUT  # how the donor's readout was fitted
    if fitted.is_file():
        record["donor_readout"] = json.loads(fitted.read_text(encoding="utf-8"))
    with write_derived(base_dir, output, tensors, metadata) as staging:
        text = json.dumps(record, indent=2) + "\n"
        (staging / GRAFT_RECORD).write_text(text, encoding="utf-8")
    logger.info("shared voice readout of %s grafted onto %s -> %s", donor_dir, base_dir, output)
    return heads
