"""``emotrack bench serve``: real-time sessions against one or more ``emotrack serve`` processes.

A conversation with known speech end times is synthesised (espeak-ng, the first ``--turns`` of
``emotrack bench latency``'s script). A Mosquitto broker is started on a free loopback port; for
each number of servers and each batching mode, that many ``emotrack serve`` processes are started,
and for each number of sessions N, N stream clients (in this process) play the conversation at
real time, their starts spread over ``--stagger`` seconds. For every result: true end of speech ->
result received (the client's clock); results lost (turns without a result); the servers' CPU use
(user + system time over the run's wall time, from /proc). Each server's Whisper gets the
machine's cores divided by the number of servers (``--asr-threads``). The VAD hangover is a
configured wait, so p95 minus the hangover is what the 1.0 s target is about.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from realtime.cli.exits import EXIT_INTERRUPTED
from realtime.config import Config, ConfigError
from realtime.mosquitto import LOOPBACK
from realtime.mqtt_options import MqttOptions
from realtime.serve.client import StreamClient, StreamOutcome, StreamSettings, paced_chunks
from realtime.serve.protocol import StartRequest
from unimse.argtypes import AT_LEAST_ONE, NON_NEGATIVE
from unimse.synth import Conversation, SpokenLine

logger = logging.getLogger(__name__)

TARGET_P95_S = 1.0
# The counts in the line `emotrack serve` prints when it stops (realtime/serve/cli.py).
SUMMARY_ASR = re.compile(r"Whisper: (\d+) batches for (\d+) utterances")
SUMMARY_UNIMSE = re.compile(r"UniMSE: (\d+) forward passes for (\d+) utterances")


def add_bench_serve(bench_commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``emotrack bench serve`` (its handler is set by the caller)."""
    parser = bench_commands.add_parser(
        "serve",
        help="sessions at real time against one or more `emotrack serve` processes",
        description=(__doc__ or "").split("\n\n", 1)[1].replace("\n", " "),
    )
    group = parser.add_argument_group("benchmark")
    group.add_argument(
        "--sessions",
        type=_int_list,
        default=(1, 2, 4),
        metavar="N,N",
        help="numbers of concurrent sessions (default 1,2,4)",
    )
    group.add_argument(
        "--servers",
        type=_int_list,
        default=(1,),
        metavar="N,N",
        help="numbers of server processes (default 1)",
    )
    group.add_argument(
        "--batching",
        type=lambda s: tuple(dict.fromkeys(s.split(","))),
        default=("on", "off"),
        metavar="on,off",
        help="cross-session batching modes to measure (default on,off)",
    )
    group.add_argument(
        "--turns", type=AT_LEAST_ONE, default=4, metavar="K", help="turns of the script (default 4)"
    )
    group.add_argument(
        "--stagger",
        type=NON_NEGATIVE,
        default=3.0,
        metavar="S",
        help="spread the sessions' starts over S seconds (default 3)",
    )
    group.add_argument(
        "--chunk-ms",
        type=int,
        choices=(20, 40, 60, 80, 100),
        default=20,
        help="audio per message (default 20)",
    )
    group.add_argument(
        "--asr-threads",
        type=AT_LEAST_ONE,
        metavar="N",
        help="Whisper threads per server (default: CPU cores / servers, at most 4)",
    )
    group.add_argument(
        "--json", type=_json_target, metavar="FILE", help="also write every number to FILE"
    )
    return parser


