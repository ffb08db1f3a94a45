"""The dialogue context window: the last K turns, speaker-labelled, past only."""

from __future__ import annotations

import pytest

from realtime.config import ConfigError, ContextOptions
from realtime.context import DialogueContext
from unimse.inputs import DialogueTurn
from unimse.speakers import ModelSpeakerNames


def as_heard(turns: int) -> DialogueContext:
    """A context that passes the speaker labels through (the window's mechanics alone)."""
    return DialogueContext("s", turns=turns, names=ModelSpeakerNames("heard"))


def test_last_k_turns_oldest_first_with_speakers() -> None:
    context = as_heard(2)
    first = context.next_input("ana", "hello there")
    assert first.context == () and first.text == "hello there" and first.speaker == "ana"
    context.next_input("ben", "hi ana")
    third = context.next_input("ana", "how are you?")
    assert third.context == (DialogueTurn("ana", "hello there"), DialogueTurn("ben", "hi ana"))
    fourth = context.next_input("ben", "fine, thanks")
    assert fourth.context == (DialogueTurn("ben", "hi ana"), DialogueTurn("ana", "how are you?"))


def test_the_current_utterance_is_never_its_own_context() -> None:
    context = as_heard(5)
    model_input = context.next_input("ana", "only me")
    assert DialogueTurn("ana", "only me") not in model_input.context
    assert context.history == (DialogueTurn("ana", "only me"),)


def test_utterances_without_words_add_no_turn() -> None:
    context = as_heard(3)
    context.next_input("ana", "hello")
    silent = context.next_input("ben", "   ")
    assert silent.text == ""
    assert context.next_input("ana", "anyone?").context == (DialogueTurn("ana", "hello"),)


def test_zero_turns_means_no_context() -> None:
    context = DialogueContext("s", turns=0)
    context.next_input("ana", "hello")
    assert context.next_input("ben", "hi").context == ()


def test_negative_turns_are_refused() -> None:
    with pytest.raises(ValueError):
        DialogueContext("s", turns=-1)


def test_the_model_reads_each_sessions_speakers_as_letters_by_default() -> None:
    context = DialogueContext("s", turns=3)
    first = context.next_input("speaker 2", "hello", utterance_seq=0)
    second = context.next_input("speaker 1", "hi", utterance_seq=1)
    third = context.next_input("speaker 2", "how are you?", utterance_seq=2)
    assert (first.speaker, second.speaker, third.speaker) == ("A", "B", "A")
    assert third.context == (DialogueTurn("A", "hello"), DialogueTurn("B", "hi"))
    context.relabel(1, "speaker 3")  # a diarisation revision: the new speaker's own letter
    assert context.history[1] == DialogueTurn("C", "hi")
    assert DialogueContext("other", turns=1).next_input("speaker 1", "x").speaker == "A"


def test_speaker_letters_never_repeat_and_an_unknown_labelling_is_refused() -> None:
    names = ModelSpeakerNames()
    letters = [names(f"s{i}") for i in range(30)]
    assert len(set(letters)) == 30 and letters[:2] == ["A", "B"] and letters[26] == "A1"
    assert names("") == "" and ModelSpeakerNames("heard")("speaker 1") == "speaker 1"
    with pytest.raises(ValueError, match="speaker labels"):
        ModelSpeakerNames("numbers")
    with pytest.raises(ConfigError, match="speaker_labels"):
        ContextOptions(speaker_labels="numbers")
