"""Training run configuration, loaded from ``configs/*.toml`` by the typed loader
(:mod:`unimse.typed_config`: an error names its dotted key) and validated."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from train.data import AUDIO_DATASETS, DATASETS, FACE_DATASETS
from train.datadir import DEFAULT_DATA_DIR
from unimse import typed_config
from unimse.config import PMF_SLOTS, UniMSEConfig


class TrainConfigError(typed_config.TypedConfigError):
    """A training config file is missing, not TOML, or holds an unknown key or a bad value."""


ALL_DATASETS = DATASETS + AUDIO_DATASETS + FACE_DATASETS
SIMULATED_VISUAL_DATASETS = ("meld", "iemocap")  # gold emotions with a facial counterpart


@dataclass(frozen=True)
class DataConfig:
    datasets: tuple[str, ...] = DATASETS
    data_dir: str = str(DEFAULT_DATA_DIR)
    mosi_features: bool = False  # bc-LSTM utterance features (benchmark ablation only)
    limit_per_dataset: int = 0  # 0: all training samples
    # Times each training sample of a dataset is seen per epoch (small MOSI is repeated).
    oversample: dict[str, int] = field(default_factory=dict)
    # Replay (staged training): train on a seeded random subset of N training samples of a text
    # dataset, drawn after label unification over the whole training sets (0: the dataset only
    # lends labels). Its dev split stays whole.
    replay_per_dataset: dict[str, int] = field(default_factory=dict)
    # EMO-DB, RAVDESS: also train on text+audio samples whose text is the file's transcript
    # (train.audio_datasets.transcript_of), beside the audio-only ones.
    transcripts: bool = False
    # ...except for these corpora, whose clips train audio only (EMO-DB: the English text model
    # reading German sentences; the speaker CV learns EMO-DB's voice better without them).
    no_transcripts: tuple[str, ...] = ()
    # SIMULATED visual evidence (train.simulated_visual), not real video: per dataset, the
    # probability that a training sample gets a simulated FER sequence in an epoch.
    simulated_visual: dict[str, float] = field(default_factory=dict)
    # Neutral-prosody pairing (train.augment): per text dataset, the probability that a training
    # sample with words and no audio gets the acoustic features of a random neutral training clip
    # of the audio corpora in an epoch, its label unchanged: speech that sounds neutral must not
    # override what the words say.
    neutral_audio: dict[str, float] = field(default_factory=dict)
    # Share of those pairings that use the sample's own words spoken by espeak-ng (neutral
    # synthetic prosody, train.tts_audio) instead of a neutral corpus clip.
    neutral_audio_tts: float = 0.0
    # With a speaker baseline: the neutral training voices also pitch-shifted by each of these
    # semitones, every shift of a speaker a voice of its own (more voices for neutral_audio).
    neutral_voice_shifts: tuple[float, ...] = ()
    # With a speaker baseline: the acted corpora's neutral training clips also as a conversation in
    # a neutral voice gives them (relative to the speaker's neutral clips only), labelled neutral
    # (train.audio_datasets.neutral_conversation_samples): what a new speaker's calm voice is live.
    neutral_conversations: bool = False
    # Unrelated-face pairing (train.augment): per text dataset, the probability that a training
    # sample whose own label is not neutral (the words carry an emotion) gets the face of a random
    # CK+ training image, held 1..12 frames, in an epoch, its label unchanged: a face must not
    # overrule clear words. Needs "ckplus" among the datasets (the faces).
    unrelated_face: dict[str, float] = field(default_factory=dict)
    # Dev splits used for model selection (empty: every configured dataset that has one).
    dev_datasets: tuple[str, ...] = ()
    # Refit: the dev speakers of the audio corpora in dev_datasets train too (their clips, their
    # neutral voices, the speaker-baseline prior) and nothing is evaluated; with [train]
    # stop_epoch = the epoch count an earlier run's dev chose (the final model of a recipe
    # whose choices are made; its audio weight comes from that run's calibration).
    refit: bool = False
    # Speakers of the audio corpora kept out of training entirely (their clips, their neutral
    # voices, the speaker-baseline prior), as "corpus/speaker" ("ravdess/01", "emodb/03"): one
    # fold of a speaker cross-validation of a voice stage (benchmarks/neutral_cv.py).
    held_out_speakers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = set(self.datasets) - set(ALL_DATASETS)
        if unknown or not self.datasets:
            raise ValueError(
                f"datasets must be a non-empty subset of {ALL_DATASETS}, got {self.datasets}"
            )
        if any(k not in self.datasets or v < 1 for k, v in self.oversample.items()):
            raise ValueError(f"oversample needs datasets from {self.datasets} and factors >= 1")
        if self.limit_per_dataset < 0:
            raise ValueError("limit_per_dataset must be >= 0")
        if any(
            k not in self.datasets or k not in DATASETS or v < 0
            for k, v in self.replay_per_dataset.items()
        ):
            raise ValueError(
                f"replay_per_dataset needs text datasets from {self.datasets} and sizes >= 0"
            )
        for name, chance in self.simulated_visual.items():
            if name not in SIMULATED_VISUAL_DATASETS or name not in self.datasets:
                raise ValueError(
                    f"simulated_visual applies to {SIMULATED_VISUAL_DATASETS} among the "
                    f"configured datasets, not {name!r}"
                )
            if not 0.0 <= chance <= 1.0:
                raise ValueError(f"simulated_visual.{name} must be a probability in [0, 1]")
        self._check_text_chances("neutral_audio", self.neutral_audio)
        if not 0.0 <= self.neutral_audio_tts <= 1.0:
            raise ValueError("neutral_audio_tts must be a share in [0, 1]")
        if self.neutral_audio_tts and not self.neutral_audio:
            raise ValueError("neutral_audio_tts needs neutral_audio (the samples to pair)")
        if self.neutral_voice_shifts and not self.neutral_audio:
            raise ValueError("neutral_voice_shifts needs neutral_audio (the samples to pair)")
        if any(not 0 < abs(s) <= 12 for s in self.neutral_voice_shifts):
            raise ValueError("neutral_voice_shifts are semitones, non-zero, within +-12")
        if self.neutral_audio and not set(self.datasets) & set(AUDIO_DATASETS):
            raise ValueError(f"neutral_audio needs an audio corpus {AUDIO_DATASETS} for its clips")
        self._check_text_chances("unrelated_face", self.unrelated_face)
        if self.unrelated_face and not set(self.datasets) & set(FACE_DATASETS):
            raise ValueError(f"unrelated_face needs a face corpus {FACE_DATASETS} for its faces")
        if set(self.datasets) <= {"speech_av"}:
            raise ValueError("speech_av has no dev split: add a dataset to select models on")
        no_dev = set(self.dev_datasets) - (set(self.datasets) - {"speech_av"})
        if no_dev:
            raise ValueError(
                f"dev_datasets {sorted(no_dev)}: not configured or without a dev split"
            )
        if self.refit and (not self.dev_datasets or set(self.dev_datasets) - set(AUDIO_DATASETS)):
            raise ValueError(
                "refit trains on the dev speakers of audio corpora: dev_datasets must list only "
                f"those among {AUDIO_DATASETS}"
            )
        bad = [
            k
            for k in self.held_out_speakers
            if k.partition("/")[0] not in AUDIO_DATASETS or not k.partition("/")[2]
        ]
        if bad:
            raise ValueError(
                f"held_out_speakers {bad}: give each as corpus/speaker, corpus one of "
                f"{AUDIO_DATASETS}"
            )
        if self.transcripts and not {"emodb", "ravdess"} & set(self.datasets):
            raise ValueError("transcripts needs 'emodb' or 'ravdess' among the datasets")
        if set(self.no_transcripts) - ({"emodb", "ravdess"} & set(self.datasets)):
            raise ValueError("no_transcripts lists 'emodb' or 'ravdess' among the datasets")

    def _check_text_chances(self, key: str, chances: dict[str, float]) -> None:
        """``[data] key``: per configured text dataset, a probability."""
        for name, chance in chances.items():
            if name not in self.datasets or name not in DATASETS:
                raise ValueError(f"{key} applies to the configured text datasets, not {name!r}")
            if not 0.0 <= chance <= 1.0:
                raise ValueError(f"{key}.{name} must be a probability in [0, 1]")


@dataclass(frozen=True)
class OptimConfig:
    seed: int = 13
    epochs: int = 4
    max_steps: int = 0  # 0: no limit
    batch_size: int = 32
    eval_batch_size: int = 64
    lr_backbone: float = 5e-5
    lr_new: float = 5e-4  # fusion, LSTMs, heads
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    trainable_layers: int = 4  # top backbone layers that train; the rest is frozen
    grad_clip: float = 1.0
    amp: bool = True  # mixed precision on CUDA (bf16 where supported, else fp16)
    patience: int = 2  # epochs without dev improvement before stopping
    eval_every_epochs: int = 1
    threads: int = 0  # torch CPU threads; 0 = all cores
    output: str = "runs/default"
    # Staged training (train.staged): start from this checkpoint's matching weights...
    init_from: str = ""
    # Modules whose init_from tensors are NOT loaded (left at initialisation), e.g. a feature
    # encoder that changes with the feature spec ("fusion.acoustic").
    init_exclude: tuple[str, ...] = ()
    # Modules kept frozen whatever else trains (e.g. "fusion.visual" when no sample has video).
    freeze: tuple[str, ...] = ()
    # Modalities ("audio", "video") whose PMF input columns restart at zero after init_from (a new
    # encoder for that modality: the old columns were learnt for another vector).
    reset_pmf: tuple[str, ...] = ()
    # ...and train only these modules (module paths or globs, e.g. "fusion", "heads",
    # "backbone.encoder.layer.*.pmf"); empty: the top `trainable_layers` layers + new modules.
    train_only: tuple[str, ...] = ()
    # Or: train only what audio/video inputs pass through (train.staged.preserve_text_path), so
    # every text-only output stays exactly as init_from left it.
    preserve_text: bool = False
    # Probability that a sample with audio and words has its words blanked in an epoch.
    modality_dropout: float = 0.0
    # Weight of the neutral-voice consistency loss (train.consistency) on the text samples that
    # [data] neutral_audio pairs with a neutral clip: their label must stay the text-only one.
    voice_consistency: float = 0.0
    # Train only the first stop_epoch epochs of the `epochs`-long schedule and keep the last as
    # best/, with no dev selection (0: off; a [data] refit needs it).
    stop_epoch: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size", "eval_every_epochs"):
            if getattr(self, name) <= 0:
                raise ValueError(f"train.{name} must be positive")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError("train.warmup_ratio must be in [0, 1)")
        if self.lr_backbone < 0 or self.lr_new <= 0:
            raise ValueError("learning rates must be positive")
        if not 0.0 <= self.modality_dropout <= 1.0:
            raise ValueError("train.modality_dropout must be in [0, 1]")
        if self.voice_consistency < 0:
            raise ValueError("train.voice_consistency must be >= 0")
        if not 0 <= self.stop_epoch <= self.epochs:
            raise ValueError("train.stop_epoch must be in [0, train.epochs]")
        for name in ("train_only", "init_exclude", "freeze"):
            if any(not isinstance(p, str) or not p for p in getattr(self, name)):
                raise ValueError(f"train.{name} must list module names")
        if set(self.reset_pmf) - set(PMF_SLOTS):
            raise ValueError(f"train.reset_pmf lists modalities: {', '.join(PMF_SLOTS)}")
        if self.init_exclude and not self.init_from:
            raise ValueError("train.init_exclude needs train.init_from")
        if self.preserve_text and self.train_only:
            raise ValueError("train.preserve_text and train.train_only exclude each other")
        if self.preserve_text and not self.init_from:
            raise ValueError("train.preserve_text needs train.init_from (the text model to keep)")


@dataclass(frozen=True)
class TrainConfig:
    model: UniMSEConfig = field(default_factory=UniMSEConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        audio = [d for d in self.data.datasets if d in AUDIO_DATASETS]
        if audio and self.model.acoustic is None:
            raise ValueError(
                f"datasets {audio} are audio only: [model] needs an acoustic feature spec, e.g. "
                'acoustic = { name = "emotrack-acoustic-v1", dim = 64 }'
            )
        faces = [d for d in self.data.datasets if d in FACE_DATASETS]
        if faces and self.model.visual is None:
            raise ValueError(
                f"datasets {faces} are faces: [model] needs a visual feature spec, e.g. "
                'visual = { name = "emotrack-visual-v2", dim = 7 }'
            )
        if self.data.refit and not self.train.stop_epoch:
            raise ValueError(
                "[data] refit has no dev to choose an epoch on: set [train] stop_epoch to the "
                "epoch count the selection run chose"
            )
        if self.train.voice_consistency and not self.data.neutral_audio:
            raise ValueError(
                "train.voice_consistency needs [data] neutral_audio (the text samples it pairs "
                "with neutral clips are where it applies)"
            )
        acoustic = self.model.acoustic
        if self.data.neutral_conversations and (acoustic is None or not acoustic.baseline):
            raise ValueError(
                "[data] neutral_conversations needs a speaker baseline: [model] acoustic with "
                "baseline > 0"
            )
        if self.data.neutral_conversations and not {"ravdess", "emodb"} & set(self.data.datasets):
            raise ValueError("[data] neutral_conversations needs an acted corpus (ravdess, emodb)")
        if self.data.simulated_visual and self.model.visual is None:
            raise ValueError(
                "simulated_visual needs a [model] visual feature spec, e.g. "
                'visual = { name = "emotrack-visual-v1", dim = 7 }'
            )

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        """The defaults with the tables of a parsed TOML file applied, checked against the types."""
        return typed_config.merge(cls(), raw, TrainConfigError)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        return typed_config.load(cls(), path, error=TrainConfigError)


READOUT_LOSSES = ("all", "joint")


@dataclass(frozen=True)
class ReadoutSettings:
    """How ``emotrack fit-voice`` (:func:`train.voice_readout.fit_readout`) weighs its terms."""

    l2: float = 0.01  # per weight, on the mean loss
    emodb_weight: float = 2.0  # EMO-DB's rows against RAVDESS's and the neutral voices'
    losses: str = "all"  # "joint": EMO-DB's rows through the joint class loss only
    # the neutral voices' rows (each speaker's neutral clips as a conversation gives them, label
    # neutral) against the acted clips': more weight, a voice that leans less from neutral
    neutral_weight: float = 1.0
    # with losses "all": EMO-DB's rows in the heads' cross-entropy at this share of their weight
    # (1: as every row; 0: as "joint"), beside the joint class loss
    emodb_heads: float = 1.0
    # the synthetic voices' rows (espeak-ng speech, label neutral) against the acted clips'
    synthetic_weight: float = 4.0

    def __post_init__(self) -> None:
        if self.l2 < 0 or self.emodb_weight <= 0 or self.neutral_weight <= 0:
            raise ValueError("the readout needs l2 >= 0 and EMO-DB and neutral weights > 0")
        if self.synthetic_weight <= 0:
            raise ValueError("the synthetic voices' weight must be > 0")
        if not 0.0 <= self.emodb_heads <= 1.0:
            raise ValueError("the EMO-DB rows' share of the heads' loss must be in [0, 1]")
        if self.losses not in READOUT_LOSSES:
            raise ValueError(f"readout losses {self.losses!r}: choose from {READOUT_LOSSES}")


def language_readout(l2: float, losses: str, emodb_heads: float = 1.0) -> ReadoutSettings:
    """A language readout's settings (``emotrack fit-voice --german-readout``): fitted on its
    corpus alone, whose clips weigh as its neutral voices do."""
    return ReadoutSettings(l2, 1.0, losses, emodb_heads=emodb_heads)
