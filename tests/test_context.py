"""The dialogue context window: the last K turns, speaker-labelled, past only."""

from __future__ import annotations

import pytest

from realtime.context import DialogueContext
from unimse.inputs import DialogueTurn


def test_last_k_turns_oldest_first_with_speakers() -> None:
    context = DialogueContext("s", turns=2)
    first = context.next_input("ana", "hello there")
    assert first.context == () and first.text == "hello there" and first.speaker == "ana"
    context.next_input("ben", "hi ana")
    third = context.next_input("ana", "how are you?")
    assert third.context == (DialogueTurn("ana", "hello there"), DialogueTurn("ben", "hi ana"))
    fourth = context.next_input("ben", "fine, thanks")
    assert fourth.context == (DialogueTurn("ben", "hi ana"), DialogueTurn("ana", "how are you?"))


def test_the_current_utterance_is_never_its_own_context() -> None:
    context = DialogueContext("s", turns=5)
    model_input = context.next_input("ana", "only me")
    assert DialogueTurn("ana", "only me") not in model_input.context
    assert context.history == (DialogueTurn("ana", "only me"),)


def test_utterances_without_words_add_no_turn() -> None:
    context = DialogueContext("s", turns=3)
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
