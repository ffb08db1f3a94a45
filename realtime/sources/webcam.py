"""Camera frames with OpenCV: a device index or a video file, frame rate capped, latest frames only.

Every ``cv2.VideoCapture.read`` (which waits for the next frame) runs on the pipeline's executor.
A camera is read continuously, so its driver buffer never serves stale frames, and only frames at
most ``fps`` per second are passed on, into the video channel, which keeps the latest ones. A video
file stands in for a camera: its frames are paced by their own timestamps on the stream clock.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from realtime.frames import keep_after
from realtime.sources.base import Source, SourceContext, SourceError

logger = logging.getLogger(__name__)

# Consecutive failed reads after which a camera counts as gone.
MAX_FAILED_READS = 30


def open_capture(spec: str) -> Any:
    """Open camera ``spec`` (an index such as "0", or a video file path); blocking."""
    import cv2

    if spec.strip().isdigit():
        capture = cv2.VideoCapture(int(spec))
        if not capture.isOpened():
            raise SourceError(f"cannot open camera {spec} (see `emotrack devices`)")
        return capture
    path = Path(spec).expanduser()
    if not path.is_file():
        raise SourceError(f"no such camera or video file: {spec}")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise SourceError(f"OpenCV cannot read video file {path}")
    return capture


class WebcamSource(Source):
    live = True

    def __init__(self, spec: str, *, fps: float = 5.0) -> None:
        super().__init__()
        if fps <= 0:
            raise ValueError("camera fps must be > 0")
        self.spec = spec
        self.is_file = not spec.strip().isdigit()
        self.fps = fps
        self.frames_read = 0

    def check(self) -> None:
        """A video file standing in for the camera must open before the models load (a device
        is opened once, by :meth:`run`: some cameras are slow to open twice)."""
        if self.is_file:
            open_capture(self.spec).release()

    @property
    def description(self) -> str:
        return f"video file {Path(self.spec).name}" if self.is_file else f"camera {self.spec}"

    async def run(self, ctx: SourceContext) -> None:
        import cv2

        if ctx.video is None:
            raise RuntimeError("a camera source needs the pipeline's video channel")
        if not self.is_file and not ctx.clock.paced:
            raise SourceError("a live camera cannot run with an unpaced (max speed) clock")
        loop = asyncio.get_running_loop()
        capture = await loop.run_in_executor(ctx.executor, open_capture, self.spec)
        period = 1.0 / self.fps
        next_keep = 0.0
        failures = 0
        try:
            while not self.stopping:
                ok, image = await loop.run_in_executor(ctx.executor, capture.read)
                if not ok:
                    if self.is_file:
                        break
                    failures += 1
                    if failures >= MAX_FAILED_READS:
                        raise SourceError(f"camera {self.spec} stopped delivering frames")
                    continue
                failures = 0
                self.frames_read += 1
                if self.is_file:
                    time = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                    await ctx.clock.wait_until(time)
                else:
                    time = ctx.clock.stream_time()
                if time < next_keep - 1e-3:
                    continue
                next_keep = keep_after(next_keep, time, period)
                self.emit_frame(ctx, time, image)
        finally:
            await loop.run_in_executor(ctx.executor, capture.release)
        logger.info(
            "%s: %d frames read, %d passed on",
            self.description,
            self.frames_read,
            self.frames_emitted,
        )
