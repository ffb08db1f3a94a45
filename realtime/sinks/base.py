"""The interface every result sink implements.

The pipeline owns one bounded queue per sink and a task that drains it, so a slow sink never stalls
another. For each sink it calls, in this order: :meth:`Sink.open` once, then :meth:`Sink.publish`
for every result (sequentially, never concurrently) interleaved with :meth:`Sink.update_stats`
whenever fresh counters are available and, with diarisation, :meth:`Sink.revise` for every
:class:`~realtime.messages.SpeakerRevision` (in pipeline order, after the result it revises), and
with ``--partial``, :meth:`Sink.partial` for interim results, with ``--speculative``,
:meth:`Sink.confirm` for each speculative result that stands (one that does not is replaced by a
result with the same ``utterance_seq`` and a higher ``revision``, through :meth:`Sink.publish`),
and finally :meth:`Sink.close` once with the final counters.
"""

from __future__ import annotations

import abc

from realtime.messages import (
    EmotionResult,
    PartialResult,
    SpeakerRevision,
    StatsSnapshot,
    UtteranceConfirmed,
)


class SinkError(RuntimeError):
    """A sink cannot do its job; the message is one line meant for the user."""


class Sink(abc.ABC):
    """A destination for :class:`~realtime.messages.EmotionResult` messages."""

    #: Short name used in logs, queue names and drop counters (``"jsonl"``, ``"mqtt"``, ...).
    name: str = "sink"

    @abc.abstractmethod
    async def open(self) -> None:
        """Acquire resources (files, connections, the terminal). Raises :class:`SinkError`."""

    @abc.abstractmethod
    async def publish(self, result: EmotionResult) -> None:
        """Deliver one result. Results arrive in pipeline order."""

    async def revise(self, revision: SpeakerRevision) -> None:
        """A published utterance now has another speaker (diarisation heard more). Sinks that
        show or store speakers re-label it; the default ignores it."""
        return None

    async def partial(self, result: PartialResult) -> None:
        """An interim result (``--partial``: someone is still speaking; not final). Sinks that
        show live results use it; the default ignores it."""
        return None

    async def confirm(self, confirmation: UtteranceConfirmed) -> None:
        """A speculative result (``--speculative``) is final: the speaker did not go on. Sinks
        that show or publish whether a result may change use it; the default ignores it."""
        return None

    def update_stats(self, stats: StatsSnapshot) -> None:
        """Receive the latest pipeline counters. Must not block; the default ignores them."""
        return None

    @abc.abstractmethod
    async def close(self, stats: StatsSnapshot) -> None:
        """Flush what is pending and release resources; ``stats`` are the final counters."""
