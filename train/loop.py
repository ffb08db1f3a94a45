"""One readable training loop (nanoGPT spirit): seeded, AMP on GPU, clipping, dev-only selection,
Rich progress, resumable. Checkpoints are safetensors + JSON (see :mod:`unimse.checkpoint`)."""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from safetensors.torch import save_file

from train.augment import EpochAugmenter, EpochView
from train.config import TrainConfig, TrainConfigError
from train.consistency import voice_consistency
from train.data import AUDIO_DATASETS, FACE_DATASETS, Sample, load_dataset
from train.evaluate import PRIMARY_METRIC, evaluate
from train.staged import (
    apply_train_only,
    backbone_names_to_store,
    freeze_modules,
    init_from_checkpoint,
    preserve_text_path,
    reset_pmf_inputs,
)
from train.unification import UnifiedSample, unify
from unimse.backbones import check_backbone
from unimse.checkpoint import (
    BACKBONE_PREFIX,
    CheckpointError,
    atomic_folder,
    check_output_folder,
    load_checkpoint,
    read_safetensors,
    resolve_checkpoint,
    save_checkpoint,
    settle_folder,
    write_checkpoint,
)
from unimse.factory import build_model
from unimse.fusion import voice_prior
from unimse.inference import EmotionPredictor, pick_device
from unimse.labels import IEMOCAP_EMOTIONS, MELD_EMOTIONS, POLARITIES
from unimse.processor import LabelTargets, ModelBatch, UniMSEProcessor

logger = logging.getLogger(__name__)

LAST = "last"  # the last finished epoch: its checkpoint and TRAINER_STATE, what --resume continues
TRAINER_STATE = "trainer_state.json"
BEST = "best"  # the best dev score's checkpoint (or, with stop_epoch, the chosen epoch's)
HISTORY = "history.jsonl"  # one record per finished epoch
TRAIN_CONFIG = "train_config.json"  # the run's configuration, written when it starts
# interrupted-N/: the records (HISTORY, TRAIN_CONFIG) of a run stopped before it saved a checkpoint,
# set aside by the next run into its folder
INTERRUPTED = "interrupted"

# Contrastive groups per dataset (its classes), laid out one dataset after the other.
DATASET_GROUPS = {
    "meld": len(MELD_EMOTIONS),
    "iemocap": len(IEMOCAP_EMOTIONS),
    "mosi": len(POLARITIES),
    "emodb": 7,  # EMODB_CLASSES
    "speech_av": len(POLARITIES),
    "ravdess": len(MELD_EMOTIONS),
    "ckplus": len(MELD_EMOTIONS),
}
DATASET_GROUP_OFFSET = {
    name: sum(list(DATASET_GROUPS.values())[:i]) for i, name in enumerate(DATASET_GROUPS)
}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def targets_for(item: UnifiedSample, borrowed_weight: float) -> LabelTargets:
    s = item.sample

    def weight(name: str) -> float:
        return borrowed_weight if name in item.borrowed else 1.0

    emodb_class = -1
    if s.dataset == "meld":
        group = DATASET_GROUP_OFFSET["meld"] + MELD_EMOTIONS.index(item.meld_emotion)
    elif s.dataset == "iemocap":
        group = DATASET_GROUP_OFFSET["iemocap"] + IEMOCAP_EMOTIONS.index(item.iemocap_emotion)
    elif s.dataset == "emodb":
        from train.audio_data import EMODB_CLASSES
        from train.audio_datasets import emodb_class_of_sample

        emodb_class = EMODB_CLASSES.index(emodb_class_of_sample(s))
        group = DATASET_GROUP_OFFSET["emodb"] + emodb_class
    elif s.dataset in ("ravdess", "ckplus"):
        group = DATASET_GROUP_OFFSET[s.dataset] + MELD_EMOTIONS.index(item.meld_emotion)
    elif s.dataset == "speech_av":
        group = DATASET_GROUP_OFFSET["speech_av"] + POLARITIES.index(item.polarity)
    else:
        group = DATASET_GROUP_OFFSET["mosi"] + POLARITIES.index(item.polarity)
    return LabelTargets(
        polarity=POLARITIES.index(item.polarity),
        score=item.score,
        meld=MELD_EMOTIONS.index(item.meld_emotion),
        iemocap=IEMOCAP_EMOTIONS.index(item.iemocap_emotion),
        polarity_weight=1.0,
        score_weight=weight("score"),
        meld_weight=weight("meld_emotion"),
        iemocap_weight=weight("iemocap_emotion"),
        group=group,
        emodb_class=emodb_class,
        voice_emotional=voice_emotional(item),
    )


