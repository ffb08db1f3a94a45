"""Per-session dialogue context: the last K turns, with speaker labels, in the model's input format.

Live use sees only the past, so every :class:`unimse.inputs.ModelInput` carries the turns spoken
before the current utterance (oldest first), exactly as the model is trained. With diarisation, a
:class:`~realtime.messages.SpeakerRevision` re-labels a turn still in the context, so the next
utterances see the corrected speakers. Speakers are named as the model reads them
(:class:`~unimse.speakers.ModelSpeakerNames`).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import replace
from typing import Any

from realtime.messages import PendingUtterance, SpeakerRevision, Transcript
from realtime.stage import Inbox, Stage
from unimse.inputs import DialogueTurn, ModelInput
from unimse.speakers import ModelSpeakerNames

logger = logging.getLogger(__name__)


class DialogueContext:
    """The conversation so far for one session, as model inputs."""

    def __init__(self, session: str, turns: int, names: ModelSpeakerNames | None = None) -> None:
        if turns < 0:
            raise ValueError("context turns must be >= 0")
        self.session = session
        self.turns = turns
        self.names = names if names is not None else ModelSpeakerNames()
        # (utterance seq or None, turn), oldest first.
        self._history: deque[tuple[int | None, DialogueTurn]] = deque(maxlen=turns)

    @property
    def history(self) -> tuple[DialogueTurn, ...]:
        return tuple(turn for _, turn in self._history)

    def next_input(self, speaker: str, text: str, utterance_seq: int | None = None) -> ModelInput:
        """The model input for a new utterance, which then joins the context of the next ones.

        Utterances without words (a sigh, laughter) are classified but add no turn. A revision
        (an utterance whose ``utterance_seq`` already has a turn: a speculative close the speaker
        went on after) sees the turns before that one and replaces it.
        """
        text = text.strip()
        speaker = self.names(speaker)
        seqs = [seq for seq, _ in self._history]
        if utterance_seq is not None and utterance_seq in seqs:
            kept = list(self._history)
            at = seqs.index(utterance_seq)
            model_input = ModelInput(
                text=text, speaker=speaker, context=tuple(turn for _, turn in kept[:at])
            )
            turn = DialogueTurn(speaker=speaker, text=text)
            kept[at : at + 1] = [(utterance_seq, turn)] if text else []
            self._history = deque(kept, maxlen=self._history.maxlen)
            return model_input
        model_input = ModelInput(text=text, speaker=speaker, context=self.history)
        if text and self.turns > 0:
            self._history.append((utterance_seq, DialogueTurn(speaker=speaker, text=text)))
        return model_input

    def relabel(self, utterance_seq: int, speaker: str) -> None:
        """The turn of utterance ``utterance_seq``, if still in the context, is ``speaker``'s."""
        speaker = self.names(speaker)
        self._history = deque(
            (
                (seq, DialogueTurn(speaker, turn.text) if seq == utterance_seq else turn)
                for seq, turn in self._history
            ),
            maxlen=self._history.maxlen,
        )


class ContextStage(Stage):
    """Pipeline stage: transcripts -> model inputs with the dialogue so far.

    A model that reads words only cannot classify an utterance without any: such utterances are
    counted (``no_words``) and go no further.
    """

    inbox_spec = Inbox("transcripts", 32)

    def __init__(self, context: DialogueContext, *, needs_words: bool) -> None:
        super().__init__()
        self.context = context
        self.needs_words = needs_words
        self.no_words = 0

    async def process(self, item: Any) -> None:
        if isinstance(item, SpeakerRevision):
            self.context.relabel(item.utterance_seq, item.new)
        if not isinstance(item, Transcript):
            await self.push(item)
        elif not item.text and self.needs_words:
            self.no_words += 1
            logger.info("utterance %d has no words; skipped (text-only model)", item.seq)
        else:
            utterance = item.utterance
            model_input = self.context.next_input(utterance.speaker, item.text, utterance.seq)
            model_input = replace(model_input, language=item.language)  # picks the voice map
            await self.push(PendingUtterance(item, model_input))
