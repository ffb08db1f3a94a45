"""Which of unimse's errors mean bad input or setup, so that a command prints them as one line."""

from __future__ import annotations


def user_errors() -> tuple[type[BaseException], ...]:
    """A missing or broken model, checkpoint or synthesiser, or an invalid configuration."""
    from unimse.backbones import BackboneNotFoundError
    from unimse.checkpoint import CheckpointError
    from unimse.inference import DeviceError
    from unimse.synth import SynthesisError
    from unimse.typed_config import TypedConfigError
    from unimse.whisper import WhisperModelError

    return (
        BackboneNotFoundError,
        CheckpointError,
        DeviceError,
        SynthesisError,
        TypedConfigError,
        WhisperModelError,
    )