# Their words have no voice of their own: any they train with is a paired neutral one ([data]
# neutral_audio). (MOSI carries its own voices.)
NEUTRAL_VOICED = ("meld", "iemocap")


def voice_emotional(item: UnifiedSample) -> float:
    """The voice gate's target (:class:`unimse.processor.LabelTargets`): acted corpora 1 for an
    emotional clip (EMO-DB's boredom included: it carries a polarity) and 0 for neutral or calm;
    0 for the words of :data:`NEUTRAL_VOICED` (any voice they get in training is a neutral one);
    -1 (no target) otherwise."""
    dataset = item.sample.dataset
    if dataset in NEUTRAL_VOICED:
        return 0.0
    if dataset in ("ravdess", "emodb"):
        return float(item.meld_emotion != "neutral" or item.polarity != "neutral")
    return -1.0


def bucketed_batches(
    lengths: Sequence[int], batch_size: int, rng: np.random.Generator
) -> list[list[int]]:
    """Shuffle, sort within windows of 50 batches by length (less padding), shuffle the batches."""
    order = rng.permutation(len(lengths))
    window = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window].tolist(), key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def selection_score(metrics: dict[str, dict[str, float]]) -> float:
    return float(np.mean([metrics[d][PRIMARY_METRIC[d]] for d in metrics]))


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    )


def _advance(progress: Progress, task: TaskID, n: int) -> None:
    progress.update(task, advance=n)


def _save_optimizer(opt: torch.optim.Optimizer, folder: Path) -> dict[str, Any]:
    state = opt.state_dict()
    tensors = {
        f"{idx}.{key}": value.contiguous()
        for idx, entries in state["state"].items()
        for key, value in entries.items()
        if isinstance(value, torch.Tensor)
    }
    save_file(tensors, str(folder / "optimizer.safetensors"))
    return {"param_groups": state["param_groups"]}


def _load_optimizer(opt: torch.optim.Optimizer, folder: Path, groups: list[dict[str, Any]]) -> None:
    file = folder / "optimizer.safetensors"
    flat, _ = read_safetensors(file, f"optimizer state {file}")
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in flat.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": groups})


def _new_state() -> dict[str, Any]:
    # stale: evaluations since the dev score last improved (early stopping)
    return {
        "epoch": 0,
        "step": 0,
        "best_score": -math.inf,
        "best_epoch": -1,
        "stale": 0,
        "history": [],
    }


