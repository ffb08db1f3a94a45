"""Batched prediction for the live pipeline: load once, predict many."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from unimse.backbones import load_tokenizer
from unimse.checkpoint import WEIGHTS, load_checkpoint, resolve_checkpoint
from unimse.config import UniMSEConfig
from unimse.fusion import voice_prior
from unimse.inputs import ModelInput
from unimse.modeling import TrustRead, UniMSEOutput
from unimse.prediction import Prediction
from unimse.processor import UniMSEProcessor
from unimse.speakers import FIRST_SPEAKER
from unimse.voice_baseline import SpeakerBaselines
from unimse.voice_trust import SpeakerExpressiveness, TrustRow, VoiceHistory

logger = logging.getLogger(__name__)


class DeviceError(RuntimeError):
    """A torch device asked for that this machine does not have."""


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device {device!r} requested but CUDA is not available (use cpu)")
    try:
        chosen = torch.device(device)
    except RuntimeError:  # not a device name torch knows
        raise DeviceError(f"device {device!r}: use cpu, cuda or mps") from None
    if chosen.type not in ("cpu", "cuda", "mps"):  # meta, xpu, ...: not what runs this model
        raise DeviceError(f"device {device!r}: use cpu, cuda or mps")
    if chosen.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {device!r} requested but MPS is not available (use cpu)")
    return chosen


def outputs_to_predictions(
    out: UniMSEOutput, config: UniMSEConfig, modalities: Sequence[tuple[str, ...]]
) -> list[Prediction]:
    logits = torch.cat([out.polarity_logits, out.meld_logits, out.iemocap_logits], dim=-1)
    rows = trust_rows(out.trust) if out.trust is not None else [None] * len(modalities)
    return logits_to_predictions(logits, out.score.float().cpu().tolist(), config, modalities, rows)


def logits_to_predictions(
    logits: torch.Tensor,
    scores: Sequence[float],
    config: UniMSEConfig,
    modalities: Sequence[tuple[str, ...]],
    rows: Sequence[TrustRow | None],
) -> list[Prediction]:
    """Predictions from the heads' logits (B, polarity + MELD + IEMOCAP) and sentiment scores."""
    split = torch.split(logits.float(), list(config.head_sizes), dim=-1)
    pol, meld, iem = (torch.softmax(x, -1).cpu().tolist() for x in split)
    results = []
    for i, used in enumerate(modalities):
        pp = dict(zip(config.polarities, pol[i], strict=True))
        mp = dict(zip(config.meld_emotions, meld[i], strict=True))
        ip = dict(zip(config.iemocap_emotions, iem[i], strict=True))
        results.append(Prediction.from_distributions(mp, ip, pp, float(scores[i]), used, rows[i]))
    return results


def trust_rows(read: TrustRead) -> list[TrustRow | None]:
    """Each row of ``read`` as a :class:`TrustRow` (float32, on the CPU)."""
    before, alone = (x.detach().float().cpu().numpy() for x in (read.before, read.alone))
    gate, lead = (x.detach().float().cpu().tolist() for x in (read.gate.squeeze(-1), read.lead))
    return [TrustRow(before[i], alone[i], gate[i], lead[i]) for i in range(len(before))]


def model_digest(folder: Path, config: UniMSEConfig) -> str:
    """12 hex digits of the weights and the configuration together: two checkpoints that share
    weights but differ in a setting (an audio hinge margin, say) answer differently, so they are
    two model versions (until 2026-12-04 the weights alone were hashed). Only the settings that
    differ from :class:`UniMSEConfig`'s defaults count (since the second session of 2026-12-04), so
    a new setting added at its default leaves every version as it was."""
    defaults = UniMSEConfig().to_dict()
    settings = {k: v for k, v in config.to_dict().items() if defaults[k] != v}
    digest = hashlib.sha256((folder / WEIGHTS).read_bytes())
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:12]


def text_logits(
    model: torch.nn.Module, processor: UniMSEProcessor, texts: Sequence[str]
) -> np.ndarray:
    """The heads' logits of each text alone, without voice or face (polarity | MELD | IEMOCAP),
    spoken by the speaker label live use gives."""
    model.eval()
    with torch.inference_mode():
        out = model(processor.encode([ModelInput(text=t, speaker=FIRST_SPEAKER) for t in texts]))
    return torch.cat([out.polarity_logits, out.meld_logits, out.iemocap_logits], -1).numpy()


def empty_logits(model: torch.nn.Module, processor: UniMSEProcessor) -> np.ndarray:
    """The heads' logits of the empty transcript (:func:`text_logits` of "")."""
    return text_logits(model, processor, [""])[0]


