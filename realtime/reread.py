"""Earlier results read again as a speaker's voice becomes known (the voice trust).

A checkpoint with ``voice_trust`` hears a speaker's voice beside words that say nothing as far as
the speaker has shown an expressive voice so far: a speaker's first lines are read as from a
speaker presumed not expressive, and an actor's mildly acted first line keeps the words' neutral.
:class:`EarlierReads` keeps, per speaker, each final result the trust could move (a voice, words
that read as neutral); after each new utterance of the speaker it reads them again, each beside
all of the speaker's other utterances heard so far, and returns those whose emotion or polarity
changed as revisions (same ``utterance_seq``, ``revision`` + 1, ``reread``), which every sink
takes in place of the result they replace. By the end of a conversation each utterance was read
beside all of its speaker's others (:func:`unimse.voice_trust.settled_histories`: what ``emotrack
eval`` reports as the settled read). A few vector operations per utterance, no backbone pass
(:meth:`unimse.inference.EmotionPredictor.reread`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol

from realtime.messages import EmotionResult, SpeakerRevision, UtteranceConfirmed
from unimse.prediction import Prediction
from unimse.voice_trust import VoiceHistory

logger = logging.getLogger(__name__)

# Results kept per speaker: beside a history this long one more utterance moves the trust by
# well under 1 %, so older results stay as they were last read.
KEPT_PER_SPEAKER = 256


class Rereader(Protocol):
    """What reads predictions again with other voice histories (the predictor)."""

    def reread(
        self, predictions: list[Prediction], histories: list[VoiceHistory]
    ) -> list[Prediction]: ...


def speaker_key(session: str, speaker: str) -> str:
    """How the voice histories name a session's speaker."""
    return f"{session}/{speaker}"


@dataclass
class EarlierReads:
    """One session's results the voice trust could still move, by speaker (not locked: the
    inference stage owns it and uses it from one task at a time)."""

    _kept: dict[str, dict[int, EmotionResult]] = field(default_factory=dict, repr=False)
    # Speculative results (``vad.speculative``) wait for their confirmation.
    _pending: dict[int, EmotionResult] = field(default_factory=dict, repr=False)
    rereads: int = 0  # results read again
    revised: int = 0  # of those, the ones whose label changed (published as revisions)

    def offer(self, result: EmotionResult) -> str | None:
        """A final result whose voice counted in its speaker's history: kept (in place of an
        earlier version of its utterance) when the trust could move it, and its speaker's key
        returned either way, since the speaker's other results may read otherwise now (a
        wordless laugh counts as much as a line). None for a result without a voice, or one
        still speculative."""
        self._drop(result.utterance_seq)
        if result.prediction.trust is None or "audio" not in result.modalities:
            return None
        if result.speculative:
            self._pending[result.utterance_seq] = result
            return None
        return self._keep(result)

    def confirm(self, confirmation: UtteranceConfirmed) -> str | None:
        """A speculative result stands: kept from now on; returns its speaker's key."""
        result = self._pending.get(confirmation.utterance_seq)
        if result is None or result.revision != confirmation.revision:
            return None
        del self._pending[confirmation.utterance_seq]
        return self._keep(replace(result, speculative=False))

    def move(self, revision: SpeakerRevision, moved: bool = True) -> tuple[str, str]:
        """Diarisation re-labelled an utterance: its result moves to the new speaker, when its
        voice moved to the new speaker's history too (``moved``; else, too old for the history
        to move, it is read no more); returns both speakers' keys (each one's history
        changed)."""
        old = speaker_key(revision.session, revision.old)
        new = speaker_key(revision.session, revision.new)
        seq = revision.utterance_seq
        result = self._kept.get(old, {}).pop(seq, None)
        if result is not None and moved:
            self._kept.setdefault(new, {})[seq] = replace(result, speaker=revision.new)
        if seq in self._pending:
            self._pending[seq] = replace(self._pending[seq], speaker=revision.new)
        return old, new

    def forget(self) -> None:
        self._kept.clear()
        self._pending.clear()

    def reread(
        self, key: str, history: VoiceHistory, predictor: Rereader, seqs: Iterator[int]
    ) -> list[EmotionResult]:
        """Read ``key``'s kept results again, each with ``history`` (the speaker's utterances so
        far) less itself; the ones whose emotion or polarity changed, as revisions numbered by
        ``seqs`` (blocking: a few vector operations)."""
        kept = self._kept.get(key)
        if not kept:
            return []
        earlier = list(kept.values())
        histories = [own_history(history, r) for r in earlier]
        again = predictor.reread([r.prediction for r in earlier], histories)
        self.rereads += len(earlier)
        now = datetime.now(UTC)
        revisions = []
        for result, prediction in zip(earlier, again, strict=True):
            if (prediction.emotion, prediction.polarity) == (result.emotion, result.polarity):
                continue
            revised = replace(
                result,
                prediction=prediction,
                seq=next(seqs),
                revision=result.revision + 1,
                reread=True,
                timestamp=now,
            )
            logger.debug(
                "utterance %d re-read: %s -> %s",
                result.utterance_seq,
                result.emotion,
                prediction.emotion,
            )
            kept[result.utterance_seq] = revised
            revisions.append(revised)
        self.revised += len(revisions)
        return revisions

    def _keep(self, result: EmotionResult) -> str:
        key = speaker_key(result.session, result.speaker)
        trust = result.prediction.trust
        if trust is not None and trust.gate > 0.0:  # else (no words) the trust cannot move it
            kept = self._kept.setdefault(key, {})
            kept[result.utterance_seq] = result
            if len(kept) > KEPT_PER_SPEAKER:
                kept.pop(next(iter(kept)))
        return key

    def _drop(self, utterance_seq: int) -> None:
        self._pending.pop(utterance_seq, None)
        for kept in self._kept.values():
            kept.pop(utterance_seq, None)


def own_history(history: VoiceHistory, result: EmotionResult) -> VoiceHistory:
    """The speaker's ``history`` less ``result``'s own utterance (the history it is read with);
    ``history`` itself when it holds none (diarisation moved the utterance's voice elsewhere)."""
    trust = result.prediction.trust
    if trust is None or history.count < 1:
        return history
    return history.without(trust.lead)
