"""An audio input by name: a PortAudio device (``emotrack devices``) or a sound-server source.

``--audio-device`` and ``--remote-device`` take an index or (part of) a name. PortAudio's inputs
are tried first (microphones, and the loopback devices of macOS and Windows); then, on Linux, the
PulseAudio / PipeWire sources, where the monitors of the output devices are.
"""

from __future__ import annotations

import itertools

from realtime.sources.base import NoInputDevice, Source, SourceError
from realtime.sources.microphone import MicrophoneSource, find_input_device
from realtime.sources.pulse import PulseSource, find_pulse_source


def open_input(
    spec: str | None,
    *,
    first_channel: int,
    seq: itertools.count[int],
    block_ms: int,
    duration: float | None,
    channels_as_speakers: bool = False,
    on_session_clock: bool = True,
) -> Source:
    """The capture source for ``spec`` (blocking: it probes). Raises :class:`NoInputDevice` when
    ``spec`` is None and the machine has no input at all, else a one-line :class:`SourceError`.
    A sound-server source is one mono channel; a PortAudio input is two with
    ``channels_as_speakers``."""
    try:
        find_input_device(spec)
    except (SourceError, OSError) as portaudio_error:  # no such input, none at all, no PortAudio
        pulse = find_pulse_source(spec) if spec is not None else None
        if pulse is not None:
            return PulseSource(
                pulse, first_channel=first_channel, block_ms=block_ms, duration=duration, seq=seq
            )
        if spec is not None and isinstance(portaudio_error, NoInputDevice):
            raise SourceError(f"no audio input or sound-server source matches {spec!r}") from None
        if isinstance(portaudio_error, OSError):
            raise SourceError(f"cannot use audio input: {portaudio_error}") from None
        raise
    return MicrophoneSource(
        spec,
        channels_as_speakers=channels_as_speakers,
        block_ms=block_ms,
        duration=duration,
        first_channel=first_channel,
        on_session_clock=on_session_clock,
        seq=seq,
    )
