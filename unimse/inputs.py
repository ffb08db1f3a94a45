"""What a caller hands the model for one utterance, shared by training and live inference."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from unimse.voice_trust import VoiceHistory


@dataclass(frozen=True)
class DialogueTurn:
    """One earlier turn of the conversation, as context for the current utterance."""

    speaker: str
    text: str


@dataclass(frozen=True)
class ModelInput:
    """One utterance to classify.

    ``acoustic`` and ``visual`` are feature sequences of shape ``(steps, dim)`` matching the
    checkpoint's feature specs, or ``None`` when that modality is unavailable (it is then masked).
    ``context`` holds past turns only, oldest first.
    """

    text: str
    speaker: str = ""
    context: tuple[DialogueTurn, ...] = ()
    acoustic: np.ndarray | None = field(default=None, compare=False)
    visual: np.ndarray | None = field(default=None, compare=False)
    language: str = ""  # the transcript's language code ("en", "de"); "": not known
    # the speaker's earlier utterances as the voice trust reads them (config.voice_trust)
    voice_history: VoiceHistory = field(default_factory=VoiceHistory)

    @property
    def has_words(self) -> bool:
        """Whether the utterance has words (text not blank)."""
        return bool(self.text.strip())
