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
) -> Source:
    """The capture source for ``spec`` as one mono channel of a call (blocking: it probes)."""
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
        block_ms=block_ms,
        duration=duration,
        first_channel=first_channel,
        on_session_clock=True,
        seq=seq,
    )
