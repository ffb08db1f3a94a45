"""Per-session dialogue context: the last K turns, with speaker labels, in the model's input format.

Live use sees only the past, so every :class:`unimse.inputs.ModelInput` carries the turns spoken
before the current utterance (oldest first), exactly as the model is trained.
"""

from __future__ import annotations

from collections import deque

from unimse.inputs import DialogueTurn, ModelInput


class DialogueContext:
    """The conversation so far for one session, as model inputs."""

    def __init__(self, session: str, turns: int) -> None:
        if turns < 0:
            raise ValueError("context turns must be >= 0")
        self.session = session
        self.turns = turns
        self._history: deque[DialogueTurn] = deque(maxlen=turns)

    @property
    def history(self) -> tuple[DialogueTurn, ...]:
        return tuple(self._history)

    def next_input(self, speaker: str, text: str) -> ModelInput:
        """The model input for a new utterance, which then joins the context of the next ones.

        Utterances without words (a sigh, laughter) are classified but add no turn.
        """
        text = text.strip()
        model_input = ModelInput(text=text, speaker=speaker, context=self.history)
        if text and self.turns > 0:
            self._history.append(DialogueTurn(speaker=speaker, text=text))
        return model_input
