"""Replay of a session folder written by ``--record`` (see :mod:`realtime.recorder`).

The manifest says how the audio was segmented; :func:`session_overrides` turns it into the
configuration overrides (VAD options, speakers, channel layout) that reproduce the same utterances.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from realtime.recorder import FORMAT, MANIFEST
from realtime.sources.base import SourceError
from realtime.sources.files import FileSource

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionManifest:
    folder: Path
    session: str
    audio: Path
    video: Path | None
    channels_as_speakers: bool
    speakers: tuple[str, ...]
    vad: dict[str, Any]
    complete: bool
    utterances: tuple[dict[str, Any], ...]
    end: str | None = None  # how the recorded stream ended: eof, stopped, error: ...
    diarization: dict[str, Any] | None = None  # speakers.* of the recording (None: before they
    # were recorded)


def is_session_folder(path: str | Path) -> bool:
    return (Path(path).expanduser() / MANIFEST).is_file()


def read_manifest(folder: str | Path) -> SessionManifest:
    """Read and check a session folder's manifest; one-line SourceError when it is unusable."""
    root = Path(folder).expanduser()
    path = root / MANIFEST
    if not path.is_file():
        raise SourceError(f"{root} is not a recorded session (no {MANIFEST})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise SourceError(f"{path} is not an emotrack session manifest")
        audio = root / data["audio"]["file"]
        video = root / data["video"]["file"] if data.get("video") else None
        manifest = SessionManifest(
            folder=root,
            session=str(data["session"]),
            audio=audio,
            video=video,
            channels_as_speakers=bool(data["channels_as_speakers"]),
            speakers=tuple(data["speakers"]),
            vad=dict(data["vad"]),
            complete=bool(data.get("complete", False)),
            utterances=tuple(data.get("utterances", ())),
            end=None if data.get("end") is None else str(data["end"]),
            diarization=None if data.get("diarization") is None else dict(data["diarization"]),
        )
    except KeyError as exc:
        raise SourceError(f"session manifest {path} lacks the key {exc.args[0]!r}") from None
    except (OSError, ValueError, TypeError) as exc:
        raise SourceError(f"cannot read session manifest {path}: {exc!s}") from None
    if not audio.is_file():
        raise SourceError(f"session {root} has no audio file {audio.name}")
    return manifest


def session_overrides(manifest: SessionManifest) -> dict[str, Any]:
    """Configuration overrides that make a replay segment the audio as the recording did."""
    overrides: dict[str, Any] = {f"vad.{key}": value for key, value in manifest.vad.items()}
    overrides["sources.speakers"] = list(manifest.speakers)
    overrides["sources.channels_as_speakers"] = manifest.channels_as_speakers
    if manifest.diarization is not None:  # who speaks, by voice, as the recording found it
        diarization = manifest.diarization
        enrolled = list(diarization.get("enroll", ()))
        enroll = [spec for spec in enrolled if _enrolled_file(spec).is_file()]
        if missing := [spec for spec in enrolled if spec not in enroll]:
            logger.warning(
                "session %s enrolled voices from files not found here (%s): its speakers may "
                "be labelled differently",
                manifest.folder,
                ", ".join(missing),
            )
        overrides["speakers.diarize"] = bool(diarization.get("diarize", False))
        overrides["speakers.max_speakers"] = diarization.get("max_speakers")
        overrides["speakers.names"] = list(diarization.get("names", ()))
        overrides["speakers.enroll"] = enroll
    return overrides


def _enrolled_file(spec: str) -> Path:
    return Path(spec.partition("=")[2].strip()).expanduser()


class SessionSource(FileSource):
    """Replays a recorded session's audio (and video, when it was recorded)."""

    def __init__(self, manifest: SessionManifest, *, video: bool = True, fps: float = 5.0) -> None:
        super().__init__(
            manifest.audio,
            channels_as_speakers=manifest.channels_as_speakers,
            video=video and manifest.video is not None,
            video_path=manifest.video if video else None,
            fps=fps,
        )
        self.manifest = manifest

    @property
    def description(self) -> str:
        return f"session {self.manifest.folder.name}"
