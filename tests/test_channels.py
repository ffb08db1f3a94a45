"""Channel policies: audio blocks (never drops), video/inbox/sinks drop their oldest, counted."""

from __future__ import annotations

import asyncio
import logging

import pytest

from realtime.channels import Channel, ChannelFull, Policy
from realtime.fanout import FanOut
from realtime.messages import EmotionResult, EndOfStream, StatsSnapshot
from realtime.pipeline import inbox_policy
from realtime.sinks.base import Sink, SinkError


async def test_block_policy_makes_the_producer_wait_and_never_drops() -> None:
    channel: Channel[int] = Channel("audio", 2, Policy.BLOCK)
    await channel.put(1)
    await channel.put(2)
    blocked = asyncio.create_task(channel.put(3))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not blocked.done(), "a full BLOCK channel must make put() wait"
    assert await channel.get() == 1
    await asyncio.wait_for(blocked, timeout=1)
    assert [await channel.get(), await channel.get()] == [2, 3]
    assert channel.dropped == 0


def test_block_policy_refuses_put_nowait_when_full() -> None:
    channel: Channel[int] = Channel("audio", 1, Policy.BLOCK)
    channel.put_nowait(1)
    with pytest.raises(ChannelFull, match="audio"):
        channel.put_nowait(2)
    assert channel.get_nowait() == 1


async def test_drop_oldest_keeps_the_latest_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    dropped: list[int] = []
    channel: Channel[int] = Channel("video", 3, Policy.DROP_OLDEST, on_drop=dropped.append)
    with caplog.at_level(logging.WARNING, logger="realtime.channels"):
        for i in range(10):
            await channel.put(i)  # never waits
    assert [channel.get_nowait() for _ in range(3)] == [7, 8, 9]
    assert channel.dropped == 7
    assert dropped == list(range(7))
    # Logged on the first drop, not on every one.
    assert 1 <= len([r for r in caplog.records if "video" in r.getMessage()]) <= 2


def test_inference_inbox_policy() -> None:
    assert inbox_policy("auto", live=True) is Policy.DROP_OLDEST
    assert inbox_policy("auto", live=False) is Policy.BLOCK
    assert inbox_policy("drop", live=False) is Policy.DROP_OLDEST
    assert inbox_policy("block", live=True) is Policy.BLOCK


class RecordingSink(Sink):
    def __init__(
        self, name: str, gate: asyncio.Event | None = None, fail: bool | str = False
    ) -> None:
        self.name = name
        self.gate = gate
        self.fail = fail
        self.results: list[int] = []
        self.opened = self.closed = False

    async def open(self) -> None:
        if self.fail == "open":
            raise SinkError(f"{self.name} cannot open")
        self.opened = True

    async def publish(self, result: EmotionResult) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is True:
            raise SinkError("disk full")
        self.results.append(result.seq)

    async def close(self, stats: StatsSnapshot) -> None:
        self.closed = True


async def test_a_slow_sink_never_stalls_another(make_result) -> None:  # type: ignore[no-untyped-def]
    gate = asyncio.Event()
    slow, fast = RecordingSink("slow", gate), RecordingSink("fast")
    fanout = FanOut([slow, fast], queue_size=4)
    await fanout.open()
    tasks = [asyncio.create_task(r.run()) for r in fanout.runners]
    for seq in range(10):
        fanout.offer(make_result(seq=seq))
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)
    assert fast.results == list(range(10)), "the fast sink got everything while the slow one hung"
    slow_runner = fanout.runners[0]
    assert slow_runner.channel.dropped >= 5
    gate.set()
    await fanout.end(EndOfStream("s", 0, 0.0))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=2)
    assert slow.results[-1] == 9  # it kept the newest results
    await fanout.close(None)
    assert slow.closed and fast.closed


async def test_a_failing_sink_is_isolated(make_result) -> None:  # type: ignore[no-untyped-def]
    broken, healthy = RecordingSink("broken", fail=True), RecordingSink("healthy")
    fanout = FanOut([broken, healthy], queue_size=8)
    await fanout.open()
    tasks = [asyncio.create_task(r.run()) for r in fanout.runners]
    for seq in range(3):
        fanout.offer(make_result(seq=seq))
    await fanout.end(EndOfStream("s", 0, 0.0))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=2)
    assert healthy.results == [0, 1, 2]
    assert fanout.runners[0].failure == "disk full"


async def test_open_failure_closes_the_sinks_already_open() -> None:
    good, bad = RecordingSink("good"), RecordingSink("bad", fail="open")
    fanout = FanOut([good, bad], queue_size=2)
    with pytest.raises(SinkError, match="bad cannot open"):
        await fanout.open()
    assert good.opened and good.closed
