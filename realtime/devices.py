"""``emotrack devices``: the audio inputs (sounddevice) and cameras (OpenCV) on this machine."""

from __future__ import annotations

import glob
import logging
import os
import sys

logger = logging.getLogger(__name__)

MAX_CAMERA_PROBES = 10  # indices tried where /dev/video* cannot be listed


def audio_input_lines() -> list[str]:
    try:
        import sounddevice as sd

        from realtime.sources.microphone import input_devices
    except OSError as exc:  # the PortAudio library is missing
        return [f"  (audio unavailable: {exc})"]
    inputs = input_devices()
    if not inputs:
        return ["  (none)"]
    default = sd.default.device[0]
    lines = []
    for device in inputs:
        mark = "*" if device["index"] == default else " "
        lines.append(
            f" {mark}{device['index']:>3}  {device['name']}  "
            f"({device['max_input_channels']} ch, {device['default_samplerate']:.0f} Hz)"
        )
    return lines


LOOPBACK_HINTS = {
    "darwin": "macOS: install a loopback device (BlackHole, Loopback), make a Multi-Output Device "
    "of it and the speakers in Audio MIDI Setup, and pass the loopback device as --remote-device",
    "win32": "Windows: enable 'Stereo Mix' under Sound > Recording, or install a virtual cable "
    "(VB-CABLE) as the call's output, and pass it as --remote-device",
}


def sound_server_lines() -> list[str]:
    """PulseAudio / PipeWire sources: the monitors hear what the speakers play (a call's other
    side, for --remote-device)."""
    from realtime.sources.pulse import pulse_sources

    devices = pulse_sources()
    if not devices:
        hint = LOOPBACK_HINTS.get(sys.platform)
        return [f"  (none{'; ' + hint if hint else ''})"]
    return [
        f"  {d.index:>4}  {d.name}{'  <- monitor: what the speakers play' if d.monitor else ''}"
        for d in devices
    ]


def camera_indices() -> list[int]:
    if sys.platform.startswith("linux"):
        found = [p.removeprefix("/dev/video") for p in glob.glob("/dev/video*")]
        return sorted(int(n) for n in found if n.isdigit())
    return list(range(MAX_CAMERA_PROBES))


def camera_lines() -> list[str]:
    import cv2

    lines = []
    previous = os.environ.get("OPENCV_LOG_LEVEL")
    os.environ["OPENCV_LOG_LEVEL"] = "ERROR"  # probing absent devices is not an error here
    try:
        for index in camera_indices():
            capture = cv2.VideoCapture(index)
            try:
                if capture.isOpened():
                    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
                    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
                    fps = capture.get(cv2.CAP_PROP_FPS)
                    lines.append(f"  {index:>3}  camera {index}  ({width}x{height}, {fps:.0f} fps)")
            finally:
                capture.release()
    finally:
        if previous is None:
            os.environ.pop("OPENCV_LOG_LEVEL", None)
        else:
            os.environ["OPENCV_LOG_LEVEL"] = previous
    return lines or ["  (none)"]


def describe_devices() -> str:
    return "\n".join(
        [
            "Audio inputs (* = default; use with --audio-device INDEX or a part of the name):",
            *audio_input_lines(),
            "Sound-server sources (use a monitor as --remote-device NAME for the other side of "
            "a call):",
            *sound_server_lines(),
            "Cameras (use with --camera INDEX):",
            *camera_lines(),
        ]
    )
