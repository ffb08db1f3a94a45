"""One timestamp per result: made once, when the result is made, and published by every sink."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from realtime import inference
from realtime.config import Config
from realtime.fanout import FanOut
from realtime.messages import EndOfStream, PendingUtterance, Transcript, Utterance
from realtime.recorder import RESULTS, SessionRecorder
from realtime.serialize import result_to_dict, utc_timestamp
from realtime.sinks.jsonl import JsonlSink
from unimse.inputs import ModelInput


def test_a_result_is_stamped_once_when_it_is_made(make_result) -> None:  # type: ignore[no-untyped-def]
    prediction = make_result().prediction
    utterance = Utterance("s", 0, 1.0, audio=np.zeros(160, np.float32), start=0.0, end=1.0)
    pending = PendingUtterance(Transcript("s", 0, 1.0, utterance, "hi"), ModelInput(text="hi"))
    before = datetime.now(UTC)
    result = inference.make_result(pending, prediction, 0, time.monotonic(), "v1")
    assert before <= result.timestamp <= datetime.now(UTC)
    first = result_to_dict(result)["timestamp"]
    time.sleep(0.01)  # serialised later: still the same time
    assert result_to_dict(result)["timestamp"] == first == utc_timestamp(result.timestamp)


def test_every_sink_writes_the_same_timestamp(make_result, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The JSON lines sink and the session recorder publish the result made an hour ago with
    that time, not with the time each of them got to it."""
    made = datetime.now(UTC) - timedelta(hours=1)
    results = [make_result(seq=seq, timestamp=made + timedelta(seconds=seq)) for seq in range(3)]
    out = tmp_path / "out.jsonl"
    recorder = SessionRecorder(
        tmp_path / "session",
        session="test-session",
        config=Config(),
        source="test",
        channels_as_speakers=False,
    )

    async def scenario() -> None:
        fanout = FanOut([JsonlSink(path=out), recorder], queue_size=16)
        await fanout.open()
        for result in results:
            fanout.offer(result)
        await fanout.end(EndOfStream("test-session", 0, 0.0))
        await asyncio.gather(*(runner.run() for runner in fanout.runners))
        await fanout.close(None)

    asyncio.run(scenario())
    written = [json.loads(line)["timestamp"] for line in out.read_text().splitlines()]
    recorded = [
        json.loads(line)["timestamp"]
        for line in (tmp_path / "session" / RESULTS).read_text().splitlines()
    ]
    assert written == recorded == [utc_timestamp(r.timestamp) for r in results]
    assert written[0] == utc_timestamp(made)