def _read_json_object(file: Path, keys: Sequence[str]) -> dict[str, Any]:
    """The JSON object in ``file``, which must hold ``keys``; anything else (truncated, not
    JSON) is a one-line :class:`CheckpointError`: "``file`` is damaged (...)"."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{file} is damaged ({exc})") from None
    missing = [k for k in keys if k not in data] if isinstance(data, dict) else list(keys)
    if missing:
        raise CheckpointError(f"{file} is damaged (no {', '.join(missing)})")
    return dict(data)


def _differing_keys(saved: Any, new: Any, key: str = "model") -> list[str]:
    """The dotted keys (under ``key``) where two JSON-like configs differ."""
    if not (isinstance(saved, dict) and isinstance(new, dict)):
        return [] if saved == new else [key]
    return [
        differing
        for name in sorted(set(saved) | set(new))
        for differing in _differing_keys(saved.get(name), new.get(name), f"{key}.{name}")
    ]


def _log_augmentation(epoch: int, view: EpochView) -> None:
    if view.text_blanked or view.simulated_visual or view.neutral_audio:
        logger.info(
            "epoch %d: words blanked on %d samples (modality dropout), SIMULATED "
            "visual on %d, neutral audio paired with %d",
            epoch + 1,
            view.text_blanked,
            view.simulated_visual,
            view.neutral_audio,
        )
    if view.held_faces or view.unrelated_faces:
        logger.info(
            "epoch %d: %d real faces held, an unrelated real face beside %d texts",
            epoch + 1,
            view.held_faces,
            view.unrelated_faces,
        )


def _dev_summary(record: dict[str, Any], improved: bool) -> str:
    metrics: dict[str, dict[str, float]] = record["dev"]
    return (
        f"epoch {record['epoch']}: dev score {record['dev_score']:.2f} "
        + " ".join(f"{d}:{m[PRIMARY_METRIC[d]]:.2f}" for d, m in metrics.items())
        + (" (best)" if improved else "")
    )


@dataclass(frozen=True)
class _Amp:
    """Mixed precision on CUDA: bf16 where supported, else fp16 with a gradient scaler."""

    enabled: bool
    dtype: torch.dtype
    scaler: torch.amp.GradScaler

    @classmethod
    def on(cls, device: torch.device, wanted: bool) -> _Amp:
        enabled = wanted and device.type == "cuda"
        dtype = torch.bfloat16 if enabled and torch.cuda.is_bf16_supported() else torch.float16
        scaler = torch.amp.GradScaler("cuda", enabled=enabled and dtype == torch.float16)
        return cls(enabled, dtype, scaler)


@dataclass(frozen=True)
class _Run:
    """What one training run works with (built by :meth:`Trainer._prepare`)."""

    model: torch.nn.Module
    predictor: EmotionPredictor
    processor: UniMSEProcessor
    augmenter: EpochAugmenter
    targets: list[LabelTargets]  # per training sample
    lengths: list[int]  # token count per training sample (length-bucketed batches)
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    amp: _Amp
    keep: set[str]  # backbone tensors stored although frozen
    stage: dict[str, Any]  # staged-training facts stored with the best checkpoint


class Trainer:
    def __init__(self, config: TrainConfig, output: Path | None = None) -> None:
        self.config = config
        self.output = Path(output or config.train.output)
        self.output_option = "--output" if output else "train.output"  # who named it
        self.device = pick_device("auto")
        self.voice_prior: np.ndarray | None = None  # speaker-baseline prior, when used
        if config.train.threads:
            torch.set_num_threads(config.train.threads)

    def load_data(self) -> tuple[list[UnifiedSample], dict[str, list[Sample]]]:
        """Training samples (unified labels, oversampled) and dev samples per dataset.

        Text datasets go through label unification; the audio corpora (EMO-DB, speech_av) and
        CK+ already have every field (see :func:`train.audio_datasets.unified_audio`,
        :func:`train.face_data.unified_face`). speech_av has no dev split; EMO-DB's dev split
        (speaker 12) is evaluated audio only; CK+'s dev subjects face + neutral sentence, each
        face held 1..12 frames (:func:`train.face_data.eval_frames`).
        """
        from train.audio_datasets import (
            load_audio_dataset,
            neutral_conversation_samples,
            unified_audio,
        )

        dc = self.config.data
        data_dir = Path(dc.data_dir)
        limit = dc.limit_per_dataset
        train: list[Sample] = []
        audio: list[Sample] = []
        faces: list[Sample] = []
        dev: dict[str, list[Sample]] = {}
        wants_dev = set(dc.dev_datasets or dc.datasets)
        for name in dc.datasets:
            if name in FACE_DATASETS:
                from train.face_data import load_face_dataset

                visual = self.config.model.visual
                assert visual is not None  # TrainConfig requires one with a face corpus
                rows = load_face_dataset("train", data_dir, visual)
                faces += rows[:limit] if limit else rows
                if name in wants_dev:
                    dev_rows = load_face_dataset("dev", data_dir, visual, held=True)
                    dev[name] = dev_rows[:limit] if limit else dev_rows
                continue
            if name in AUDIO_DATASETS:
                spec = self.config.model.acoustic
                prior = self._voice_prior()
                transcripts = dc.transcripts and name not in dc.no_transcripts
                rows = [
                    row
                    for split in self._audio_training_splits(name)
                    for row in load_audio_dataset(
                        name,
                        split,
                        data_dir,
                        spec,
                        transcripts=transcripts,
                        prior=prior,
                        exclude=dc.held_out_speakers,
                    )
                ]
                audio += rows[:limit] if limit else rows
                if dc.neutral_conversations and name != "speech_av":
                    assert spec is not None and prior is not None  # TrainConfig checks
                    talk = [
                        row
                        for split in self._audio_training_splits(name)
                        for row in neutral_conversation_samples(
                            name,
                            split,
                            data_dir,
                            spec,
                            prior,
                            transcripts=transcripts,
                            exclude=dc.held_out_speakers,
                        )
                    ]
                    audio += talk[:limit] if limit else talk
                if name != "speech_av" and name in wants_dev and not dc.refit:
                    dev_rows = load_audio_dataset(name, "dev", data_dir, spec, prior=prior)
                    dev[name] = dev_rows[:limit] if limit else dev_rows
                continue
            extra = {"features": True} if name == "mosi" and dc.mosi_features else {}
            rows = load_dataset(name, "train", data_dir, **extra)
            train += rows[:limit] if limit else rows
            if name in wants_dev and not dc.refit:
                dev_rows = load_dataset(name, "dev", data_dir, **extra)
                dev[name] = dev_rows[:limit] if limit else dev_rows
        unified = self._replay(unify(train)) if train else []
        unified += [unified_audio(s) for s in audio]
        if faces:
            from train.face_data import unified_face

            unified += [unified_face(s) for s in faces]
        repeated = [
            u for u in unified for _ in range(self.config.data.oversample.get(u.sample.dataset, 1))
        ]
        return repeated, dev

    def _audio_training_splits(self, name: str) -> tuple[str, ...]:
        """The splits of audio corpus ``name`` that train: its dev speakers too in a refit."""
        dc = self.config.data
        return ("train", "dev") if dc.refit and name in dc.dev_datasets else ("train",)

    def _voice_prior(self) -> np.ndarray | None:
        """The speaker-baseline prior of the training speech (None without a baseline); computed
        once, stored in the model (``baseline_prior``) so that live use starts from it."""
        spec = self.config.model.acoustic
        if spec is None or not spec.baseline:
            return None
        if not set(AUDIO_DATASETS) & set(self.config.data.datasets):
            return None  # no speech trains here: the model keeps its init checkpoint's prior
        if self.voice_prior is None:
            from train.audio_datasets import voice_prior

            dc = self.config.data
            refit = dc.dev_datasets if dc.refit else ()
            self.voice_prior = voice_prior(
                dc.datasets, dc.data_dir, spec, dev=refit, exclude=dc.held_out_speakers
            )
        return self.voice_prior

    def _neutral_voices(self) -> list[np.ndarray] | None:
        """With a speaker baseline, the voices paired with words under ``[data] neutral_audio``:
        the training speakers' neutral clips as a conversation in a neutral voice gives them
        (each relative to that speaker's neutral clips, as live use would see them). None: the
        augmenter's default (the neutral training clips as they are)."""
        prior = self._voice_prior()
        spec = self.config.model.acoustic
        if prior is None or spec is None or not self.config.data.neutral_audio:
            return None
        from train.audio_datasets import neutral_voice_clips

        dc = self.config.data
        return [
            clip
            for name in dc.datasets
            if name in AUDIO_DATASETS and name != "speech_av"
            for split in self._audio_training_splits(name)
            for clip in neutral_voice_clips(
                name,
                split,
                dc.data_dir,
                spec,
                prior,
                shifts=dc.neutral_voice_shifts,
                exclude=dc.held_out_speakers,
            )
        ]

    def _replay(self, unified: list[UnifiedSample]) -> list[UnifiedSample]:
        """Keep a seeded random subset of N samples of each dataset in ``[data]
        replay_per_dataset`` (0: a label-unification donor only, not trained on). Applied after
        unification, so the borrowed labels are those of the whole training sets."""
        sizes = self.config.data.replay_per_dataset
        if not sizes:
            return unified
        kept: list[UnifiedSample] = []
        for name in dict.fromkeys(u.sample.dataset for u in unified):
            rows = [u for u in unified if u.sample.dataset == name]
            if name in sizes and sizes[name] < len(rows):
                rng = np.random.default_rng([self.config.train.seed, len(rows)])
                pick = sorted(rng.choice(len(rows), sizes[name], replace=False).tolist())
                rows = [rows[i] for i in pick]
                logger.info("replay: %d %s training samples", len(rows), name)
            kept += rows
        return kept

    def _speaker(self) -> Callable[[list[str]], list[np.ndarray | None]] | None:
        """Neutral synthetic speech for ``[data] neutral_audio_tts`` (None when unused)."""
        spec = self.config.model.acoustic
        if not self.config.data.neutral_audio_tts or spec is None:
            return None
        from train.tts_audio import tts_features
        from unimse.features import acoustic_extractor

        extract = acoustic_extractor(spec)
        return lambda texts: tts_features(texts, spec, extract)

    def run(self, resume: bool = False) -> dict[str, Any]:
        """Train; ``best/`` keeps the best dev score, ``last/`` what ``resume`` continues from."""
        tc = self.config.train
        check_output_folder(self.output, self.output_option)
        if tc.init_from:
            resolve_checkpoint(tc.init_from)  # a missing stage-1 checkpoint fails before any work
        check_backbone(self.config.model)  # a bad backbone too, not after all the data is read
        for name in (LAST, BEST):  # a save stopped between its two renames: put the old back
            settle_folder(self.output / name)
        saved: dict[str, Any] | None = None  # the trainer state resume continues from
        if resume:
            saved = self._check_resume()
        else:
            self._check_fresh()
        seed_everything(tc.seed)
        if saved is None:
            self._set_aside_unsaved()
        self._write_config()
        from train.audio_datasets import corpora_read_once

        with corpora_read_once():  # splits, neutral voices and prior of one corpus: one read
            unified, dev = self.load_data()
            run = self._prepare(unified)
        state = self._resume(run, saved) if saved is not None else _new_state()
        last_epoch = tc.stop_epoch or tc.epochs
        with _progress() as progress:
            for epoch in range(state["epoch"], last_epoch):
                if self._out_of_steps(state):
                    break
                record = self._train_epoch(run, epoch, state, progress)
                final = epoch + 1 == last_epoch or self._out_of_steps(state)
                if tc.stop_epoch:  # no selection: the last epoch is the model
                    self._append_history(state, record)
                    state["epoch"] = epoch + 1
                    if final:
                        self._save_final(run, state, record)
                    self._save_last(run, state)
                    continue
                evaluated = final or (epoch + 1) % tc.eval_every_epochs == 0
                if evaluated:
                    metrics = self._evaluate(run, dev, progress)
                    record.update(dev=metrics, dev_score=selection_score(metrics))
                self._append_history(state, record)
                if evaluated:
                    improved = self._save_if_best(run, state, record)
                    state["stale"] = 0 if improved else state["stale"] + 1
                    progress.console.print(_dev_summary(record, improved))
                else:
                    progress.console.print(
                        f"epoch {epoch + 1}: no dev evaluation "
                        f"(every {tc.eval_every_epochs} epochs)"
                    )
                state["epoch"] = epoch + 1
                self._save_last(run, state)
                if evaluated and state["stale"] >= tc.patience:
                    progress.console.print(
                        f"no dev improvement for {state['stale']} evaluations: stopping"
                    )
                    break
        return state

    def _check_fresh(self) -> None:
        """A new run never writes over an earlier one's checkpoints (nor their history); a run
        stopped before its first checkpoint left only records, which :meth:`_set_aside_unsaved`
        keeps."""
        if (self.output / LAST).exists():
            raise CheckpointError(
                f"{self.output} already holds a training run: --resume continues it; choose "
                "another output (or delete the folder)"
            )
        if (self.output / BEST).exists():  # stopped between its first best/ and last/
            raise CheckpointError(
                f"{self.output} already holds a trained model ({BEST}/, no {LAST}/ to resume "
                f"from): choose another output (or move {BEST}/ away)"
            )

    def _check_resume(self) -> dict[str, Any] | None:
        """Before any work or write: the trainer state ``resume`` continues from (readable), and
        the run's model config the same as this one's (its weights must fit). None where the run
        was stopped before it saved a checkpoint: nothing to continue, it starts afresh."""
        file = self.output / LAST / TRAINER_STATE
        if not file.is_file():
            started = any((self.output / name).is_file() for name in (HISTORY, TRAIN_CONFIG))
            if started and not (self.output / LAST).exists() and not (self.output / BEST).exists():
                logger.warning(
                    "nothing saved to resume in %s yet (the run stopped before its first "
                    "checkpoint): starting it afresh from epoch 1",
                    self.output,
                )
                return None
            raise CheckpointError(f"nothing to resume in {self.output} (no {LAST}/{TRAINER_STATE})")
        state = _read_json_object(file, ("epoch", "step", "history", "optimizer"))
        written = self.output / TRAIN_CONFIG
        if written.is_file():
            model = _read_json_object(written, ("model",))["model"]
            new = json.loads(json.dumps(self.config.model.to_dict()))
            differing = _differing_keys(model, new)
            if differing:
                raise CheckpointError(
                    f"--resume: the model config differs from {written} in "
                    f"{', '.join(differing)}: resume with the run's model config, or train into "
                    "another output"
                )
        return state

    def _set_aside_unsaved(self) -> None:
        """Before a fresh start: the history (and config) of a run stopped before it saved a
        checkpoint record epochs whose weights are lost; moved to ``interrupted-N/``, kept,
        neither written over nor appended to."""
        if not (self.output / HISTORY).is_file():
            return  # a lone train_config.json records no epoch: the new one replaces it
        n = 1
        while (aside := self.output / f"{INTERRUPTED}-{n}").exists():
            n += 1
        aside.mkdir()
        moved = [name for name in (HISTORY, TRAIN_CONFIG) if (self.output / name).is_file()]
        for name in moved:
            (self.output / name).rename(aside / name)
        logger.warning(
            "%s: an earlier run there stopped before it saved a checkpoint; its %s moved to %s; "
            "starting afresh",
            self.output,
            " and ".join(moved),
            aside,
        )

    def _write_config(self) -> None:
        cfg = self.config
        self.output.mkdir(parents=True, exist_ok=True)
        (self.output / TRAIN_CONFIG).write_text(
            json.dumps(
                {
                    "model": cfg.model.to_dict(),
                    "data": asdict(cfg.data),
                    "train": asdict(cfg.train),
                },
                indent=2,
            )
            + "\n"
        )

    def _prepare(self, unified: list[UnifiedSample]) -> _Run:
        """The model, the encoded training samples, the optimiser and its schedule."""
        cfg, tc = self.config, self.config.train
        model, keep, no_decay = self._build_model()
        predictor = EmotionPredictor(model, self.device, "training", max_batch=tc.eval_batch_size)
        processor: UniMSEProcessor = predictor.processor
        encoded = [processor.format_ids(u.sample.to_input()) for u in unified]
        targets = [targets_for(u, cfg.model.losses.borrowed) for u in unified]
        augmenter = EpochAugmenter.build(
            unified,
            [u.sample.to_input() for u in unified],
            encoded,
            processor.format_ids,
            modality_dropout=tc.modality_dropout,
            simulated_visual=cfg.data.simulated_visual,
            uses_visual=cfg.model.visual is not None,
            neutral_audio=cfg.data.neutral_audio,
            neutral_clips=self._neutral_voices(),
            spoken_share=cfg.data.neutral_audio_tts,
            speak=self._speaker(),
            unrelated_face=cfg.data.unrelated_face,
        )
        opt, sched = self._optimizer(model, no_decay, math.ceil(len(unified) / tc.batch_size))
        stage: dict[str, Any] = {}
        if tc.init_from:
            stage = {
                "init_from": tc.init_from,
                "train_only": list(tc.train_only),
                "preserve_text": tc.preserve_text,
            }
        return _Run(
            model=model,
            predictor=predictor,
            processor=processor,
            augmenter=augmenter,
            targets=targets,
            lengths=[len(ids) for ids, _, _ in encoded],
            opt=opt,
            sched=sched,
            amp=_Amp.on(self.device, tc.amp),
            keep=keep,
            stage=stage,
        )

    def _build_model(self) -> tuple[torch.nn.Module, set[str], list[torch.Tensor]]:
        """The model on the device with what must not train frozen; also the backbone tensors
        to store although frozen and the masked weights that get no weight decay."""
        cfg, tc = self.config, self.config.train
        model = build_model(cfg.model)
        init = init_from_checkpoint(model, tc.init_from, tc.init_exclude) if tc.init_from else None
        if tc.reset_pmf:
            reset_pmf_inputs(model, tc.reset_pmf)
        prior = self._voice_prior()
        if prior is not None:
            buffer = voice_prior(model)
            if buffer is None:
                raise TrainConfigError("[model] acoustic: a baseline needs the stats encoder")
            buffer.copy_(torch.from_numpy(prior))
        keep = backbone_names_to_store(model, init)  # stage-1 layers, stored although frozen
        model.to(self.device)
        if not (tc.preserve_text or tc.train_only):
            freeze = getattr(model, "freeze_lower", None)
            if freeze is not None:
                freeze(tc.trainable_layers)
        no_decay: list[torch.Tensor] = []  # masked weights (preserve_text): no decay
        try:
            if tc.preserve_text:
                no_decay = preserve_text_path(model)
            elif tc.train_only:
                apply_train_only(model, tc.train_only)
            freeze_modules(model, tc.freeze)
        except ValueError as exc:
            raise TrainConfigError(f"[train] {exc}") from None
        return model, keep, no_decay

    def _optimizer(
        self, model: torch.nn.Module, no_decay: list[torch.Tensor], steps_per_epoch: int
    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        """AdamW over what trains (backbone and new modules at their own rates), linear warmup
        then linear decay to zero."""
        tc = self.config.train
        masked = {id(p) for p in no_decay}
        trainable = [
            (n, p) for n, p in model.named_parameters() if p.requires_grad and id(p) not in masked
        ]
        groups: list[dict[str, Any]] = [
            {
                "params": [p for n, p in trainable if n.startswith(BACKBONE_PREFIX)],
                "lr": tc.lr_backbone,
            },
            {
                "params": [p for n, p in trainable if not n.startswith(BACKBONE_PREFIX)],
                "lr": tc.lr_new,
            },
        ]
        if no_decay:
            groups.append({"params": no_decay, "lr": tc.lr_backbone, "weight_decay": 0.0})
        opt = torch.optim.AdamW(groups, weight_decay=tc.weight_decay)
        total = steps_per_epoch * tc.epochs
        if tc.max_steps:
            total = min(tc.max_steps, total)
        warmup = int(total * tc.warmup_ratio)

        def lr_lambda(step: int) -> float:
            if step < warmup:
                return (step + 1) / max(1, warmup)
            return max(0.0, (total - step) / max(1, total - warmup))

        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)

    def _out_of_steps(self, state: dict[str, Any]) -> bool:
        max_steps = self.config.train.max_steps
        return bool(max_steps and state["step"] >= max_steps)

    def _train_epoch(
        self, run: _Run, epoch: int, state: dict[str, Any], progress: Progress
    ) -> dict[str, Any]:
        """One pass over the epoch's (augmented) training samples; returns its history record."""
        tc = self.config.train
        rng = np.random.default_rng(tc.seed + epoch)
        torch.manual_seed(tc.seed + epoch)
        batches = bucketed_batches(run.lengths, tc.batch_size, rng)
        view = run.augmenter.epoch(tc.seed + epoch)
        _log_augmentation(epoch, view)
        task = progress.add_task(f"epoch {epoch + 1}/{tc.epochs}", total=len(batches), info="")
        run.model.train()
        running: dict[str, float] = {}
        t0 = time.perf_counter()
        for i, idx in enumerate(batches):
            if self._out_of_steps(state):
                break
            batch = run.processor.collate(
                [view.encoded[j] for j in idx],
                [view.inputs[j] for j in idx],
                [run.targets[j] for j in idx],
            )
            paired = torch.tensor(
                [j in run.augmenter.neutral and view.inputs[j].acoustic is not None for j in idx]
            )
            loss, parts = self._step(run, batch, paired)
            run.sched.step()
            state["step"] += 1
            for k, v in parts.items():
                running[k] = 0.98 * running.get(k, v) + 0.02 * v
            running["loss"] = 0.98 * running.get("loss", loss) + 0.02 * loss
            progress.update(task, advance=1, info=f"loss {running['loss']:.3f}")
            if (i + 1) % 50 == 0:
                logger.info(
                    "epoch %d step %d/%d loss %.4f (%.2f s/step)",
                    epoch + 1,
                    i + 1,
                    len(batches),
                    running["loss"],
                    (time.perf_counter() - t0) / (i + 1),
                )
        return {
            "epoch": epoch + 1,
            "step": state["step"],
            "train_seconds": round(time.perf_counter() - t0, 1),
            "train_loss": running,
        }

    def _step(
        self, run: _Run, batch: ModelBatch, paired: torch.Tensor
    ) -> tuple[float, dict[str, float]]:
        """One optimiser step; ``paired`` marks the rows that got a neutral clip this epoch."""
        batch = batch.to(self.device)
        weight = self.config.train.voice_consistency
        with torch.autocast(self.device.type, dtype=run.amp.dtype, enabled=run.amp.enabled):
            out = run.model(batch)
            assert out.loss is not None
            loss = out.loss
            if weight:
                term = weight * voice_consistency(run.model, batch, paired.to(self.device))
                out.losses["voice_consistency"] = term
                loss = loss + term
        run.opt.zero_grad(set_to_none=True)
        scaler = run.amp.scaler
        scaler.scale(loss).backward()
        scaler.unscale_(run.opt)
        torch.nn.utils.clip_grad_norm_(
            [p for g in run.opt.param_groups for p in g["params"]], self.config.train.grad_clip
        )
        scaler.step(run.opt)
        scaler.update()
        return float(loss.detach()), {k: float(v.detach()) for k, v in out.losses.items()}

    def _append_history(self, state: dict[str, Any], record: dict[str, Any]) -> None:
        state["history"].append(record)
        with (self.output / HISTORY).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def _save_if_best(self, run: _Run, state: dict[str, Any], record: dict[str, Any]) -> bool:
        """Write ``best/`` when the epoch's dev score beats every earlier one (dev-only
        selection); returns whether it did."""
        improved = bool(record["dev_score"] > state["best_score"])
        if improved:
            state["best_score"], state["best_epoch"] = record["dev_score"], record["epoch"]
            save_checkpoint(
                run.model,
                self.output / BEST,
                metrics={"dev": record["dev"]},
                extra={
                    "epoch": record["epoch"],
                    "dev_score": record["dev_score"],
                    "selection": "dev only",
                    **run.stage,
                },
                keep=run.keep,
            )
        return improved

    def _save_final(self, run: _Run, state: dict[str, Any], record: dict[str, Any]) -> None:
        """``best/`` at ``[train] stop_epoch``: the epoch count was chosen beforehand."""
        state["best_epoch"] = record["epoch"]
        save_checkpoint(
            run.model,
            self.output / BEST,
            extra={
                "epoch": record["epoch"],
                "selection": f"fixed epoch count {record['epoch']} (chosen by an earlier run's dev)"
                + (" on train + dev speakers (refit)" if self.config.data.refit else ""),
                **run.stage,
            },
            keep=run.keep,
        )
        logger.info("epoch %d of the chosen count: kept as best/", record["epoch"])

    def _save_last(self, run: _Run, state: dict[str, Any]) -> None:
        """``last/``: model, optimiser and trainer state, all that ``resume`` needs, written whole
        (:func:`unimse.checkpoint.atomic_folder`): an interruption leaves the previous one."""
        with atomic_folder(self.output / LAST) as last:
            write_checkpoint(run.model, last, half=False, keep=run.keep)
            snapshot = dict(state, optimizer=_save_optimizer(run.opt, last))
            (last / TRAINER_STATE).write_text(json.dumps(snapshot, indent=2) + "\n")

    def _resume(self, run: _Run, state: dict[str, Any]) -> dict[str, Any]:
        """Model, optimiser, schedule and trainer ``state`` as the last finished epoch left them
        (read by :meth:`_check_resume`); the history file is set back to the epochs ``last/``
        holds, so an epoch recorded after it was saved is not recorded twice."""
        last = self.output / LAST
        state.setdefault("stale", 0)  # a state from before the count was kept
        history = self.output / HISTORY
        partial_history = history.with_name(f".{HISTORY}.new")
        partial_history.write_text("".join(json.dumps(r) + "\n" for r in state["history"]))
        partial_history.replace(history)
        restored = load_checkpoint(last, device=self.device)
        run.model.load_state_dict(restored.state_dict())
        _load_optimizer(run.opt, last, state.pop("optimizer")["param_groups"])
        run.sched.last_epoch = state["step"]
        logger.info("resumed from epoch %d, step %d", state["epoch"], state["step"])
        return state

    def _evaluate(
        self, run: _Run, dev: dict[str, list[Sample]], progress: Progress
    ) -> dict[str, dict[str, float]]:
        run.model.eval()
        results = {}
        for name, samples in dev.items():
            task = progress.add_task(f"dev {name}", total=len(samples), info="")
            results[name] = evaluate(
                run.predictor,
                name,
                samples,
                self.config.train.eval_batch_size,
                progress=partial(_advance, progress, task),
            )
        run.model.train()
        return results
