"""The audio of a recorded session, for the page's player.

Short recordings are embedded: mixed down to mono and compressed to Ogg Opus (about 20 kbit/s at
16 kHz, some 150 KB a minute once base64-encoded), as a ``data:`` URI, so the page stays one
self-contained file. Longer ones (over ``embed_max_seconds``) would make the page too large to
open quickly: the page then plays the recording's ``audio.wav`` through a relative link, which
works as long as the report and the session folder keep their places.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

EMBED_MAX_SECONDS = 30 * 60.0
_BLOCK = 16_000 * 30  # samples read at a time


@dataclass(frozen=True)
class AudioSource:
    """What the page's ``<audio>`` element plays."""

    src: str  # a data: URI, or a URL relative to the report
    embedded: bool
    seconds: float
    description: str  # one line for the page's metadata


def audio_source(
    wav: Path, report_dir: Path, *, embed_max_seconds: float = EMBED_MAX_SECONDS
) -> AudioSource | None:
    """How the page plays ``wav``; ``None`` (with a warning) when it cannot be read."""
    import soundfile as sf

    try:
        info = sf.info(str(wav))
    except (OSError, RuntimeError) as exc:
        logger.warning("cannot read the recorded audio %s (%s); the report has no player", wav, exc)
        return None
    seconds = info.frames / info.samplerate
    if seconds <= embed_max_seconds:
        try:
            data = _opus(wav)
        except (OSError, RuntimeError, ValueError) as exc:  # libsndfile built without Opus
            logger.warning("cannot compress %s (%s); linking to it instead", wav, exc)
        else:
            return AudioSource(
                src="data:audio/ogg;codecs=opus;base64," + base64.b64encode(data).decode("ascii"),
                embedded=True,
                seconds=seconds,
                description=f"embedded (Ogg Opus, mono, {len(data) / 1e6:.2f} MB)",
            )
    relative = Path(os.path.relpath(wav.resolve(), report_dir.resolve())).as_posix()
    logger.info("the report plays %s through the relative link %s", wav, relative)
    return AudioSource(
        src=urllib.parse.quote(relative),
        embedded=False,
        seconds=seconds,
        description=f"linked: {relative} (keep it beside the report)",
    )


def _opus(wav: Path) -> bytes:
    """``wav`` mixed down to mono, as Ogg Opus bytes."""
    import soundfile as sf

    buffer = io.BytesIO()
    info = sf.info(str(wav))
    with sf.SoundFile(
        buffer, "w", samplerate=info.samplerate, channels=1, format="OGG", subtype="OPUS"
    ) as out:
        for block in sf.blocks(str(wav), blocksize=_BLOCK, dtype="float32", always_2d=True):
            out.write(block.mean(axis=1))
    return buffer.getvalue()
