"""The one stage contract of the streaming pipeline, in the spirit of pipecat's frame processors.

A stage reads typed messages from its inbox channel, handles the kinds it knows and passes every
other message on to its outbox, unchanged and in order. The end of the stream
(:class:`~realtime.messages.EndOfStream`) lets a stage flush what it holds (:meth:`Stage.finish`)
before it is passed on; then the stage returns. A stage owns no channel: the pipeline builds one
inbox per stage from :attr:`Stage.inbox` and links each stage's outbox to the next one's inbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from realtime.channels import Channel, Policy
from realtime.messages import EndOfStream


@dataclass(frozen=True)
class Inbox:
    """How the channel into a stage is built: its name (in stats), bound and overflow policy."""

    name: str
    size: int
    policy: Policy = Policy.BLOCK


class Stage:
    """Base class: pass everything on. Subclasses override :meth:`process` and :meth:`finish`."""

    inbox_spec: Inbox  # class default; a stage may be given its own

    def __init__(self) -> None:
        self._inbox: Channel[Any] | None = None
        self._outbox: Channel[Any] | None = None

    def link(self, inbox: Channel[Any], outbox: Channel[Any] | None) -> None:
        """Attach the channels (the pipeline's); the last stage of a pipeline has no outbox."""
        self._inbox = inbox
        self._outbox = outbox

    @property
    def inbox(self) -> Channel[Any]:
        if self._inbox is None:
            raise RuntimeError(f"{type(self).__name__} is not linked into a pipeline")
        return self._inbox

    async def run(self) -> None:
        """Handle messages until the end of the stream, which is flushed and passed on."""
        while True:
            item = await self.inbox.get()
            if isinstance(item, EndOfStream):
                await self.finish(item)
                await self.push(item)
                return
            await self.process(item)

    async def process(self, item: Any) -> None:
        """Handle one message; the default passes it on."""
        await self.push(item)

    async def finish(self, end: EndOfStream) -> None:
        """Flush what the stage still holds, before ``end`` is passed on."""

    async def push(self, item: Any) -> None:
        """Hand a message to the next stage (a last stage keeps nothing it does not handle)."""
        if self._outbox is not None:
            await self._outbox.put(item)
