"""The UniMSE model: a backbone with PMF fusion in its last layers, and the universal-label heads.

Two backbones share the fusion, the label space and the losses:
- ``encoder`` (default here): an encoder-only checkpoint such as the bundled MiniLM. PMF follows
  the last N transformer layers; light heads score polarity, intensity and both emotion sets.
- ``t5`` (the paper's design): see :mod:`unimse.t5_model`.

:func:`unimse.factory.build_model` picks one from the config.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from unimse.backbones import load_encoder_backbone
from unimse.config import UniMSEConfig
from unimse.fusion import PMF, ModalityFusion
from unimse.labels import emodb_joint_indices
from unimse.losses import (
    info_nce,
    joint_class_cross_entropy,
    supervised_contrastive,
    voice_gate_cross_entropy,
    weighted_cross_entropy,
    weighted_l1,
)
from unimse.processor import ModelBatch

SCORE_LIMIT = 3.0


@dataclass
class UniMSEOutput:
    polarity_logits: torch.Tensor  # (B, 3)
    meld_logits: torch.Tensor  # (B, 7)
    iemocap_logits: torch.Tensor  # (B, 6)
    score: torch.Tensor  # (B,) in [-3, 3]
    loss: torch.Tensor | None = None
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    # With voice_trust and a voice history: what re-reads the utterances with another history
    trust: TrustRead | None = None


@dataclass
class TrustRead:
    """What the voice trust (``voice_trust``) read of a batch: the logits before it (B, polarity
    + MELD + IEMOCAP), the voice alone's (the same shape), how far it may move each row (B, 1:
    how surely the words say nothing, 0 without words or voice) and each row's voice lead (B,:
    non-negative, what the speaker's history counts). :meth:`ModalityLogits.reread` reads the
    rows again with another history."""

    before: torch.Tensor
    alone: torch.Tensor
    gate: torch.Tensor
    lead: torch.Tensor


class FusionState:
    """Per-forward modality vectors read by every fused layer (set by the owning model)."""

    def __init__(self) -> None:
        self.acoustic: torch.Tensor | None = None
        self.visual: torch.Tensor | None = None
        self.text_hidden: torch.Tensor | None = None  # input of the first PMF: text-only features

    def clear(self) -> None:
        self.acoustic = self.visual = self.text_hidden = None


class FusedLayer(nn.Module):
    """Wraps a backbone sublayer (a BERT layer, a T5 FF layer); applies PMF to its output."""

    def __init__(self, layer: nn.Module, pmf: PMF, state: FusionState, first: bool) -> None:
        super().__init__()
        self.layer = layer
        self.pmf = pmf
        self.first = first
        self._state = state

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        out = self.layer(*args, **kwargs)
        hidden = out[0] if isinstance(out, tuple) else out
        state = self._state
        if state.acoustic is None or state.visual is None:
            raise RuntimeError("fusion vectors were not set before the backbone ran")
        if self.first:
            state.text_hidden = hidden
        fused = self.pmf(hidden, state.acoustic, state.visual)
        return (fused, *out[1:]) if isinstance(out, tuple) else fused


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class LabelHeads(nn.Module):
    """Pooled text -> polarity, intensity, MELD and IEMOCAP emotion."""

    def __init__(self, in_dim: int, hidden: int, config: UniMSEConfig) -> None:
        super().__init__()
        self.shared = nn.Sequential(
            nn.Dropout(config.dropout), nn.Linear(in_dim, hidden), nn.GELU()
        )
        self.drop = nn.Dropout(config.dropout)
        self.polarity = nn.Linear(hidden, len(config.polarities))
        self.score = nn.Linear(hidden, 1)
        self.meld = nn.Linear(hidden, len(config.meld_emotions))
        self.iemocap = nn.Linear(hidden, len(config.iemocap_emotions))

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, UniMSEOutput]:
        h = self.shared(pooled)
        d = self.drop(h)
        score = SCORE_LIMIT * torch.tanh(self.score(d).squeeze(-1) / SCORE_LIMIT)
        return h, UniMSEOutput(self.polarity(d), self.meld(d), self.iemocap(d), score)


def task_losses(
    out: UniMSEOutput, batch: ModelBatch, config: UniMSEConfig
) -> dict[str, torch.Tensor]:
    assert batch.weights is not None and batch.polarity is not None
    assert batch.score is not None and batch.meld is not None and batch.iemocap is not None
    w = batch.weights
    lw = config.losses
    losses: dict[str, torch.Tensor] = {}
    if lw.emodb_joint > 0 and batch.emodb_class is not None:
        # EMO-DB's annotation is its class; the polarity and emotion targets are that class's
        # image, so its rows learn the class through both heads at once instead.
        losses["emodb_joint"] = lw.emodb_joint * joint_class_cross_entropy(
            out.polarity_logits, out.meld_logits, batch.emodb_class, emodb_joint_indices()
        )
        emodb = (batch.emodb_class >= 0).to(w.device)
        w = w.clone()
        w[emodb, 0] = 0.0  # polarity
        w[emodb, 2] = 0.0  # MELD emotion
    losses.update(
        {
            "polarity": lw.emotion
            * weighted_cross_entropy(out.polarity_logits, batch.polarity, w[:, 0]),
            "score": lw.score * weighted_l1(out.score, batch.score, w[:, 1]),
            "meld": lw.emotion * weighted_cross_entropy(out.meld_logits, batch.meld, w[:, 2]),
            "iemocap": lw.emotion
            * weighted_cross_entropy(out.iemocap_logits, batch.iemocap, w[:, 3]),
        }
    )
    return losses


def contrastive_losses(
    config: UniMSEConfig,
    text: torch.Tensor,
    acoustic: torch.Tensor,
    visual: torch.Tensor,
    batch: ModelBatch,
    utterance_vector: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Inter-modality InfoNCE (text vs acoustic, text vs visual) and inter-sample SupCon."""
    lw = config.losses
    losses: dict[str, torch.Tensor] = {}
    if lw.infonce_acoustic > 0 and batch.acoustic_lengths is not None:
        present = batch.acoustic_lengths.to(text.device) > 0
        losses["infonce_acoustic"] = lw.infonce_acoustic * info_nce(
            text, acoustic, present, lw.temperature
        )
    if lw.infonce_visual > 0 and batch.visual_lengths is not None:
        present = batch.visual_lengths.to(text.device) > 0
        losses["infonce_visual"] = lw.infonce_visual * info_nce(
            text, visual, present, lw.temperature
        )
    if lw.supcon > 0 and batch.group is not None:
        losses["supcon"] = lw.supcon * supervised_contrastive(
            utterance_vector, batch.group, lw.temperature
        )
    return losses


