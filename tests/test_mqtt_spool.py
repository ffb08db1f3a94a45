"""The MQTT sink's on-disk spool: results the broker has not acknowledged survive a crash.

The spool itself is tested directly (order, removal, reopening, damaged files, the lock); the sink
with a spool against a real Mosquitto broker; and the whole story with real processes: the broker
goes away, emotrack is killed with SIGKILL, the broker comes back, emotrack starts again with the
same session, and a subscriber that de-duplicates on (session, seq) has every result once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from factories import result_factory, stats_factory
from mqtt_broker import MosquittoBroker, require_mosquitto
from test_mqtt_sink import (
    TIMEOUT,
    collect,
    fast_options,
    payload,
    seqs_until,
    subscriber,
    unique_prefix,
)

from realtime.mqtt_options import DEFAULT_SPOOL_DIR, MqttOptions
from realtime.sinks import MqttSink, SinkError
from realtime.sinks.spool import Spool, SpoolBusy, spool_path

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep the default spool out of the real home directory."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "state"


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    opened = Spool.open(tmp_path / "spool", "s")
    try:
        yield opened
    finally:
        opened.close()


# -- the spool itself --------------------------------------------------------------------------


def test_rows_come_back_in_order_and_leave_when_removed(spool: Spool) -> None:
    rows = [spool.append("p/s/utterance", seq, f"result {seq}".encode()) for seq in range(5)]
    assert rows == sorted(rows)
    assert [r.seq for r in spool.load()] == [0, 1, 2, 3, 4]
    assert [r.payload for r in spool.load(after=rows[1], upto=rows[3])] == [
        b"result 2",
        b"result 3",
    ]
    assert [r.seq for r in spool.load(limit=2)] == [0, 1]
    spool.remove(rows[:2])
    assert [r.seq for r in spool.load()] == [2, 3, 4] and spool.count() == 3
    spool.remove(rows[2:])
    assert spool.count() == 0
    # Row ids are never reused, even once the spool was empty: later rows sort after.
    assert spool.append("p/s/utterance", 5, b"result 5") > rows[-1]


def test_the_spool_survives_reopening_and_an_empty_one_is_deleted(tmp_path: Path) -> None:
    first = Spool.open(tmp_path, "call-1")
    for seq in range(3):
        first.append("p/call-1/utterance", seq, b"x")
    assert first.close() == 3 and first.path.exists()
    again = Spool.open(tmp_path, "call-1")
    assert [r.seq for r in again.load()] == [0, 1, 2]
    again.remove([r.row for r in again.load()])
    assert again.close() == 0
    assert list(tmp_path.iterdir()) == []


def test_a_second_user_of_the_same_session_is_refused(spool: Spool) -> None:
    with pytest.raises(SpoolBusy, match="in use by another process"):
        Spool.open(spool.path.parent, "s")
    Spool.open(spool.path.parent, "other").close()  # other sessions are independent


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda path: path.write_bytes(b"this is not a database\n" * 100), id="junk"),
        pytest.param(lambda path: path.write_bytes(path.read_bytes()[:1500]), id="truncated"),
        pytest.param(lambda path: _rewrite_meta(path, "someone-else"), id="foreign"),
    ],
)
def test_a_damaged_spool_is_moved_aside_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Any
) -> None:
    spool = Spool.open(tmp_path, "s")
    for seq in range(50):
        spool.append("p/s/utterance", seq, b"x" * 200)
    spool.close()
    damage(spool.path)
    with caplog.at_level(logging.WARNING):
        fresh = Spool.open(tmp_path, "s")
    try:
        assert fresh.count() == 0
        (record,) = caplog.records
        message = record.getMessage()
        assert "unreadable" in message and "moved it aside" in message and "\n" not in message
        (aside,) = tmp_path.glob("s.sqlite3.corrupt-*")
        assert aside.name in message
    finally:
        fresh.close()


def _rewrite_meta(path: Path, owner: str) -> None:
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'session'", (owner,))
    db.close()


def test_spool_file_names_are_safe_for_any_session_id(tmp_path: Path) -> None:
    assert spool_path(tmp_path, "2024-05-01T10:00:00").name == "2024-05-01T10%3A00%3A00.sqlite3"
    assert spool_path(tmp_path, "..").parent == tmp_path
    assert not spool_path(tmp_path, "..").name.startswith(".")
    long = spool_path(tmp_path, "x" * 300)
    assert len(long.name) < 150 and long != spool_path(tmp_path, "x" * 301)


def test_spool_directory_follows_xdg_and_can_be_turned_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert MqttOptions().spool_dir == DEFAULT_SPOOL_DIR
    assert MqttOptions().spool_directory() == tmp_path / "emotrack" / "mqtt-spool"
    monkeypatch.delenv("XDG_STATE_HOME")
    expected = Path.home() / ".local" / "state" / "emotrack" / "mqtt-spool"
    assert MqttOptions().spool_directory() == expected
    assert MqttOptions(spool_dir="~/spool").spool_directory() == Path.home() / "spool"
    assert MqttOptions(spool_dir="").spool_directory() is None
    assert MqttOptions(spool_dir=None).spool_directory() is None


# -- the sink with a spool ---------------------------------------------------------------------


async def test_an_unreachable_broker_leaves_results_in_the_spool_for_the_next_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    require_mosquitto()
    (tmp_path / "broker").mkdir()
    broker = MosquittoBroker(tmp_path / "broker")
    host, port = broker.address
    prefix = unique_prefix()
    spool_dir = tmp_path / "spool"
    options = fast_options(
        host, port, prefix, spool_dir=spool_dir, fail_fast=False, close_timeout=0.2
    )
    first = MqttSink(session="again", options=options)
    await first.open()  # no broker yet
    for seq in range(4):
        await first.publish(result_factory(seq=seq, session="again"))
    with caplog.at_level(logging.WARNING):
        await first.close(stats_factory(results=4))
    assert first.unsent == 4 and first.dropped == 0
    assert "4 results unsent (kept in the spool" in caplog.text
    assert "stay in the spool" in caplog.text and "--session again" in caplog.text
    assert spool_path(spool_dir, "again").exists()

    await broker.astart()
    try:
        async with subscriber(host, port) as sub:
            await sub.subscribe(f"{prefix}/+/utterance", qos=1)
            second = MqttSink(session="again", options=options)
            await second.open()
            assert second.recovered == 4
            for seq in range(4, 6):
                await second.publish(result_factory(seq=seq, session="again"))
            messages = await collect(sub, 6)
            await second.close(stats_factory(results=6))
    finally:
        broker.stop()
    assert [payload(m)["seq"] for m in messages] == [0, 1, 2, 3, 4, 5]
    assert second.sent == 6 and second.unsent == 0
    assert not spool_path(spool_dir, "again").exists()  # delivered: the file is gone


async def test_with_a_spool_an_outage_drops_nothing(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    host, port = mosquitto.address
    prefix = unique_prefix()
    sub_id = f"persistent-{prefix}"
    options = fast_options(host, port, prefix, buffer_size=5, spool_dir=tmp_path / "spool")
    sink = MqttSink(session="s7", options=options)
    async with subscriber(host, port, identifier=sub_id, clean_session=False) as sub:
        await sub.subscribe(f"{prefix}/+/utterance", qos=1)
        await sink.open()
        await sink.publish(result_factory(seq=0, session="s7"))
        await collect(sub, 1)

    mosquitto.stop()
    await asyncio.wait_for(sink.wait_disconnected(), TIMEOUT)
    for seq in range(1, 21):  # never blocks while disconnected; 5 in memory, the rest on disk
        await asyncio.wait_for(sink.publish(result_factory(seq=seq, session="s7")), 5.0)
    assert sink.dropped == 0 and sink.buffered == 20

    await mosquitto.astart()
    async with subscriber(host, port, identifier=sub_id, clean_session=False) as sub:
        seqs = await seqs_until(sub, 20)
        await sink.close(stats_factory(results=21))
    assert [seq for seq in seqs if seq > 0] == list(range(1, 21))
    assert sink.sent == 21 and sink.dropped == 0 and sink.unsent == 0


async def test_a_failing_spool_write_falls_back_to_memory_with_a_warning(
    mosquitto: MosquittoBroker,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host, port = mosquitto.address
    prefix = unique_prefix()
    options = fast_options(host, port, prefix, buffer_size=3, spool_dir=tmp_path / "spool")
    sink = MqttSink(session="full", options=options)
    await sink.open()
    mosquitto.stop()
    await asyncio.wait_for(sink.wait_disconnected(), TIMEOUT)
    for seq in range(5):  # 3 in memory, 2 only on disk
        await sink.publish(result_factory(seq=seq, session="full"))

    def disk_full(*args: Any) -> int:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Spool, "append", disk_full)
    with caplog.at_level(logging.WARNING):
        await sink.publish(result_factory(seq=5, session="full"))
    (record,) = [r for r in caplog.records if "disk is full" in r.getMessage()]
    assert "only in memory" in record.getMessage()
    # The 2 on disk moved into memory; memory holds 3 while disconnected: the oldest 3 dropped.
    assert sink.dropped == 3 and sink.buffered == 3

    await mosquitto.astart()
    async with subscriber(host, port) as sub:
        await sub.subscribe(f"{prefix}/+/utterance", qos=1)
        await asyncio.wait_for(sink.wait_connected(), TIMEOUT)
        await sink.close(stats_factory(results=6))
    assert sink.sent == 3 and sink.unsent == 0


async def test_two_runs_of_one_session_cannot_share_a_spool(
    mosquitto_broker: tuple[str, int], tmp_path: Path
) -> None:
    host, port = mosquitto_broker
    options = fast_options(host, port, unique_prefix(), spool_dir=tmp_path / "spool")
    first = MqttSink(session="twin", options=options)
    await first.open()
    try:
        with pytest.raises(SinkError, match="in use by another process") as info:
            await MqttSink(session="twin", options=options).open()
        assert "\n" not in str(info.value)
    finally:
        await first.close(stats_factory())


async def test_an_unusable_spool_directory_warns_and_the_sink_still_works(
    mosquitto_broker: tuple[str, int], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    host, port = mosquitto_broker
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    options = fast_options(host, port, unique_prefix(), spool_dir=blocker / "spool")
    sink = MqttSink(session="nospool", options=options)
    with caplog.at_level(logging.WARNING):
        await sink.open()
    (record,) = caplog.records
    assert "cannot create MQTT spool directory" in record.getMessage()
    assert "only in memory" in record.getMessage()
    assert sink.spool_path is None
    await sink.publish(result_factory(seq=0, session="nospool"))
    await sink.close(stats_factory())
    assert sink.sent == 1


# -- the whole story, with real processes and SIGKILL -------------------------------------------

EMOTRACK = textwrap.dedent(
    """
    import asyncio, sys
    from realtime.sinks import MqttOptions, MqttSink
    from factories import result_factory, stats_factory

    async def main():
        host, port, prefix, spool_dir, session = sys.argv[1:6]
        options = MqttOptions(
            host=host, port=int(port), prefix=prefix, spool_dir=spool_dir,
            reconnect_min=0.05, reconnect_max=0.2, fail_fast=False,
        )
        sink = MqttSink(session=session, options=options)
        await sink.open()
        print("recovered", sink.recovered, flush=True)
        while line := await asyncio.to_thread(sys.stdin.readline):
            command, *args = line.split()
            if command == "publish":
                for seq in range(int(args[0]), int(args[1])):
                    await sink.publish(result_factory(seq=seq, session=session))
                print("published", flush=True)
            elif command == "wait-disconnected":
                await sink.wait_disconnected()
                print("disconnected", flush=True)
            elif command == "close":
                await sink.close(stats_factory())
                print("closed", sink.sent, sink.unsent, flush=True)
                return

    asyncio.run(main())
    """
)


class Emotrack:
    """A stand-in for the emotrack process: an MQTT sink with a spool, driven over stdin."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, *args: str) -> Emotrack:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            EMOTRACK,
            *args,
            cwd=REPO,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def expect(self, word: str) -> list[str]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), TIMEOUT)
        fields = line.decode().split()
        if not fields or fields[0] != word:
            assert self.process.stderr is not None
            self.process.kill()
            err = (await self.process.stderr.read()).decode()[-3000:]
            pytest.fail(f"expected {word!r}, got {line!r}; stderr:\n{err}")
        return fields[1:]

    async def send(self, command: str, answer: str) -> list[str]:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{command}\n".encode())
        await self.process.stdin.drain()
        return await self.expect(answer)

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def test_results_survive_sigkill_during_an_outage_and_arrive_once_after_restart(
    tmp_path: Path,
) -> None:
    require_mosquitto()
    (tmp_path / "broker").mkdir()
    broker = MosquittoBroker(tmp_path / "broker")
    await broker.astart()
    host, port = broker.address
    prefix = unique_prefix()
    spool_dir = tmp_path / "spool"
    args = (host, str(port), prefix, str(spool_dir), "crash")
    received: list[dict[str, Any]] = []
    first = second = None
    try:
        # A first run delivers results 0-4, then the broker goes away and it makes 5-19 ...
        async with subscriber(host, port) as sub:
            await sub.subscribe(f"{prefix}/+/utterance", qos=1)
            first = await Emotrack.start(*args)
            assert await first.expect("recovered") == ["0"]
            await first.send("publish 0 5", "published")
            received += [payload(m) for m in await collect(sub, 5)]
            broker.stop()
        await first.send("wait-disconnected", "disconnected")
        await first.send("publish 5 20", "published")
        # ... and is killed: no clean close, no chance to save anything more.
        first.process.send_signal(signal.SIGKILL)
        assert await first.process.wait() == -signal.SIGKILL

        # The broker comes back; emotrack starts again with the same session and makes 20-24.
        await broker.astart()
        async with subscriber(host, port) as sub:
            await sub.subscribe(f"{prefix}/+/utterance", qos=1)
            second = await Emotrack.start(*args)
            (recovered,) = await second.expect("recovered")
            # 15 never reached the broker; result 4 also stays if its PUBACK was cut off.
            assert int(recovered) in (15, 16)
            await second.send("publish 20 25", "published")
            sent, unsent = await second.send("close", "closed")
            assert int(sent) == int(recovered) + 5 and unsent == "0"
            assert await second.process.wait() == 0
            received += [payload(m) for m in await collect(sub, int(sent))]
    finally:
        for process in (first, second):
            if process is not None:
                await process.stop()
        broker.stop()

    # A subscriber de-duplicating on (session, seq) has every result exactly once, in order.
    unique: dict[tuple[str, int], dict[str, Any]] = {}
    for message in received:
        key = (message["session"], message["seq"])
        assert unique.setdefault(key, message) == message  # a repeat is the very same result
    assert list(unique) == [("crash", seq) for seq in range(25)]
    assert len(received) - len(unique) == int(recovered) - 15  # at most the one in flight
    assert not spool_path(spool_dir, "crash").exists()


def test_the_spool_directory_is_a_command_line_option(tmp_path: Path) -> None:
    from realtime.cli import build_parser

    parser = build_parser()
    given = parser.parse_args(["replay", "x.wav", "--mqtt-spool", str(tmp_path)])
    assert getattr(given, "sinks.mqtt.spool_dir") == str(tmp_path)
    off = parser.parse_args(["replay", "x.wav", "--mqtt-spool", ""])
    assert MqttOptions(spool_dir=getattr(off, "sinks.mqtt.spool_dir")).spool_directory() is None
    assert not hasattr(parser.parse_args(["replay", "x.wav"]), "sinks.mqtt.spool_dir")
