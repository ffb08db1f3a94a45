"""``emotrack serve`` and ``emotrack stream`` against a real Mosquitto broker started by the test.

Two server processes share the sessions of four concurrent ``stream`` processes (MQTT 5 shared
subscription); killing one server leaves the other's sessions untouched and ends the dead one's
with a clear status; malformed messages get an error status while the server and the other
sessions go on. Speech is synthesised with espeak-ng; the emotion model is the tiny random-weight
checkpoint (the checks are about transport, order and failure, not about emotions).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pytest
from mqtt_broker import MosquittoBroker, require_mosquitto
from rt_support import REPO, emotrack_command, emotrack_env, emotrack_in_process, run_emotrack

from realtime.serve.protocol import (
    EndRequest,
    StartRequest,
    Topics,
    check,
    encode_chunk,
    encode_json,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing"),
]

SCRIPT = """\
Ana: Good morning, how are you today?
[pause 1.0]
Ben: I am fine, thank you very much.
[pause 1.0]
Ana: That is wonderful to hear.
"""
TURNS = 3
TIMEOUT = 90.0


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from unimse.synth import parse_script, synthesize, write_audio

    path = tmp_path_factory.mktemp("speech") / "three-turns.wav"
    write_audio(path, synthesize(parse_script(SCRIPT)).audio)
    return path


@dataclass
class Watcher:
    """Everything published on the prefix's session topics, as a test subscriber saw it."""

    messages: list[tuple[str, dict[str, Any], bool]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def statuses(self, session: str, state: str) -> list[dict[str, Any]]:
        return [
            data
            for topic, data, retain in self.messages
            if topic.endswith(f"/{session}/status") and data.get("state") == state and not retain
        ]

    def results(self, session: str) -> list[dict[str, Any]]:
        return [data for topic, data, _ in self.messages if topic.endswith(f"/{session}/utterance")]

    async def wait_for(self, condition: Any, timeout: float = TIMEOUT) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


@dataclass
class Harness:
    host: str
    port: int
    prefix: str
    workdir: Path
    checkpoint: Path
    servers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def mqtt_args(self) -> list[str]:
        port = str(self.port)
        return ["--mqtt-host", self.host, "--mqtt-port", port, "--mqtt-prefix", self.prefix]

    def log(self, server: str) -> str:
        return (self.workdir / f"{server}.log").read_text(encoding="utf-8", errors="replace")

    async def start_servers(self, *names: str, extra: tuple[str, ...] = ()) -> None:
        for name in names:
            with open(self.workdir / f"{name}.log", "wb") as log:
                self.servers[name] = subprocess.Popen(
                    emotrack_command(
                        "-v",
                        "serve",
                        *self.mqtt_args(),
                        "--server-id",
                        name,
                        "--checkpoint",
                        str(self.checkpoint),
                        "--mqtt-spool",
                        "",
                        "--max-delay",  # a loaded test machine must not drop utterances
                        "30",
                        *extra,
                    ),
                    cwd=REPO,
                    env=emotrack_env(OMP_NUM_THREADS="1"),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
        online: set[str] = set()
        async with aiomqtt.Client(self.host, self.port, identifier=f"w-{uuid.uuid4().hex}") as c:
            await c.subscribe(f"{self.prefix}/servers/+", qos=1)
            async with asyncio.timeout(TIMEOUT):
                async for message in c.messages:
                    data = json.loads(bytes(message.payload))
                    if data["state"] == "online":
                        online.add(data["server"])
                    if online >= set(names):
                        return
                    for name in names:
                        assert self.servers[name].poll() is None, self.log(name)

    def stop_servers(self) -> None:
        for process in self.servers.values():
            if process.poll() is None:
                process.terminate()
        for process in self.servers.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    @property
    def topics(self) -> Topics:
        return Topics(self.prefix)

    async def start_stream(
        self, audio: Path, session: str, *extra: str
    ) -> asyncio.subprocess.Process:
        """``emotrack stream AUDIO --session ID *extra`` on this broker, started."""
        return await asyncio.create_subprocess_exec(
            *emotrack_command("stream", str(audio), "--session", session, *self.mqtt_args()),
            *extra,
            cwd=REPO,
            env=emotrack_env(OMP_NUM_THREADS="1"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

    async def stream(
        self, audio: Path, session: str, *extra: str
    ) -> tuple[int, list[dict[str, Any]], str]:
        """``emotrack stream AUDIO --session ID --results json``: exit code, results, stderr."""
        process = await self.start_stream(audio, session, "--results", "json", *extra)
        stdout, stderr = await asyncio.wait_for(process.communicate(), TIMEOUT)
        results = [json.loads(line) for line in stdout.decode().splitlines()]
        assert process.returncode is not None
        return process.returncode, results, stderr.decode()


@pytest.fixture
def harness(
    mosquitto_broker: tuple[str, int], tiny_checkpoint: Path, tmp_path: Path
) -> Iterator[Harness]:
    require_mosquitto()
    host, port = mosquitto_broker
    prefix = f"t{uuid.uuid4().hex[:8]}/emotrack"
    harness = Harness(host, port, prefix, tmp_path, tiny_checkpoint)
    try:
        yield harness
    finally:
        harness.stop_servers()


async def watch(harness: Harness, watcher: Watcher) -> None:
    async with aiomqtt.Client(
        harness.host, harness.port, identifier=f"watch-{uuid.uuid4().hex[:8]}"
    ) as client:
        await client.subscribe(f"{harness.prefix}/+/status", qos=1)
        await client.subscribe(f"{harness.prefix}/+/utterance", qos=1)
        async for message in client.messages:
            data = json.loads(bytes(message.payload))
            watcher.messages.append((message.topic.value, data, bool(message.retain)))
            watcher.changed.set()


@contextlib.asynccontextmanager
async def watching(harness: Harness) -> AsyncIterator[Watcher]:
    watcher = Watcher()
    task = asyncio.create_task(watch(harness, watcher))
    await asyncio.sleep(0.3)  # subscribed
    try:
        yield watcher
    finally:
        task.cancel()


def server_of(watcher: Watcher, session: str) -> str:
    accepted = watcher.statuses(session, "accepted")
    assert len(accepted) == 1, f"{session}: {len(accepted)} servers accepted it"
    check("stream_status", accepted[0])
    return str(accepted[0]["server"])


async def test_two_servers_share_four_sessions_each_in_order_from_one_server(
    harness: Harness, speech: Path
) -> None:
    await harness.start_servers("A", "B")
    sessions = [f"s{i}-{uuid.uuid4().hex[:6]}" for i in range(4)]
    async with watching(harness) as watcher:
        outcomes = await asyncio.gather(*(harness.stream(speech, s) for s in sessions))
        await watcher.wait_for(lambda: all(watcher.statuses(s, "ended") for s in sessions))
        servers = {}
        for session, (code, results, stderr) in zip(sessions, outcomes, strict=True):
            assert code == 0, stderr
            assert f"session {session} ended (eof): {TURNS} results" in stderr
            assert [r["seq"] for r in results] == list(range(TURNS))
            assert {r["session"] for r in results} == {session}
            assert [r["seq"] for r in watcher.results(session)] == list(range(TURNS))
            servers[session] = server_of(watcher, session)
            assert f"to {servers[session]}" in stderr
            ended = watcher.statuses(session, "ended")
            assert len(ended) == 1 and ended[0]["server"] == servers[session]
            assert ended[0]["stats"]["results"] == TURNS
            assert ended[0]["stats"]["audio_dropped"] == 0
        assert set(servers.values()) == {"A", "B"}, servers  # the broker shares them out
    for name in ("A", "B"):
        assert harness.servers[name].poll() is None, harness.log(name)


async def test_killing_one_server_leaves_the_other_sessions_untouched(
    harness: Harness, speech: Path
) -> None:
    await harness.start_servers("A", "B")
    sessions = [f"k{i}-{uuid.uuid4().hex[:6]}" for i in range(4)]
    async with watching(harness) as watcher:
        streams = [asyncio.create_task(harness.stream(speech, s)) for s in sessions]
        await watcher.wait_for(lambda: all(watcher.statuses(s, "accepted") for s in sessions))
        servers = {s: server_of(watcher, s) for s in sessions}
        assert set(servers.values()) == {"A", "B"}, servers
        await asyncio.sleep(2.0)  # mid-run: speech is still arriving
        harness.servers["A"].send_signal(signal.SIGKILL)
        outcomes = dict(zip(sessions, await asyncio.gather(*streams), strict=True))
        for session, server in servers.items():
            code, results, stderr = outcomes[session]
            if server == "B":
                assert code == 0, stderr
                assert [r["seq"] for r in results] == list(range(TURNS))
                assert watcher.statuses(session, "ended")
            else:
                assert code == 3, stderr
                assert f"session {session} server lost" in stderr
                assert "went offline (connection lost)" in stderr
                assert [r["seq"] for r in results] == list(range(len(results)))
                lost = watcher.statuses(session, "offline")
                assert lost and lost[-1]["reason"] == "connection lost"
                assert not watcher.statuses(session, "ended")
    assert harness.servers["B"].poll() is None, harness.log("B")


async def test_a_dead_servers_sessions_are_taken_over_by_the_other(
    harness: Harness, speech: Path
) -> None:
    await harness.start_servers("A", "B")
    sessions = [f"t{i}-{uuid.uuid4().hex[:6]}" for i in range(4)]
    async with watching(harness) as watcher:
        streams = [
            asyncio.create_task(harness.stream(speech, s, "--takeover", "1")) for s in sessions
        ]
        await watcher.wait_for(lambda: all(watcher.statuses(s, "accepted") for s in sessions))
        servers = {s: server_of(watcher, s) for s in sessions}
        assert set(servers.values()) == {"A", "B"}, servers
        on_a = [s for s in sessions if servers[s] == "A"]
        await watcher.wait_for(lambda: any(watcher.results(s) for s in on_a))  # one resumes
        harness.servers["A"].send_signal(signal.SIGKILL)
        outcomes = dict(zip(sessions, await asyncio.gather(*streams), strict=True))
    for session, server in servers.items():
        code, results, stderr = outcomes[session]
        assert code == 0, stderr
        assert [r["seq"] for r in results] == list(range(TURNS)), stderr  # none lost, no repeat
        assert [r["utterance_seq"] for r in results] == list(range(TURNS))  # numbered on too
        starts = [r["start"] for r in results]
        assert starts == sorted(starts) and starts[-1] > 3.0  # the session's own clock
        if server == "A":
            assert "taken over 1 times" in stderr and "to B" in stderr
            accepted = watcher.statuses(session, "accepted")
            assert [a["server"] for a in accepted] == ["A", "B"]
        else:
            assert "taken over" not in stderr
    assert harness.servers["B"].poll() is None, harness.log("B")


def chunk(seq: int, ms: int = 20, value: int = 0) -> bytes:
    return encode_chunk(seq, np.full((16 * ms, 1), value, dtype=np.int16))


async def test_malformed_messages_get_errors_and_everything_goes_on(harness: Harness) -> None:
    await harness.start_servers("M", extra=("--max-sessions", "2", "--idle-timeout", "20"))
    topics = harness.topics
    m1, m2, m3 = (f"m{i}-{uuid.uuid4().hex[:6]}" for i in range(1, 4))
    async with watching(harness) as watcher:
        async with aiomqtt.Client(harness.host, harness.port, identifier="bad-client") as client:

            async def send(topic: str, payload: bytes) -> None:
                await client.publish(topic, payload, qos=1)

            def start(session: str, **overrides: Any) -> bytes:
                data = StartRequest(session, 16000, 1, False).to_dict()
                data.update(overrides)
                return encode_json(data)

            await send(topics.start, b"\x00\xff not json")  # no session id: logged only
            await send(topics.start, start("bad-rate", sample_rate=11025))
            await watcher.wait_for(lambda: watcher.statuses("bad-rate", "refused"))
            refused = watcher.statuses("bad-rate", "refused")[0]
            assert refused["code"] == "bad_start" and "sample_rate" in refused["reason"]

            await send(topics.start, start(m1))
            await send(topics.start, start(m2))
            await watcher.wait_for(
                lambda: watcher.statuses(m1, "accepted") and watcher.statuses(m2, "accepted")
            )
            await send(topics.start, start(m3))  # a third: beyond --max-sessions 2
            await send(topics.start, start(m1))  # already running
            await watcher.wait_for(
                lambda: watcher.statuses(m3, "refused") and watcher.statuses(m1, "refused")
            )
            assert watcher.statuses(m3, "refused")[0]["code"] == "full"
            assert watcher.statuses(m1, "refused")[0]["code"] == "duplicate_session"

            audio = topics.audio(m1)
            await send(audio, b"garbage")
            await send(audio, chunk(0)[:-1])  # half a sample
            await send(audio, chunk(0, ms=150))  # too long
            await send(audio, chunk(0))
            await send(audio, chunk(0))  # again
            await send(audio, chunk(3))  # 1 and 2 missing
            await send(topics.end(m1), b'{"protocol": 1}')
            for seq in range(50):  # m2 meanwhile: a second of good audio
                await send(topics.audio(m2), chunk(seq, value=100))
            await send(topics.end(m2), encode_json(EndRequest(m2, 49).to_dict()))
            await send(topics.end(m1), encode_json(EndRequest(m1, 3).to_dict()))
            await watcher.wait_for(
                lambda: watcher.statuses(m1, "ended") and watcher.statuses(m2, "ended")
            )
            assert harness.servers["M"].poll() is None, harness.log("M")

            m4 = f"m4-{uuid.uuid4().hex[:6]}"  # SIGTERM: the running session ends, then the server
            await send(topics.start, start(m4))
            await watcher.wait_for(lambda: watcher.statuses(m4, "accepted"))
            await send(topics.audio(m4), chunk(0))
            harness.servers["M"].send_signal(signal.SIGTERM)
            await watcher.wait_for(lambda: watcher.statuses(m4, "ended"))
            assert (
                watcher.statuses(m4, "ended")[0]["reason"] == "stopped: the server is shutting down"
            )
            assert await asyncio.to_thread(harness.servers["M"].wait, 30) == 0
        errors = watcher.statuses(m1, "error")
        for status in errors:
            check("stream_status", status)
        assert [e["code"] for e in errors] == [
            "bad_chunk",
            "wrong_size",
            "wrong_size",
            "late_chunk",
            "out_of_order",
            "bad_end",
        ]
        ended = watcher.statuses(m1, "ended")[0]
        assert ended["reason"] == "eof"
        assert ended["stats"]["audio_chunks"] == 2
        assert ended["stats"]["audio_rejected"] == 3
        assert ended["stats"]["audio_missing"] == 2
        assert not watcher.statuses(m2, "error")
        other = watcher.statuses(m2, "ended")[0]
        assert other["reason"] == "eof" and other["stats"]["audio_chunks"] == 50
    log = harness.log("M")
    assert "refused a start message: start message is not JSON" in log
    assert "emotrack serve: 3 sessions served, 3 refused" in log


def test_bench_serve_measures_every_session(tiny_checkpoint: Path, tmp_path: Path) -> None:
    require_mosquitto()
    out = tmp_path / "bench.json"
    done = run_emotrack(
        "bench",
        "serve",
        "--sessions",
        "2",
        "--batching",
        "on",
        "--turns",
        "1",
        "--checkpoint",
        str(tiny_checkpoint),
        "--json",
        str(out),
        timeout=TIMEOUT,
        OMP_NUM_THREADS="1",
    )
    assert done.returncode == 0, done.stderr
    (run,) = json.loads(out.read_text(encoding="utf-8"))
    assert (run["servers"], run["sessions"], run["expected"], run["refused"]) == (1, 2, 2, 0)
    # Every turn is a latency or a loss (a loaded machine may drop one past --max-delay: what the
    # benchmark measures, not what this test asserts); at least one arrives.
    assert len(run["latencies"]) + run["lost"] == 2 and run["latencies"]
    assert all(0.0 < latency < 30.0 for latency in run["latencies"])  # after the speech ended
    assert run["server_cpu"] > 0.0
    assert run["asr_batch"] >= 1.0 and run["unimse_batch"] >= 1.0  # from the server's summary
    assert "largest N within target" in done.stdout


def test_stream_to_no_broker_is_a_one_line_error(speech: Path) -> None:
    from realtime.mosquitto import free_port

    done = run_emotrack(
        "stream", str(speech), "--session", "nobroker", "--mqtt-port", str(free_port())
    )
    assert done.returncode == 2
    assert done.stderr.startswith("emotrack: error: cannot connect to MQTT broker at ")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--duration", "5"], "--duration is for --mic"),
        (["--duration", "-1"], "--duration: must be > 0 seconds"),
        (["--retries", "-1"], "--retries and --takeover must be >= 0"),
        (["--accept-timeout", "0"], "--accept-timeout: must be > 0 seconds"),
    ],
)
def test_stream_refuses_settings_it_cannot_keep_before_connecting(
    speech: Path, flags: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from realtime.mosquitto import free_port

    argv = ["stream", str(speech), "--session", "s", "--mqtt-port", str(free_port()), *flags]
    code = emotrack_in_process(*argv)
    err = capsys.readouterr().err
    assert code == 2 and says in err and "cannot connect" not in err, err


async def wait_for_log(harness: Harness, server: str, text: str, timeout: float = TIMEOUT) -> None:
    async with asyncio.timeout(timeout):
        while text not in harness.log(server):
            assert harness.servers[server].poll() is None, harness.log(server)
            await asyncio.sleep(0.1)


async def persistent_watcher(
    broker: MosquittoBroker, identifier: str, topic: str, into: list[dict[str, Any]], seconds: float
) -> None:
    """Read ``topic`` for ``seconds`` in a persistent session (QoS 1 messages published while it
    was away are kept for it by the broker, across a restart with persistence)."""
    async with aiomqtt.Client(
        broker.host, broker.port, identifier=identifier, clean_session=False
    ) as client:
        await client.subscribe(topic, qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                async for message in client.messages:
                    into.append(json.loads(bytes(message.payload)))


async def test_the_server_reconnects_after_a_broker_restart(
    mosquitto: MosquittoBroker, tiny_checkpoint: Path, tmp_path: Path, speech: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}/emotrack"
    harness = Harness(mosquitto.host, mosquitto.port, prefix, tmp_path, tiny_checkpoint)
    watcher_id = f"watch-{uuid.uuid4().hex[:8]}"
    statuses: list[dict[str, Any]] = []
    try:
        await harness.start_servers("R")
        await persistent_watcher(mosquitto, watcher_id, f"{prefix}/+/status", statuses, 0.2)
        before = f"b-{uuid.uuid4().hex[:6]}"
        stream = asyncio.create_task(harness.stream(speech, before))
        await wait_for_log(harness, "R", f"session {before} accepted")
        await asyncio.sleep(1.5)  # mid-session
        mosquitto.stop()
        await asyncio.sleep(1.0)
        await mosquitto.astart()
        code, _results, stderr = await stream
        assert code == 3, stderr
        assert f"session {before} broker lost" in stderr, stderr  # not "server lost"
        await wait_for_log(harness, "R", "reconnected to the MQTT broker")
        after = f"a-{uuid.uuid4().hex[:6]}"
        code, results, stderr = await harness.stream(speech, after)
        assert code == 0, stderr + harness.log("R")
        assert [r["seq"] for r in results] == list(range(TURNS))
        await persistent_watcher(mosquitto, watcher_id, f"{prefix}/+/status", statuses, 2.0)
        ended = {s["session"]: s for s in statuses if s.get("state") == "ended"}
        assert ended[before]["reason"] == "broker lost", statuses
        assert ended[after]["reason"] == "eof"
        assert harness.servers["R"].poll() is None
    finally:
        harness.stop_servers()
    assert harness.servers["R"].returncode == 0, harness.log("R")


def children(pid: int) -> dict[int, str]:
    """The processes whose parent is ``pid``: their command lines (Linux /proc)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found[int(stat.parent.name)] = (stat.parent / "cmdline").read_text()
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped by its parent, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_bench_serve_leaves_no_process_behind_when_stopped(
    tiny_checkpoint: Path, sig: signal.Signals
) -> None:
    require_mosquitto()
    bench = subprocess.Popen(
        emotrack_command(
            "bench",
            "serve",
            "--sessions",
            "2",
            "--servers",
            "2",
            "--batching",
            "on",
            "--turns",
            "4",
            "--checkpoint",
            str(tiny_checkpoint),
        ),
        cwd=REPO,
        env=emotrack_env(OMP_NUM_THREADS="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        spawned: dict[int, str] = {}
        deadline = time.monotonic() + TIMEOUT
        while sum("serve" in cmd for cmd in spawned.values()) < 2:  # the broker and 2 servers
            assert bench.poll() is None, bench.communicate()
            assert time.monotonic() < deadline, spawned
            spawned.update(children(bench.pid))
            time.sleep(0.1)
        assert any("mosquitto" in cmd for cmd in spawned.values()), spawned
        time.sleep(8.0)  # the servers load their models; the sessions may be running
        bench.send_signal(sig)
        _stdout, stderr = bench.communicate(timeout=TIMEOUT)
        assert bench.returncode == 130, stderr
        assert b"interrupted; servers and broker stopped" in stderr
        assert not [pid for pid in spawned if alive(pid)], spawned
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()


@pytest.mark.parametrize(
    ("json_arg", "message"),
    [
        ("{tmp}/missing/x.json", "no folder {tmp}/missing to write x.json in"),
        ("{tmp}", "{tmp} is a folder, not a file"),
    ],
)
def test_bench_serve_checks_its_json_file_before_it_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], json_arg: str, message: str
) -> None:
    from rt_support import emotrack_in_process

    args = ["bench", "serve", "--json", json_arg.format(tmp=tmp_path)]
    assert emotrack_in_process(*args) == 2
    assert f"argument --json: {message.format(tmp=tmp_path)}" in capsys.readouterr().err


async def test_a_second_client_of_a_running_session_leaves_it_alone(
    harness: Harness, speech: Path
) -> None:
    """The broker keeps one connection per client id, and a stream's id is its session's: a
    second `emotrack stream` of a running session asks first and is refused, instead of cutting
    the first one off (whose last will would end the session)."""
    await harness.start_servers("A")
    session = f"dup-{uuid.uuid4().hex[:6]}"
    async with watching(harness) as watcher:
        first = asyncio.create_task(harness.stream(speech, session))
        await watcher.wait_for(lambda: watcher.statuses(session, "online"))
        code, results, stderr = await harness.stream(speech, session)
        assert code != 0 and results == []
        assert f"session {session} is being streamed by another client now" in stderr
        code, results, stderr = await first
        assert code == 0, stderr
        assert [r["seq"] for r in results] == list(range(TURNS))


async def test_ctrl_c_on_stream_ends_the_session_and_waits_for_its_results(
    harness: Harness, speech: Path
) -> None:
    """The first SIGINT stops the audio and sends the end (reason stopped) at once: the server
    ends the session long before its idle timeout, the client prints what came back and exits
    130; the same session id can be streamed again right away."""
    await harness.start_servers("A")
    session = f"int-{uuid.uuid4().hex[:6]}"
    async with watching(harness) as watcher:
        process = await harness.start_stream(speech, session, "--results", "json")
        assert process.stdout is not None and process.stderr is not None
        first = await asyncio.wait_for(process.stdout.readline(), TIMEOUT)
        process.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        rest, stderr = await asyncio.wait_for(process.communicate(), TIMEOUT)
        results = [json.loads(line) for line in (first + rest).decode().splitlines()]
        assert process.returncode == 130, stderr.decode()
        assert f"session {session} ended (stopped)" in stderr.decode()
        await watcher.wait_for(lambda: watcher.statuses(session, "ended"), timeout=20.0)
        assert time.monotonic() - interrupted < 15.0  # not the 30 s idle timeout
        ended = watcher.statuses(session, "ended")
        assert len(ended) == 1 and ended[0]["reason"] == "stopped", ended
        check("stream_status", ended[0])
        assert results and [r["seq"] for r in results] == list(range(len(results)))
        assert [r["seq"] for r in watcher.results(session)] == [r["seq"] for r in results]
        assert ended[0]["stats"]["results"] == len(results)
        code, again, stderr_again = await harness.stream(speech, session)  # not refused
        assert code == 0, stderr_again
        assert len(again) == TURNS


async def test_ctrl_c_on_stream_before_a_server_took_it_stops_at_once(
    harness: Harness, speech: Path
) -> None:
    """No server answers the start message: Ctrl-C does not wait out --accept-timeout; the
    stream exits 130 at once with one line, and publishes nothing after the start message."""
    session = f"wait-{uuid.uuid4().hex[:6]}"
    seen: list[str] = []
    async with aiomqtt.Client(harness.host, harness.port, identifier=f"w-{session}") as watcher:
        await watcher.subscribe(f"{harness.prefix}/#", qos=1)
        process = await harness.start_stream(speech, session, "--accept-timeout", "60")
        try:
            async with asyncio.timeout(TIMEOUT):
                async for message in watcher.messages:
                    seen.append(message.topic.value)
                    if message.topic.value == harness.topics.start:
                        break
            process.send_signal(signal.SIGINT)
            stdout, stderr = await asyncio.wait_for(process.communicate(), 15.0)
            with contextlib.suppress(TimeoutError):  # anything it might still publish
                async with asyncio.timeout(0.5):
                    async for message in watcher.messages:
                        seen.append(message.topic.value)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert process.returncode == 130, stderr.decode()
    assert stdout == b""
    assert stderr.decode().splitlines() == [
        f"emotrack stream: session {session} stopped (before a server took the session): "
        "0 results, 0 errors, 0 chunks sent"
    ]
    assert seen[-1] == harness.topics.start  # no audio, no end message after it


@pytest.mark.parametrize(
    ("command", "flags", "says"),
    [
        ("serve", ["--server-id", "#"], "--server-id '#': one MQTT topic level"),
        ("serve", ["--server-id", "x+y"], "--server-id 'x+y': one MQTT topic level"),
        ("serve", ["--server-id", "a/b"], "--server-id 'a/b': one MQTT topic level"),
        ("serve", ["--server-id", "a b"], "--server-id 'a b': one MQTT topic level"),
        ("serve", ["--server-id", ""], "--server-id '': one MQTT topic level"),
        ("serve", ["--group", "g/h"], "--group 'g/h': one MQTT topic level"),
        ("serve", ["--mqtt-prefix", "$SYS"], "MQTT prefix '$SYS' must not start with '$'"),
        ("stream", ["--mqtt-prefix", "$x/y"], "MQTT prefix '$x/y' must not start with '$'"),
    ],
)
def test_ids_and_prefixes_that_cannot_be_topics_are_refused_before_connecting(
    speech: Path, command: str, flags: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from realtime.mosquitto import free_port

    where = ["--session", "s", str(speech)] if command == "stream" else []
    code = emotrack_in_process(command, *where, "--mqtt-port", str(free_port()), *flags)
    err = capsys.readouterr().err
    assert code == 2 and says in err and "cannot connect" not in err, err
    assert len(err.strip().splitlines()) == 1, err


async def test_a_second_server_with_the_same_id_is_refused(harness: Harness, speech: Path) -> None:
    """It would say offline for the first one when it stops: it refuses to start instead, in one
    line, and leaves the first one's retained online state alone."""
    await harness.start_servers("A")
    await wait_for_log(harness, "A", "emotrack serve: ready as A, sessions on ")  # once online
    second = await asyncio.create_subprocess_exec(
        *emotrack_command(
            "serve",
            *harness.mqtt_args(),
            "--server-id",
            "A",
            "--checkpoint",
            str(harness.checkpoint),
            "--mqtt-spool",
            "",
        ),
        cwd=REPO,
        env=emotrack_env(OMP_NUM_THREADS="1"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(second.communicate(), TIMEOUT)
    assert second.returncode == 2, stderr.decode()
    assert stderr.decode().strip() == (
        "emotrack: error: server id A is online already (another server): give each server "
        "its own --server-id"
    )
    async with aiomqtt.Client(harness.host, harness.port, identifier=f"w-{uuid.uuid4().hex}") as c:
        await c.subscribe(harness.topics.server("A"), qos=1)
        async with asyncio.timeout(10):
            message = await anext(aiter(c.messages))
    assert json.loads(bytes(message.payload))["state"] == "online"
    code, results, stderr_text = await harness.stream(speech, f"one-{uuid.uuid4().hex[:6]}")
    assert code == 0 and len(results) == TURNS, stderr_text


async def test_a_second_signal_aborts_the_server_at_once(harness: Harness, speech: Path) -> None:
    """The first SIGTERM lets the running session finish what it received (here 30 utterances
    sent at once, half a minute of work); a second signal aborts: the server exits 130 at once,
    the session ends failed, and the server's retained state says offline (its id is free to
    start again)."""
    from realtime.serve.audio_input import read_pcm
    from realtime.serve.retained import retained_online

    # every utterance waits 1 s for others to join its Whisper batch (none come): finishing what
    # the session holds takes a second per utterance, whatever the machine
    slow = ("--asr-batch-wait", "1", "--asr-queue", "1000", "--max-delay", "900")
    await harness.start_servers("X", extra=("--max-backlog", "900", *slow))
    pcm, rate = read_pcm(speech)
    audio = np.concatenate([pcm[:, :1]] * 10)
    frames = rate // 10  # 100 ms chunks
    session = f"abort-{uuid.uuid4().hex[:6]}"
    topics = harness.topics
    server = harness.servers["X"]
    mqtt = aiomqtt.Client(harness.host, harness.port, identifier=session)
    async with watching(harness) as watcher, mqtt as client:
        start = StartRequest(session, rate, 1, False)
        await client.publish(topics.start, encode_json(start.to_dict()), qos=1)
        await watcher.wait_for(lambda: watcher.statuses(session, "accepted"))
        for seq, offset in enumerate(range(0, len(audio) - frames + 1, frames)):
            piece = audio[offset : offset + frames]
            await client.publish(topics.audio(session), encode_chunk(seq, piece), qos=1)
        await watcher.wait_for(lambda: watcher.results(session))  # working through it
        server.send_signal(signal.SIGTERM)
        await wait_for_log(harness, "X", "stopping: finishing 1 sessions")
        server.send_signal(signal.SIGINT)  # either signal counts
        aborted = time.monotonic()
        code = await asyncio.to_thread(server.wait, 30)
        took = time.monotonic() - aborted
        await watcher.wait_for(lambda: watcher.statuses(session, "ended"), timeout=10.0)
        state = await retained_online(client, topics.server("X"), 5.0)
    log = harness.log("X")
    assert code == 130 and took < 10.0, log
    assert "emotrack: aborted" in log and "Traceback" not in log, log
    (ended,) = watcher.statuses(session, "ended")
    check("stream_status", ended)
    assert ended["reason"] == "failed: the server was aborted" and ended["code"] == "failed"
    assert state is False  # not online: the same id may start again