def _json_target(text: str) -> Path:
    """A file the numbers can be written to once the benchmark ends: checked before it starts."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder, not a file")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"no folder {path.parent} to write {path.name} in")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise argparse.ArgumentTypeError(f"cannot write {path}: permission denied")
    return path


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give numbers separated by commas") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: numbers must be at least 1")
    return values


@dataclass
class RunResult:
    """One measured run: ``sessions`` clients against ``servers`` processes."""

    servers: int
    sessions: int
    batching: bool
    expected: int
    latencies: list[float] = field(default_factory=list)
    lost: int = 0
    refused: int = 0
    server_cpu: float = 0.0  # cores busy, summed over the servers (1.0 = one core all the time)
    client_cpu: float = 0.0  # cores busy in this process (the stream clients and the broker's peer)
    wall: float = 0.0
    audio_dropped: int = 0
    asr_batch: float | None = None  # Whisper: utterances per batch, over the servers
    unimse_batch: float | None = None  # UniMSE: utterances per forward pass, over the servers

    def percentile(self, q: float) -> float | None:
        return float(np.percentile(self.latencies, q)) if self.latencies else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["latencies"] = [round(x, 4) for x in self.latencies]
        data["p50"], data["p95"] = self.percentile(50), self.percentile(95)
        data["max"] = max(self.latencies, default=None)
        return data


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _line_of(result: dict[str, Any], lines: Sequence[SpokenLine]) -> int | None:
    """The script line the result's utterance overlaps most, if any."""
    best, best_overlap = None, 0.0
    for index, line in enumerate(lines):
        overlap = min(result["end"], line.end) - max(result["start"], line.start)
        if overlap > best_overlap:
            best, best_overlap = index, overlap
    return best


