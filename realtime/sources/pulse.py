"""Capture from a PulseAudio / PipeWire source, monitors included, with ``parec``.

On Linux the other side of a call is easiest to hear at the monitor source of the output device
(``alsa_output....monitor``), which PortAudio does not list. ``parec`` (pulseaudio-utils; PipeWire
serves it through pipewire-pulse) records any source as raw 16 kHz mono float32 on its standard
output, resampled by the sound server; :class:`PulseSource` reads it off the event loop's
subprocess pipe. Each block is placed on the session clock: when the server delivered nothing for
a while (an idle monitor may be suspended), the stream time jumps ahead instead of drifting.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np

from realtime.channels import ChannelFull
from realtime.messages import SAMPLE_RATE, AudioChunk
from realtime.sources.base import MediaReadError, Source, SourceContext, SourceError

logger = logging.getLogger(__name__)

GAP = 0.2  # seconds behind the session clock after which the stream time jumps ahead


@dataclass(frozen=True)
class PulseDevice:
    index: int
    name: str
    state: str

    @property
    def monitor(self) -> bool:
        return self.name.endswith(".monitor")


def pulse_sources() -> list[PulseDevice]:
    """The sound server's sources (``pactl list short sources``); empty without one."""
    if shutil.which("pactl") is None:
        return []
    try:
        done = subprocess.run(
            ["pactl", "list", "short", "sources"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    devices = []
    for line in done.stdout.splitlines() if done.returncode == 0 else []:
        fields = line.split("\t")
        if len(fields) >= 2 and fields[0].isdigit():
            devices.append(PulseDevice(int(fields[0]), fields[1], fields[-1].strip()))
    return devices


def find_pulse_source(spec: str) -> PulseDevice | None:
    """The source named exactly ``spec``, else the only one whose name contains it."""
    devices = pulse_sources()
    exact = [d for d in devices if d.name == spec]
    if exact:
        return exact[0]
    matches = [d for d in devices if spec.lower() in d.name.lower()]
    if len(matches) > 1:
        names = ", ".join(d.name for d in matches)
        raise SourceError(f"{spec!r} matches several sound-server sources ({names}); name one")
    return matches[0] if matches else None


class PulseSource(Source):
    live = True

    def __init__(
        self,
        device: PulseDevice,
        *,
        first_channel: int = 0,
        block_ms: int = 20,
        duration: float | None = None,
        seq: itertools.count[int] | None = None,
    ) -> None:
        super().__init__()
        self.device = device
        self.first_channel = first_channel
        self.block_ms = block_ms
        self.duration = duration
        self.device_name = device.name
        self.overflows = 0
        self._seq = seq if seq is not None else itertools.count()
        self._position: int | None = None

    @property
    def description(self) -> str:
        return f"sound-server source {self.device.name}"

    @property
    def channels(self) -> int:
        return 1

    def check(self) -> None:
        if shutil.which("parec") is None:
            raise SourceError("capturing a sound-server source needs parec (pulseaudio-utils)")

    def _command(self) -> list[str]:
        return [
            "parec",
            f"--device={self.device.name}",
            "--format=float32le",
            f"--rate={SAMPLE_RATE}",
            "--channels=1",
            "--raw",
            f"--latency-msec={self.block_ms}",
        ]

    async def run(self, ctx: SourceContext) -> None:
        self.check()
        process = await asyncio.create_subprocess_exec(
            *self._command(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        assert process.stdout is not None and process.stderr is not None
        logger.info("capturing %s with parec", self.device.name)
        # Everything the pipe holds, up to 1 s: a backlog (the loop was busy) is read as one
        # block and placed on the clock by its length, not stamped as if it had just arrived.
        most = 4 * SAMPLE_RATE
        stopping = asyncio.create_task(self._stop.wait())
        pending = b""
        try:
            while not self._stop.is_set():
                read = asyncio.create_task(process.stdout.read(most))
                await asyncio.wait([read, stopping], return_when=asyncio.FIRST_COMPLETED)
                if not read.done():
                    read.cancel()
                    break
                data = read.result()
                if not data:
                    break
                pending += data
                usable = len(pending) - len(pending) % 4
                if usable:
                    samples = np.frombuffer(pending[:usable], dtype="<f4").astype(np.float32)
                    pending = pending[usable:]
                    self._offer(ctx, samples, ctx.clock.now())
        finally:
            stopping.cancel()
            if process.returncode is None:
                process.terminate()
            await process.wait()
        if not self._stop.is_set() and process.returncode not in (0, -15):
            message = (await process.stderr.read()).decode(errors="replace").strip()
            raise SourceError(
                f"parec could not record {self.device.name!r}: {message or process.returncode}"
            )

    def _offer(self, ctx: SourceContext, samples: np.ndarray, arrived: float) -> None:
        began = round((ctx.clock.stream_time(arrived) - len(samples) / SAMPLE_RATE) * SAMPLE_RATE)
        if self._position is None or began - self._position > GAP * SAMPLE_RATE:
            self._position = max(began, self._position or 0)
        start = self._position / SAMPLE_RATE
        try:
            ctx.audio.put_nowait(
                AudioChunk(
                    session=ctx.session,
                    seq=next(self._seq),
                    monotonic=arrived,
                    samples=samples,
                    start=start,
                    channel=self.first_channel,
                )
            )
        except ChannelFull:
            raise MediaReadError(
                "speech detection fell too far behind the sound server; stopping instead of "
                "dropping audio (is the machine overloaded?)",
                at=start,
            ) from None
        self._position += len(samples)
