"""Both sides of a live call: the microphone and the remote party, as two channels.

During a call the other party comes out of the speakers, not the microphone. ``emotrack live
--remote-device NAME|INDEX`` opens a second input, typically the monitor source of the output
device (PulseAudio / PipeWire; a loopback device on macOS and Windows: ``emotrack devices``).
:class:`CallSource` runs two :class:`~realtime.sources.microphone.MicrophoneSource` s side by
side: the microphone as channel 0 ("you"), the remote side as channel 1 ("them"), each block
stamped on the one session clock (from its arrival time), so the two line up whatever their
devices' start-up delays. Each channel has its own VAD; the echo of the remote side on the
microphone is handled by :mod:`realtime.echo`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

from realtime.sources.audio_input import open_input
from realtime.sources.base import Source, SourceContext, SourceError

logger = logging.getLogger(__name__)


class CallSource(Source):
    """Two mono inputs as channels 0 (microphone) and 1 (remote); the call ends when either ends."""

    live = True
    remote_channel = 1

    def __init__(
        self,
        microphone: str | None,
        remote: str,
        *,
        block_ms: int = 20,
        duration: float | None = None,
    ) -> None:
        super().__init__()
        self.specs = (microphone, remote)
        self.block_ms = block_ms
        self.duration = duration
        self.sides: tuple[Source, ...] = ()

    @property
    def description(self) -> str:
        if not self.sides:
            mic, remote = self.specs
            return f"call: microphone {mic or 'default'} + remote {remote}"
        return "call: " + " + ".join(side.description for side in self.sides)

    @property
    def channels(self) -> int:
        return 2

    def check(self) -> None:
        """Find both inputs (blocking); a one-line error when either is missing."""
        seq = itertools.count()
        self.sides = tuple(
            open_input(
                spec,
                first_channel=channel,
                seq=seq,
                block_ms=self.block_ms,
                duration=None,  # the call's own, applied to both (Source.capture)
            )
            for channel, spec in enumerate(self.specs)
        )
        mic, remote = self.sides
        if mic.description == remote.description:
            raise SourceError(
                f"the remote device is the microphone itself ({mic.description}); pass the "
                "monitor of the output device (emotrack devices lists them)"
            )
        for side in self.sides:
            side.check()

    async def run(self, ctx: SourceContext) -> None:
        if not self.sides:
            await asyncio.get_running_loop().run_in_executor(ctx.executor, self.check)
        tasks = [asyncio.create_task(side.run(ctx)) for side in self.sides]
        stopper = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
            for side in self.sides:  # one side ended or failed, or stop: end the call
                side.stop()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            stopper.cancel()
        for result in results:
            if isinstance(result, BaseException):
                raise result
