"""Capture and replay sources: microphone, webcam, audio/video files and recorded sessions."""

from realtime.sources.base import Source, SourceContext, SourceError

__all__ = ["Source", "SourceContext", "SourceError"]
