"""The end of the pipeline: every result (and speaker revision, interim result, confirmation of a
speculative result) to every sink, each sink with its own queue."""

from __future__ import annotations

import asyncio
import logging
import statistics
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from realtime.channels import Channel, Policy
from realtime.messages import (
    EmotionResult,
    EndOfStream,
    PartialResult,
    SpeakerRevision,
    StatsSnapshot,
    UtteranceConfirmed,
)
from realtime.sinks.base import Sink, SinkError
from realtime.stage import Inbox, Stage

logger = logging.getLogger(__name__)

# What reaches the sinks besides results (not counted as results).
Update = SpeakerRevision | PartialResult | UtteranceConfirmed

LATENCY_WINDOW = 1000  # results over which the dashboard's median latencies are taken


class SinkRunner:
    """One sink, its own bounded queue (oldest dropped when full) and the task that drains it."""

    def __init__(self, sink: Sink, queue_size: int) -> None:
        self.sink = sink
        self.channel: Channel[Update | EmotionResult | EndOfStream] = Channel(
            f"sink:{sink.name}", queue_size, Policy.DROP_OLDEST
        )
        self.offered = 0  # results handed to its queue
        self.published = 0  # results its publish() took without an error
        self.revised = 0  # speaker revisions its revise() took without an error
        self.failure: str | None = None

    @property
    def undelivered(self) -> int:
        """Results this sink did not deliver: dropped from its queue, refused after it failed,
        and what the sink itself reports as lost or still waiting when it closed (``dropped``
        and ``unsent`` counters, as the MQTT sink keeps them)."""
        reported = sum(int(getattr(self.sink, name, 0) or 0) for name in ("dropped", "unsent"))
        return self.offered - self.published + reported

    async def run(self) -> None:
        while True:
            item = await self.channel.get()
            if isinstance(item, EndOfStream):
                return
            if self.failure is not None:
                continue
            try:
                if isinstance(item, SpeakerRevision):
                    await self.sink.revise(item)
                elif isinstance(item, PartialResult):
                    await self.sink.partial(item)
                elif isinstance(item, UtteranceConfirmed):
                    await self.sink.confirm(item)
                else:
                    await self.sink.publish(item)
            except SinkError as exc:
                self.failure = str(exc)
                logger.error("sink %s failed and gets no more results: %s", self.sink.name, exc)
            else:
                if isinstance(item, SpeakerRevision):
                    self.revised += 1
                elif isinstance(item, EmotionResult):
                    self.published += 1


class FanOut:
    """Hands every result to every sink without letting one sink hold up another."""

    def __init__(self, sinks: Sequence[Sink], queue_size: int) -> None:
        self.runners = [SinkRunner(sink, queue_size) for sink in sinks]
        self._opened: list[Sink] = []

    async def open(self) -> None:
        """Open every sink (concurrently); if one fails, close the others and raise its error."""
        results = await asyncio.gather(
            *(runner.sink.open() for runner in self.runners), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        self._opened = [
            runner.sink
            for runner, r in zip(self.runners, results, strict=True)
            if not isinstance(r, BaseException)
        ]
        if failures:
            await self.close(None)
            raise failures[0]

    def offer(self, result: EmotionResult) -> None:
        for runner in self.runners:
            runner.offered += 1
            runner.channel.put_nowait(result)

    def offer_update(self, message: Update) -> None:
        """A speaker revision, an interim result or a confirmation, to every sink's queue (not
        counted as a result)."""
        for runner in self.runners:
            runner.channel.put_nowait(message)

    def undelivered(self) -> dict[str, int]:
        """Sink name -> results it did not deliver, for the sinks that missed any."""
        return {r.sink.name: r.undelivered for r in self.runners if r.undelivered}

    def failures(self) -> dict[str, str]:
        """Sink name -> why it failed (while publishing or closing), for the sinks that did."""
        return {r.sink.name: r.failure for r in self.runners if r.failure is not None}

    def update_stats(self, stats: StatsSnapshot) -> None:
        for runner in self.runners:
            runner.sink.update_stats(stats)

    async def end(self, end: EndOfStream) -> None:
        for runner in self.runners:
            runner.channel.put_nowait(end)

    async def close(self, stats: StatsSnapshot | None) -> None:
        """Close every opened sink; errors are logged so that the others still close."""
        final = stats or StatsSnapshot(0.0, 0, 0, {}, {}, {})
        for sink in self._opened:
            try:
                await sink.close(final)
            except SinkError as exc:
                logger.error("sink %s did not close cleanly: %s", sink.name, exc)
                for runner in self.runners:
                    if runner.sink is sink and runner.failure is None:
                        runner.failure = str(exc)
        self._opened = []


class DeliveryStage(Stage):
    """Last stage: counts results and their latencies, hands them (and speaker revisions,
    confirmations) to the fan-out.

    With ``vad.speculative`` it follows each speculative result it delivered until a confirmation
    or a revision (a result with the same ``utterance_seq``, higher ``revision``) settles it, and
    counts both; a confirmation of a result it never delivered (no words, dropped) is dropped.
    """

    inbox_spec = Inbox("results", 64)

    def __init__(self, fanout: FanOut, stats: Callable[[], StatsSnapshot]) -> None:
        super().__init__()
        self.fanout = fanout
        self.stats = stats
        self.results = 0
        self.revisions = 0  # speaker revisions handed to the sinks
        self.partials = 0  # interim results handed to the sinks
        self.speculative = 0  # utterances whose first result was speculative
        self.confirmed = 0  # speculative results confirmed
        self.revised = 0  # speculative results replaced by a revision
        self.rereads = 0  # results revised by a re-read (:mod:`realtime.reread`)
        self._unsettled: dict[int, EmotionResult] = {}  # utterance_seq -> speculative result
        self._latencies: dict[str, deque[float]] = {}

    def latency_p50(self) -> dict[str, float]:
        return {k: statistics.median(v) for k, v in self._latencies.items() if v}

    async def process(self, item: Any) -> None:
        if isinstance(item, UtteranceConfirmed):
            if self._unsettled.pop(item.utterance_seq, None) is None:
                logger.debug("utterance %d: no result to confirm", item.utterance_seq)
                return
            self.confirmed += 1
            self.fanout.offer_update(item)
            return
        if isinstance(item, SpeakerRevision | PartialResult):
            if isinstance(item, SpeakerRevision):
                self.revisions += 1
            else:
                self.partials += 1
            self.fanout.offer_update(item)
            return
        if not isinstance(item, EmotionResult):
            logger.debug("nothing delivers %s", type(item).__name__)
            return
        if item.reread:  # a revision of a delivered result: no new utterance, no new latency
            self.rereads += 1
            self.fanout.offer(item)
            return
        self._settle(item)
        self.results += 1
        for stage, seconds in item.latency.items():
            self._latencies.setdefault(stage, deque(maxlen=LATENCY_WINDOW)).append(seconds)
        self.fanout.offer(item)
        self.fanout.update_stats(self.stats())

    def _settle(self, result: EmotionResult) -> None:
        """Follow speculative results: a revision settles the one it replaces."""
        replaced = self._unsettled.pop(result.utterance_seq, None)
        if replaced is not None and not replaced.revision:
            self.revised += 1
        if result.speculative:
            self._unsettled[result.utterance_seq] = result
            self.speculative += not result.revision

    async def deliver_partial(self, result: PartialResult) -> None:
        """An interim result straight from the partial stage (not through the chain)."""
        self.partials += 1
        self.fanout.offer_update(result)

    async def finish(self, end: EndOfStream) -> None:
        await self.fanout.end(end)