def asr_threads(servers: int) -> int:
    """Whisper threads per server: the machine's cores shared out (at most 4, as by default)."""
    return max(1, min(4, (os.cpu_count() or 1) // servers))


def _die_with_parent() -> None:
    """In a server's process before it runs: SIGTERM it when the benchmark dies, however it dies
    (Linux; elsewhere the benchmark's own cleanup is all there is)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


class ServerGroup:
    """``count`` ``emotrack serve`` processes on the broker, started and stopped together."""

    def __init__(
        self,
        count: int,
        *,
        port: int,
        prefix: str,
        batching: bool,
        workdir: Path,
        config_args: list[str],
        threads: int | None = None,
    ) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs = [workdir / f"serve-{prefix}-{index}.log" for index in range(count)]
        for index, log in enumerate(self.logs):
            with open(log, "wb") as handle:
                self.processes.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "realtime",
                            "serve",
                            "--mqtt-host",
                            LOOPBACK,
                            "--mqtt-port",
                            str(port),
                            "--mqtt-prefix",
                            prefix,
                            "--mqtt-spool",
                            "",
                            "--server-id",
                            f"bench-{index}",
                            "--max-sessions",
                            "1000",
                            *([] if batching else ["--no-cross-batching"]),
                            "--asr-threads",
                            str(threads or asr_threads(count)),
                            *config_args,
                        ],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=handle,
                        preexec_fn=_die_with_parent,
                    )
                )

    def cpu_seconds(self) -> float:
        return sum(_cpu_seconds(p.pid) for p in self.processes)

    def check(self) -> None:
        for process, log in zip(self.processes, self.logs, strict=True):
            if process.poll() is not None:
                tail = log.read_text(encoding="utf-8", errors="replace")[-1500:]
                raise RuntimeError(f"emotrack serve exited with {process.returncode}:\n{tail}")

    def stop(self) -> list[str]:
        """Stop every server; the summary line each printed (batches, mean batch sizes)."""
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        lines = [log.read_text(encoding="utf-8", errors="replace") for log in self.logs]
        return [text.strip().splitlines()[-1] if text.strip() else "" for text in lines]


async def _wait_online(mqtt: MqttOptions, group: ServerGroup) -> None:
    import aiomqtt

    online: set[str] = set()
    async with aiomqtt.Client(LOOPBACK, mqtt.port, identifier=f"bench-{uuid.uuid4().hex[:8]}") as c:
        await c.subscribe(f"{mqtt.prefix}/servers/+", qos=1)
        async with asyncio.timeout(120):
            async for message in c.messages:
                data = json.loads(bytes(message.payload))
                if data.get("state") == "online":
                    online.add(data["server"])
                if len(online) >= len(group.processes):
                    return
                group.check()


async def _session(
    mqtt: MqttOptions, pcm: np.ndarray, name: str, delay: float, chunk_ms: int
) -> StreamOutcome:
    await asyncio.sleep(delay)
    start = StartRequest(name, 16_000, 1, False, client="emotrack bench serve")
    settings = StreamSettings(retries=0, accept_timeout=60, probe_timeout=0)  # the ids are new
    client = StreamClient(mqtt, start, settings)
    return await client.run(paced_chunks(pcm, 16_000, chunk_ms=chunk_ms))


async def measure(
    mqtt: MqttOptions,
    conversation: Conversation,
    *,
    servers: ServerGroup,
    sessions: int,
    batching: bool,
    stagger: float,
    chunk_ms: int = 20,
) -> RunResult:
    pcm = np.clip(np.round(conversation.audio * 32767), -32768, 32767).astype(np.int16)
    pcm = pcm.reshape(len(pcm), 1) if pcm.ndim == 1 else pcm
    lines = conversation.lines
    run = RunResult(len(servers.processes), sessions, batching, expected=sessions * len(lines))
    cpu_before, started = servers.cpu_seconds(), time.monotonic()
    client_before = time.process_time()
    outcomes = await asyncio.gather(
        *(
            _session(mqtt, pcm, f"bench-{uuid.uuid4().hex[:8]}", i * stagger / sessions, chunk_ms)
            for i in range(sessions)
        )
    )
    run.wall = time.monotonic() - started
    run.server_cpu = (servers.cpu_seconds() - cpu_before) / run.wall
    run.client_cpu = (time.process_time() - client_before) / run.wall
    for outcome in outcomes:
        if outcome.state == "refused":
            run.refused += 1
        stats = outcome.stats or {}
        run.audio_dropped += int(stats.get("audio_dropped", 0))
        seen: set[int] = set()
        for result, arrived in zip(outcome.results, outcome.arrivals, strict=True):
            line = _line_of(result, lines)
            if line is None or line in seen or outcome.started_at is None:
                continue
            seen.add(line)
            run.latencies.append(arrived - (outcome.started_at + lines[line].end))
        run.lost += len(lines) - len(seen)
    return run


def mean_batches(summaries: Sequence[str]) -> tuple[float | None, float | None]:
    """Whisper's and UniMSE's mean batch over the servers, from their summary lines."""
    means = []
    for pattern in (SUMMARY_ASR, SUMMARY_UNIMSE):
        found = [pattern.search(line) for line in summaries]
        calls = sum(int(m.group(1)) for m in found if m)
        items = sum(int(m.group(2)) for m in found if m)
        means.append(items / calls if calls else None)
    return means[0], means[1]


def render(runs: Sequence[RunResult], hangover: float) -> str:
    out = [
        f"{'servers':>7} {'batching':>8} {'sessions':>8} {'p50 s':>7} {'p95 s':>7} "
        f"{'p95-hang':>8} {'max s':>7} {'lost':>7} {'refused':>7} {'srv CPU':>7} {'cli CPU':>7} "
        f"{'asr bat':>7} {'emo bat':>7}"
    ]
    for run in runs:
        p50, p95 = run.percentile(50), run.percentile(95)
        fmt = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
        out.append(
            f"{run.servers:>7} {'on' if run.batching else 'off':>8} {run.sessions:>8} "
            f"{fmt(p50):>7} {fmt(p95):>7} {fmt(None if p95 is None else p95 - hangover):>8} "
            f"{fmt(max(run.latencies, default=None)):>7} {run.lost:>3}/{run.expected:<3} "
            f"{run.refused:>7} {run.server_cpu:>7.2f} {run.client_cpu:>7.2f} "
            f"{fmt(run.asr_batch):>7} {fmt(run.unimse_batch):>7}"
        )
    out.append(
        f"(VAD hangover {hangover:g} s; target p95 - hangover <= {TARGET_P95_S:.1f} s; "
        "asr/emo bat: mean utterances per Whisper batch / UniMSE forward pass)"
    )
    for servers in sorted({r.servers for r in runs}):
        for batching in (True, False):
            good = [
                r.sessions
                for r in runs
                if r.servers == servers
                and r.batching == batching
                and r.lost == 0
                and (p95 := r.percentile(95)) is not None
                and p95 - hangover <= TARGET_P95_S
            ]
            if any(r.servers == servers and r.batching == batching for r in runs):
                out.append(
                    f"{servers} server(s), batching {'on' if batching else 'off'}: largest N "
                    f"within target: {max(good) if good else 'none'}"
                )
    return "\n".join(out)


def _config_args(args: argparse.Namespace) -> list[str]:
    """The model options given to ``bench serve``, for the servers' command lines."""
    passed = []
    for flag, key in (
        ("--checkpoint", "inference.checkpoint"),
        ("--asr-model", "asr.model"),
        ("--hangover", "vad.hangover"),
    ):
        value = getattr(args, key, None)
        if value is not None:
            passed += [flag, str(value)]
    if getattr(args, "config", None):
        passed += ["--config", args.config]
    return passed


async def _bench(args: argparse.Namespace, config: Config, workdir: Path) -> list[RunResult]:
    from realtime.bench import BENCH_TURNS, mosquitto_broker, prepare_conversation

    if not 1 <= args.turns <= len(BENCH_TURNS):
        raise ConfigError(f"--turns must be in 1..{len(BENCH_TURNS)}")
    conversation, _ = await asyncio.to_thread(
        prepare_conversation, BENCH_TURNS[: args.turns], workdir
    )
    runs: list[RunResult] = []
    task = asyncio.current_task()
    assert task is not None
    # SIGTERM as Ctrl-C: the run is cancelled, its servers and the broker stopped on the way out.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    async with mosquitto_broker(workdir) as port:
        for count in args.servers:
            for mode in args.batching:
                for sessions in args.sessions:  # fresh servers: each run's batch sizes its own
                    run = await _measure_fresh(
                        args, port, conversation, workdir, count, mode == "on", sessions
                    )
                    print(render([run], config.vad.hangover).splitlines()[1], flush=True)
                    runs.append(run)
    return runs


async def _measure_fresh(
    args: argparse.Namespace,
    port: int,
    conversation: Conversation,
    workdir: Path,
    count: int,
    batching: bool,
    sessions: int,
) -> RunResult:
    """One run against ``count`` servers started for it (and stopped after it)."""
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    mqtt = MqttOptions(host=LOOPBACK, port=port, prefix=prefix, spool_dir="")
    group = ServerGroup(
        count,
        port=port,
        prefix=prefix,
        batching=batching,
        workdir=workdir,
        config_args=_config_args(args),
        threads=args.asr_threads,
    )
    try:
        await _wait_online(mqtt, group)
        run = await measure(
            mqtt,
            conversation,
            servers=group,
            sessions=sessions,
            batching=batching,
            stagger=args.stagger,
            chunk_ms=args.chunk_ms,
        )
    finally:
        summaries = group.stop()
    run.asr_batch, run.unimse_batch = mean_batches(summaries)
    return run


def run_bench_serve(args: argparse.Namespace, config: Config) -> int:
    bad = [mode for mode in args.batching if mode not in ("on", "off")]
    if bad:
        raise ConfigError(f"--batching takes on and/or off, not {bad[0]!r}")
    print(
        f"emotrack bench serve: {os.cpu_count()} CPUs, load average "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())} before the run",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="emotrack-bench-serve-") as scratch:
        try:
            runs = asyncio.run(_bench(args, config, Path(scratch)))
        except (KeyboardInterrupt, asyncio.CancelledError):
            print("emotrack bench serve: interrupted; servers and broker stopped", file=sys.stderr)
            return EXIT_INTERRUPTED
    print(render(runs, config.vad.hangover))
    if args.json:
        try:
            args.json.write_text(
                json.dumps([run.to_dict() for run in runs], indent=1) + "\n", encoding="utf-8"
            )
        except OSError as exc:  # the table above stands; only the file is lost
            raise ConfigError(f"cannot write {args.json}: {exc.strerror or exc}") from None
    return 0