class EmotionPredictor:
    """Owns one model on one device. ``predict`` is blocking: call it off the event loop."""

    def __init__(
        self, model: torch.nn.Module, device: torch.device, version: str, max_batch: int = 32
    ) -> None:
        self.model = model
        self.config: UniMSEConfig = model.config  # type: ignore[assignment]
        self.device = device
        self.model_version = version
        self.max_batch = max_batch
        self.processor = UniMSEProcessor(self.config, load_tokenizer(self.config))
        self.half = next(model.parameters()).dtype == torch.float16

    @classmethod
    def load(
        cls, checkpoint: str | Path = "default", *, device: str = "auto", max_batch: int = 32
    ) -> EmotionPredictor:
        target = pick_device(device)
        folder = resolve_checkpoint(checkpoint)
        model = load_checkpoint(folder, device=target)
        if target.type == "cuda":
            model.half()
        config: UniMSEConfig = model.config  # type: ignore[assignment]
        version = f"unimse-{config.backbone_type}-{model_digest(folder, config)}"
        logger.info("model %s on %s", version, target)
        return cls(model, target, version, max_batch=max_batch)

    def reconfigure(self, config: UniMSEConfig) -> None:
        """Read with ``config``'s voice and face settings (hinge, margin, weights, trust; the
        weights stay): the model's modality logits take them and the processor passes what they
        read (a speaker's voice history with ``voice_trust``)."""
        logits = getattr(self.model, "modality_logits", None)
        if logits is not None:
            logits.configure(config)
        self.config = config
        self.processor = UniMSEProcessor(config, self.processor.tokenizer)

    def voice_baselines(self) -> SpeakerBaselines | None:
        """Fresh speaker baselines for one conversation when the checkpoint's voice reads states
        relative to each speaker's mean (``FeatureSpec.baseline``), else None."""
        spec, prior = self.config.acoustic, self.voice_prior
        if spec is None or prior is None:
            return None
        return SpeakerBaselines(prior, spec.baseline)

    def voice_expressiveness(self) -> SpeakerExpressiveness | None:
        """Fresh per-speaker voice histories for one conversation when the checkpoint trusts an
        expressive speaker's voice beside neutral words (``voice_trust``), else None."""
        return SpeakerExpressiveness() if self.config.voice_trust else None

    def voice_leads(self, inputs: Sequence[ModelInput]) -> list[float]:
        """Per input, how far its voice's strongest MELD emotion leads neutral at the weight
        beside words (``ModalityLogits.lead``; 0 without a voice or voice logits): what a
        speaker's voice history counts."""
        heads = getattr(self.model, "modality_logits", None)
        logits = self.voice_logits(inputs)
        if heads is None or logits is None:
            return [0.0] * len(inputs)
        return [float(x) for x in heads.lead(logits)]

    @torch.inference_mode()
    def reread(
        self, predictions: Sequence[Prediction], histories: Sequence[VoiceHistory]
    ) -> list[Prediction]:
        """``predictions`` (each read by the voice trust: :attr:`Prediction.trust`) read again
        with their speakers' voice histories ``histories``, as :meth:`predict` would read them
        with those (no backbone pass: a few vector operations)."""
        heads = getattr(self.model, "modality_logits", None)
        rows = [p.trust for p in predictions]
        if heads is None or any(r is None for r in rows):
            raise ValueError("only predictions the voice trust read can be read again")
        if not predictions:
            return []
        kept = [r for r in rows if r is not None]
        read = TrustRead(
            before=torch.from_numpy(np.stack([r.before for r in kept])),
            alone=torch.from_numpy(np.stack([r.alone for r in kept])),
            gate=torch.tensor([[r.gate] for r in kept]),
            lead=torch.tensor([r.lead for r in kept]),
        )
        history = torch.tensor([[h.total, float(h.count)] for h in histories])
        return logits_to_predictions(
            heads.reread(read, history),
            [p.intensity for p in predictions],
            self.config,
            [p.modalities for p in predictions],
            rows,
        )

    @torch.inference_mode()
    def voice_logits(self, inputs: Sequence[ModelInput]) -> torch.Tensor | None:
        """(N, polarity + MELD + IEMOCAP): the voice's own logits per input at the weight beside
        words (:meth:`UniMSEEncoderModel.voice_logits`; zero without a voice), on the CPU; None
        for a checkpoint without voice logits."""
        read = getattr(self.model, "voice_logits", None)
        if read is None or self.config.acoustic is None or not self.config.modality_logits:
            return None
        parts: list[torch.Tensor] = []
        for start in range(0, len(inputs), self.max_batch):
            chunk = inputs[start : start + self.max_batch]
            acoustic, lengths, language = self.processor.encode_voice(chunk)  # no tokenising
            assert acoustic is not None and lengths is not None
            acoustic = acoustic.to(self.device)
            logits = read(
                acoustic.half() if self.half else acoustic,
                lengths.to(self.device),
                None if language is None else language.to(self.device),
            )
            parts.append(logits.cpu())
        if parts:
            return torch.cat(parts)
        return torch.zeros(0, sum(self.config.head_sizes))

    @property
    def voice_prior(self) -> np.ndarray | None:
        """The speaker-baseline prior the checkpoint stores (None when its voice uses none)."""
        spec = self.config.acoustic
        prior = voice_prior(self.model)
        if spec is None or not spec.baseline or prior is None:
            return None
        return prior.detach().float().cpu().numpy()

    def modalities_of(self, item: ModelInput) -> tuple[str, ...]:
        used = ["text"] if item.has_words else []
        if self.config.acoustic is not None and item.acoustic is not None and len(item.acoustic):
            used.append("audio")
        if self.config.visual is not None and item.visual is not None and len(item.visual):
            used.append("video")
        return tuple(used)

    @torch.inference_mode()
    def predict(
        self,
        inputs: Sequence[ModelInput],
        *,
        batch_size: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[Prediction]:
        """Predictions for ``inputs`` in their order, ``batch_size`` (default ``max_batch``) at a
        time; ``progress`` is told how many each batch held."""
        size = batch_size or self.max_batch
        results: list[Prediction] = []
        for start in range(0, len(inputs), size):
            chunk = inputs[start : start + size]
            batch = self.processor.encode(chunk).to(self.device)
            if self.half:
                for name in ("acoustic", "visual"):
                    value = getattr(batch, name)
                    if value is not None:
                        setattr(batch, name, value.half())
            out = self.model(batch)
            results.extend(
                outputs_to_predictions(out, self.config, [self.modalities_of(x) for x in chunk])
            )
            if progress is not None:
                progress(len(chunk))
        return results
