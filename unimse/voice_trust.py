"""How far a speaker's voice has shown emotion so far: the voice's trust beside neutral words.

A neutral voice of an unseen speaker often leans a little to some emotion, so beside words the
voice counts only past a margin (``UniMSEConfig.voice_margin``). An actor whose voice has kept
carrying emotion loses, under that margin, the mildly acted lines that the voice alone reads
right. :class:`SpeakerExpressiveness` keeps, per speaker, the running mean of how far the voice's
strongest emotion led neutral (``ModalityLogits.lead``, 0 where it did not), from a prior of
``voice_trust_start`` worth ``voice_trust_prior`` utterances; the model reads it with the current
utterance counted in (``ModalityLogits.speaker_trust``). Online and causal, like
:mod:`unimse.voice_baseline`; a speaker's earlier utterances can be read again as later ones
come (:class:`TrustRow`, :func:`settled_histories`), so that by the end of a conversation each
utterance was heard beside all of its speaker's others.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from unimse.voice_baseline import HeardUtterances, conversation_order


@dataclass(frozen=True)
class VoiceHistory:
    """A speaker's earlier utterances as the trust reads them: their summed non-negative leads
    and how many there were."""

    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if self.total < 0 or self.count < 0:
            raise ValueError("a voice history counts non-negative leads")

    def then(self, lead: float) -> VoiceHistory:
        """This history with one more utterance whose lead was ``lead``."""
        return VoiceHistory(self.total + max(lead, 0.0), self.count + 1)

    def without(self, lead: float) -> VoiceHistory:
        """This history less one of its utterances, whose lead was ``lead``: what the speaker's
        other utterances say of that one (how a settled read hears it)."""
        if self.count < 1:
            raise ValueError("an empty voice history has no utterance to leave out")
        return VoiceHistory(max(self.total - max(lead, 0.0), 0.0), self.count - 1)


@dataclass(frozen=True)
class TrustRow:
    """One utterance as the voice trust read it (a row of :class:`unimse.modeling.TrustRead`):
    the logits before the trust and the voice alone's (polarity + MELD + IEMOCAP), how far the
    trust may move them (``gate``) and the utterance's voice lead. With another
    :class:`VoiceHistory` the utterance reads again without the model's backbone
    (:meth:`unimse.inference.EmotionPredictor.reread`)."""

    before: np.ndarray
    alone: np.ndarray
    gate: float
    lead: float


@dataclass
class SpeakerExpressiveness:
    """Each speaker's :class:`VoiceHistory` (one per conversation, or keyed by session;
    thread-safe)."""

    _histories: dict[str, VoiceHistory] = field(default_factory=dict, repr=False)
    _heard: HeardUtterances[float] = field(default_factory=HeardUtterances, repr=False)  # leads
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def history(self, speaker: str) -> VoiceHistory:
        """The speaker's utterances so far (an empty history for a new speaker)."""
        with self._lock:
            return self._histories.get(speaker, VoiceHistory())

    def add(self, speaker: str, lead: float, utterance: int | None = None) -> VoiceHistory:
        """Count an utterance whose voice led neutral by ``lead`` in, remembered as
        ``utterance`` (if given) so that :meth:`move` can re-label it; returns the history before
        it (what the model reads beside that utterance). A later version of an utterance already
        counted (``--speculative``: the speaker went on) takes the earlier version's place."""
        with self._lock:
            before = self._histories.get(speaker, VoiceHistory())
            earlier = None if utterance is None else self._heard.take(speaker, utterance)
            if earlier is not None:
                before = before.without(earlier)
            self._histories[speaker] = before.then(lead)
            if utterance is not None:
                self._heard.remember(speaker, utterance, lead)
            return before

    def move(self, utterance: int, old: str, new: str) -> bool:
        """Count ``utterance`` as ``new``'s instead of ``old``'s (diarisation re-labelled it);
        nothing when ``old`` no longer remembers it. Whether it moved."""
        with self._lock:
            lead = self._heard.take(old, utterance)
            if lead is None:
                return False
            was = self._histories[old]
            if was.count > 1:
                self._histories[old] = VoiceHistory(
                    max(was.total - max(lead, 0.0), 0.0), was.count - 1
                )
            else:
                self._histories.pop(old)
                self._heard.forget(old)
            self._histories[new] = self._histories.get(new, VoiceHistory()).then(lead)
            self._heard.remember(new, utterance, lead)
            return True

    @property
    def speakers(self) -> list[str]:
        return list(self._histories)

    def forget(self, speaker: str) -> None:
        with self._lock:
            self._histories.pop(speaker, None)
            self._heard.forget(speaker)


def corpus_histories(
    leads: Sequence[float], speakers: Sequence[str], *, seed: int = 0
) -> list[VoiceHistory]:
    """Each utterance's speaker history as live use would have it, the utterances taken in the
    order :func:`unimse.voice_baseline.normalise_corpus` takes them (the same seed: the same
    conversation)."""
    if len(leads) != len(speakers):
        raise ValueError("one speaker per lead")
    tracker = SpeakerExpressiveness()
    out = [VoiceHistory()] * len(leads)
    for index in conversation_order(len(leads), seed):
        out[index] = tracker.add(speakers[index], leads[index])
    return out


def settled_histories(leads: Sequence[float], speakers: Sequence[str]) -> list[VoiceHistory]:
    """Each utterance's speaker history once the whole conversation is heard: all the speaker's
    other utterances (in any order). What live use ends with when every earlier utterance of a
    speaker is read again as the speaker's later ones come (``InferenceOptions.reread``)."""
    if len(leads) != len(speakers):
        raise ValueError("one speaker per lead")
    tracker = SpeakerExpressiveness()
    for lead, speaker in zip(leads, speakers, strict=True):
        tracker.add(speaker, lead)
    return [tracker.history(s).without(x) for x, s in zip(leads, speakers, strict=True)]
