"""The speaker names the text model reads in front of each turn.

The model reads a turn as ``"{speaker}: {text}"`` and learnt its corpora's names (MELD's
characters, IEMOCAP's ``M`` / ``F``). emotrack's own labels (``speaker``, ``speaker 1``, ...) are
far from those and change its reading: on MELD / IEMOCAP dev, text only, WF1 55.6 / 56.8 with the
corpus names, 42.1 / 52.3 with every turn ``speaker``, 38.4 / 47.1 with ``speaker N``, 53.3 / 54.1
with ``A``, ``B``, ... (``benchmarks/speaker_labels.py``; docs/RESULTS.md, "Speaker labels").
So by default each session's speakers are read as ``A``, ``B``, ... in order of first appearance;
``[context] speaker_labels = "heard"`` passes the labels as they are (names given with
``--speakers`` or enrolment).
"""

from __future__ import annotations

SPEAKER_LABELS = ("letters", "heard")
DEFAULT_SPEAKER_LABELS = "letters"
# The name a session's first speaker is read as: also what the acted corpora's and CK+'s single
# speaker is read as in training and evaluation (train.audio_datasets, train.face_data).
FIRST_SPEAKER = "A"


class ModelSpeakerNames:
    """One session's map from heard speaker labels to the names the model reads."""

    def __init__(self, labels: str = DEFAULT_SPEAKER_LABELS) -> None:
        if labels not in SPEAKER_LABELS:
            raise ValueError(f"speaker labels must be one of {', '.join(SPEAKER_LABELS)}")
        self.labels = labels
        self._names: dict[str, str] = {}

    def __call__(self, speaker: str) -> str:
        """The model's name for ``speaker`` (a new speaker gets the next letter)."""
        if self.labels == "heard" or not speaker:
            return speaker
        if speaker not in self._names:
            n = len(self._names)
            letter = chr(ord(FIRST_SPEAKER) + n % 26)
            self._names[speaker] = letter if n < 26 else f"{letter}{n // 26}"
        return self._names[speaker]