class ModalityLogits(nn.Module):
    """Adds bias-free linear maps of the acoustic and visual vectors to the classification heads'
    logits; with ``config.voice_intensity`` also one of the acoustic vector to the intensity
    (clamped to its range; its input detached, so intensity targets train that map alone); with
    ``config.voice_hinge`` the voice's logits count only where they exceed the head's neutral
    class (:meth:`hinged`).

    Zero for a missing modality (its vector is zero), so a text-only input gets exactly the heads'
    output; zero at initialisation too, except the hinged voice map (small random weights: a
    hinge at exactly zero passes no gradient). Lets a strong voice or face decide the emotion when
    the words say nothing, beside (not instead of) PMF's fusion inside the backbone.
    """

    emotional: torch.Tensor  # buffer: 0 at each head's neutral class, 1 elsewhere

    def __init__(self, config: UniMSEConfig) -> None:
        super().__init__()
        self.sizes = config.head_sizes
        width = sum(self.sizes)
        self.acoustic = nn.Linear(config.modality_dim, width, bias=False)
        self.visual = nn.Linear(config.modality_dim, width, bias=False)
        self.acoustic_intensity = (
            nn.Linear(config.modality_dim, 1, bias=False) if config.voice_intensity else None
        )
        # one voice map per language of config.voice_languages (batch.language k: map k - 1)
        self.languages = config.voice_languages
        language_maps = [nn.Linear(config.modality_dim, width, bias=False) for _ in self.languages]
        for language_map in language_maps:
            nn.init.zeros_(language_map.weight)
        self.acoustic_by_language = nn.ModuleList(language_maps)
        for layer in (self.acoustic, self.visual, self.acoustic_intensity):
            if layer is not None:
                nn.init.zeros_(layer.weight)
        self.configure(config)
        heads = (config.polarities, config.meld_emotions, config.iemocap_emotions)
        self.neutral = tuple(h.index("neutral") for h in heads)
        emotional = torch.ones(width)
        for start, n in zip((0, *itertools.accumulate(self.sizes[:-1])), self.neutral, strict=True):
            emotional[start + n] = 0.0
        self.register_buffer("emotional", emotional, persistent=False)
        if self.hinge == "relu":
            nn.init.normal_(self.acoustic.weight, std=1e-3)

    def configure(self, config: UniMSEConfig) -> None:
        """Take ``config``'s voice and face settings (hinge, share, margin, cap, weights, gate);
        the weights stay. ``emotrack calibrate`` chooses scales with the settings it will ship."""
        self.hinge = config.voice_hinge
        self.neutral_share = config.voice_neutral_share
        self.share_by = config.voice_share_by
        self.margin = config.voice_margin
        self.cap = config.voice_cap
        self.wordless = config.voice_wordless
        self.face_gate = config.face_gate
        self.neutral_words = config.voice_neutral_words
        self.face_power = config.face_gate_power
        self.trust = config.voice_trust
        self.trust_width = config.voice_trust_width
        self.trust_prior = config.voice_trust_prior
        self.trust_start = config.voice_trust_start
        self.trust_words = config.voice_trust_words
        self.trust_blank = torch.tensor(config.voice_trust_blank, dtype=torch.float32)

    def hinged(self, voice: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Per head, relu or softplus of (logit - neutral logit - ``voice_margin``), or with
        "step" (logit - neutral logit) where that exceeds the margin, at most ``voice_cap`` (0: no
        cap), times ``present`` (1 where the voice is there): 0 for neutral, 0 (relu, step) or
        near 0 (softplus) for every class the voice ranks below neutral + the margin, 0 for a
        missing voice."""
        parts = torch.split(voice, list(self.sizes), dim=-1)
        lead = torch.cat(
            [p - p[..., n : n + 1] for p, n in zip(parts, self.neutral, strict=True)], dim=-1
        )
        above = lead - self.margin
        if self.hinge == "step":
            pushed = lead * (above > 0).to(lead.dtype)
        else:
            pushed = above.clamp(min=0.0) if self.hinge == "relu" else F.softplus(above)
        if self.cap:
            pushed = pushed.clamp(max=self.cap)
        return pushed * self.emotional * present

    def words_neutral(self, out: UniMSEOutput, power: float) -> torch.Tensor:
        """(B, 1): the heads' (detached) MELD neutral probability to ``power``: how surely the
        words say nothing."""
        meld = torch.softmax(out.meld_logits.detach(), dim=-1)
        return meld[..., self.neutral[1] : self.neutral[1] + 1] ** power

    def face(self, out: UniMSEOutput, visual: torch.Tensor) -> torch.Tensor:
        """The face's logits; with ``face_gate = "neutral_words"`` times :meth:`words_neutral` to
        the power ``face_gate_power``, so the face speaks where the words say nothing."""
        face = self.visual(visual.to(out.meld_logits.dtype))
        if self.face_gate == "neutral_words":
            face = face * self.words_neutral(out, self.face_power)
        return face

    def voice(self, acoustic: torch.Tensor, language: torch.Tensor | None) -> torch.Tensor:
        """The voice's logits at weight 1: the shared map, or on rows whose ``language`` (B,)
        is k > 0, the map of ``config.voice_languages[k - 1]``."""
        voice = self.acoustic(acoustic)
        if language is not None:
            for k, layer in enumerate(self.acoustic_by_language, 1):
                voice = torch.where((language == k).unsqueeze(-1), layer(acoustic), voice)
        return voice

    def lead(self, voice: torch.Tensor) -> torch.Tensor:
        """(B,): how far the voice's strongest MELD emotion leads its neutral (``voice``: the
        voice's logits at weight 1, :meth:`voice`)."""
        meld = torch.split(voice, list(self.sizes), dim=-1)[1]
        n = self.neutral[1]
        emotional = torch.cat([meld[..., :n], meld[..., n + 1 :]], dim=-1)
        return emotional.amax(-1) - meld[..., n]

    def speaker_trust(self, history: torch.Tensor, lead: torch.Tensor) -> torch.Tensor:
        """(B, 1): how expressive the speaker has been (``history``: (B, 2) earlier leads' sum and
        count; ``lead``: (B,) this utterance's non-negative lead, counted in, from the prior),
        past the threshold ``voice_trust``, in [0, 1]."""
        prior = self.trust_start * self.trust_prior
        heard = (prior + history[:, 0] + lead) / (self.trust_prior + history[:, 1] + 1.0)
        return ((heard - self.trust) / self.trust_width).clamp(0.0, 1.0).unsqueeze(-1)

    def reread(self, read: TrustRead, history: torch.Tensor) -> torch.Tensor:
        """(B, polarity + MELD + IEMOCAP): the logits of utterances read beside ``read`` with the
        speaker's voice history ``history`` (B, 2): the logits before the trust, moved toward
        the voice alone by :meth:`speaker_trust` times the utterance's gate. :meth:`forward`
        computes its output by this; a speaker's later voice re-reads earlier utterances by it
        (:meth:`unimse.inference.EmotionPredictor.reread`)."""
        t = self.speaker_trust(history.to(read.before.dtype), read.lead) * read.gate
        return read.before + t * (read.alone - read.before)

    def forward(
        self,
        out: UniMSEOutput,
        acoustic: torch.Tensor,
        visual: torch.Tensor,
        words: torch.Tensor | None = None,
        language: torch.Tensor | None = None,
        history: torch.Tensor | None = None,
    ) -> UniMSEOutput:
        """``words``: (B,) 1 where the utterance has words; the hinge applies to those rows only
        (without words the voice is all there is, and may say neutral). None: every row. With
        ``voice_neutral_share`` that share of the unhinged voice is added back on hinged rows
        (``voice_share_by = "unsure"``: times 1 - the words' top MELD probability); with
        ``voice_margin`` the hinge starts that far above neutral, with ``voice_cap`` no class
        gains more than the cap; ``voice_wordless`` scales the voice on rows without words, and
        with ``voice_neutral_words`` up to it on rows whose words read as neutral; ``language``
        picks the voice map per row (:meth:`voice`); with ``voice_trust`` and ``history`` (B, 2)
        rows with words move toward the voice alone by :meth:`trusted`."""
        voice = raw = self.voice(acoustic.to(out.meld_logits.dtype), language)
        present = (acoustic != 0).any(dim=-1, keepdim=True).to(voice.dtype)
        if words is not None and self.wordless != 1.0:
            alone = 1.0 - words.to(voice.dtype).unsqueeze(-1)
            voice = voice * (1.0 + (self.wordless - 1.0) * alone)
        if words is not None and self.neutral_words:  # words that say nothing hear more voice
            blank = self.words_neutral(out, self.neutral_words)
            worded = words.to(voice.dtype).unsqueeze(-1)
            voice = voice * (1.0 + (self.wordless - 1.0) * blank * worded)
        if self.hinge != "off":
            hinged = self.hinged(voice, present)
            if self.neutral_share:
                share = torch.full_like(voice[..., :1], self.neutral_share)
                if self.share_by == "unsure":  # the text heads' own output: how sure the words are
                    sure = torch.softmax(out.meld_logits.detach(), dim=-1).amax(-1, keepdim=True)
                    share = share * (1.0 - sure)
                hinged = hinged + share * (voice - hinged)
            if words is None:
                voice = hinged
            else:
                worded = words.to(voice.dtype).unsqueeze(-1)
                voice = worded * hinged + (1.0 - worded) * voice
        face = self.face(out, visual)
        heads = torch.cat([out.polarity_logits, out.meld_logits, out.iemocap_logits], dim=-1)
        logits = heads + (voice + face)  # the sum as before voice_trust, bit for bit
        trust: TrustRead | None = None
        if self.trust and history is not None and words is not None:
            worded = words.to(raw.dtype).unsqueeze(-1)
            blank = (self.words_neutral(out, 1.0) / self.trust_words).clamp(max=1.0)
            trust = TrustRead(
                before=logits,
                alone=self.trust_blank.to(raw) + self.wordless * raw + face,
                gate=blank * present * worded,  # how surely the words say nothing, with a voice
                lead=self.lead(raw).clamp(min=0.0) * present.squeeze(-1),
            )
            logits = self.reread(trust, history)
        pol, meld, iem = torch.split(logits, list(self.sizes), dim=-1)
        score = out.score
        if self.acoustic_intensity is not None:  # a read of the vector, not a reason to reshape it
            shift = self.acoustic_intensity(acoustic.detach().to(score.dtype)).squeeze(-1)
            score = (score + shift).clamp(-SCORE_LIMIT, SCORE_LIMIT)
        return UniMSEOutput(pol, meld, iem, score, trust=trust)


class UniMSEEncoderModel(nn.Module):
    """Encoder-only UniMSE: PMF after the last ``fusion_layers`` layers, classification heads."""

    def __init__(self, config: UniMSEConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = load_encoder_backbone(config)
        hidden = int(self.backbone.config.hidden_size)
        self.state = FusionState()
        self.fusion = ModalityFusion(config)
        layers = self._layers()
        n = min(config.fusion_layers, len(layers))
        for offset, index in enumerate(range(len(layers) - n, len(layers))):
            layers[index] = FusedLayer(
                layers[index], PMF(hidden, config), self.state, first=offset == 0
            )
        self.heads = LabelHeads(2 * hidden, hidden, config)
        self.text_proj = nn.Linear(hidden, config.modality_dim)
        self.modality_logits = ModalityLogits(config) if config.modality_logits else None

    def _layers(self) -> nn.ModuleList:
        encoder = getattr(self.backbone, "encoder", None)
        layers = getattr(encoder, "layer", None)
        if not isinstance(layers, nn.ModuleList):
            raise ValueError(
                f"backbone {self.config.backbone!r} is not a BERT-style encoder "
                "(no encoder.layer list)"
            )
        return layers

    def freeze_lower(self, trainable_layers: int) -> None:
        """Freeze embeddings and all but the top ``trainable_layers`` backbone layers."""
        layers = self._layers()
        keep = set(range(len(layers) - trainable_layers, len(layers)))
        for p in self.backbone.embeddings.parameters():
            p.requires_grad_(False)
        for i, layer in enumerate(layers):
            inner = layer.layer if isinstance(layer, FusedLayer) else layer
            for p in inner.parameters():
                p.requires_grad_(i in keep)

    def voice_logits(
        self,
        acoustic: torch.Tensor,
        lengths: torch.Tensor,
        language: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """(B, polarity + MELD + IEMOCAP): the voice's own logits at the weight beside words, as
        :meth:`forward` computes them before the hinge (:meth:`ModalityLogits.voice` through the
        map of each row's ``language``), in float32, zero where there is no voice; None for a
        checkpoint without voice logits. No backbone pass: what a speaker's voice history counts
        (:meth:`ModalityLogits.lead`) costs the small voice path only."""
        if self.modality_logits is None or self.fusion.acoustic is None:
            return None
        a, _, _ = self.fusion.encode(len(acoustic), acoustic.device, acoustic, lengths, None, None)
        present = (a != 0).any(dim=-1, keepdim=True).to(torch.float32)
        # in the model's own precision (half on CUDA), then float32 as the docstring says
        return self.modality_logits.voice(a, language).float() * present

    def forward(self, batch: ModelBatch) -> UniMSEOutput:
        bsz = batch.size
        device = batch.input_ids.device
        a, v, gate = self.fusion.encode(
            bsz, device, batch.acoustic, batch.acoustic_lengths, batch.visual, batch.visual_lengths
        )
        self.state.acoustic, self.state.visual = a, v
        try:
            hidden = self.backbone(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask
            ).last_hidden_state
            text_hidden = self.state.text_hidden if self.state.text_hidden is not None else hidden
        finally:
            self.state.clear()
        pooled = torch.cat([hidden[:, 0], masked_mean(hidden, batch.utterance_mask)], dim=-1)
        shared, out = self.heads(pooled)
        if self.modality_logits is not None:
            out = self.modality_logits(out, a, v, batch.words, batch.language, batch.voice_history)
        if batch.weights is None:
            return out
        losses = task_losses(out, batch, self.config)
        text_vec = self.text_proj(masked_mean(text_hidden, batch.utterance_mask))
        losses.update(contrastive_losses(self.config, text_vec, a, v, batch, shared))
        if self.config.losses.voice_gate > 0 and gate is not None:
            losses["voice_gate"] = self.config.losses.voice_gate * voice_gate_cross_entropy(
                gate, batch.voice_emotional, batch.acoustic_lengths
            )
        out.losses = losses
        out.loss = torch.stack(list(losses.values())).sum()
        return out
