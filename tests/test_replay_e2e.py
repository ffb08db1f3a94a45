"""Acceptance: replaying an espeak-ng conversation through the whole pipeline, via the CLI.

Each test synthesises the same five-turn, two-voice script with known pauses and runs the real
command (`python -m realtime`, i.e. `emotrack`) with the real Whisper tiny.en and a tiny
random-weight UniMSE checkpoint (the ``tiny_checkpoint`` fixture): the checks are about
segmentation, transcription and the message format, not about emotions.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from pathlib import Path

import pytest
from rt_support import (
    REPO,
    SCRIPT,
    emotrack_command,
    emotrack_env,
    make_conversation,
    replay_to_jsonl,
    run_emotrack,
    word_error_rate,
)

from realtime.serialize import validate
from unimse.synth import Conversation, parse_script

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed"),
]

TURNS = parse_script(SCRIPT)


@pytest.fixture(scope="module")
def conversation(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Conversation]:
    path = tmp_path_factory.mktemp("conversation") / "conversation.wav"
    return path, make_conversation(path)


def read_results(path: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def check_against_script(results: list[dict], conversation: Conversation) -> None:  # type: ignore[type-arg]
    assert len(results) == len(TURNS), [r["text"] for r in results]
    for message in results:
        validate(message)
    reference = " ".join(turn.text for turn in TURNS)
    hypothesis = " ".join(r["text"] for r in results)
    assert word_error_rate(reference, hypothesis) <= 0.25, hypothesis
    for result, line in zip(results, conversation.lines, strict=True):
        # True speech times, within a few VAD frames.
        assert abs(result["start"] - line.start) < 0.3
        assert abs(result["end"] - line.end) < 0.3
    assert [r["seq"] for r in results] == list(range(len(TURNS)))


def test_replay_max_speed_to_json_lines(
    conversation: tuple[Path, Conversation], tiny_checkpoint: Path, tmp_path: Path
) -> None:
    audio, spoken = conversation
    done, results = replay_to_jsonl(audio, tiny_checkpoint, tmp_path / "out.jsonl")
    check_against_script(results, spoken)
    assert {r["speaker"] for r in results} == {"you"}  # mono: one speaker
    assert all(r["modalities"] == ["text"] for r in results)
    assert f"{len(TURNS)} utterances, {len(TURNS)} results" in done.stderr


def test_replay_to_mqtt_delivers_every_result_in_order(
    conversation: tuple[Path, Conversation],
    tiny_checkpoint: Path,
    mosquitto_broker: tuple[str, int],
) -> None:
    import aiomqtt

    host, port = mosquitto_broker
    audio, spoken = conversation
    session = f"e2e-{uuid.uuid4().hex[:8]}"
    topic = f"emotrack/{session}"

    async def scenario() -> tuple[list[dict], dict, str]:  # type: ignore[type-arg]
        received: list[dict] = []  # type: ignore[type-arg]
        async with aiomqtt.Client(host, port, identifier=f"sub-{session}") as client:
            await client.subscribe(f"{topic}/utterance", qos=1)
            process = await asyncio.create_subprocess_exec(
                *emotrack_command(
                    "replay",
                    str(audio),
                    "--speed",
                    "max",
                    "--sink",
                    "mqtt",
                    "--mqtt-host",
                    host,
                    "--mqtt-port",
                    str(port),
                    "--session",
                    session,
                    "--checkpoint",
                    str(tiny_checkpoint),
                ),
                cwd=REPO,
                env=emotrack_env(),
                stderr=asyncio.subprocess.PIPE,
            )

            async def collect() -> None:
                async for message in client.messages:
                    received.append(json.loads(bytes(message.payload)))  # type: ignore[arg-type]
                    if len(received) == len(TURNS):
                        return

            _, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
            assert process.returncode == 0, stderr.decode()
            await asyncio.wait_for(collect(), timeout=10)
        # A new subscriber gets the retained status right away.
        async with aiomqtt.Client(host, port, identifier=f"late-{session}") as late:
            await late.subscribe(f"{topic}/status", qos=1)
            status_message = await asyncio.wait_for(anext(aiter(late.messages)), timeout=10)
            retained = status_message.retain
            status = json.loads(bytes(status_message.payload))  # type: ignore[arg-type]
        assert retained
        return received, status, stderr.decode()

    results, status, _ = asyncio.run(scenario())
    check_against_script(results, spoken)
    assert {r["session"] for r in results} == {session}
    assert status["state"] == "offline" and status["session"] == session
    assert status["stats"]["results"] == len(TURNS)


def test_record_then_replay_gives_the_same_utterances(
    conversation: tuple[Path, Conversation], tiny_checkpoint: Path, tmp_path: Path
) -> None:
    audio, _ = conversation
    record = tmp_path / "session"
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    common = [
        "--speed",
        "max",
        "--sink",
        "jsonl",
        "--checkpoint",
        str(tiny_checkpoint),
        "--hangover",
        "0.5",
    ]
    done = run_emotrack(
        "replay", str(audio), *common, "--output", str(first), "--record", str(record)
    )
    assert done.returncode == 0, done.stderr
    manifest = json.loads((record / "manifest.json").read_text())
    assert manifest["complete"] and manifest["vad"]["hangover"] == 0.5
    assert (record / "audio.wav").is_file() and len(manifest["utterances"]) == len(TURNS)
    recorded = read_results(record / "results.jsonl")
    assert [r["text"] for r in recorded] == [r["text"] for r in read_results(first)]
    # Replayed without --hangover: the manifest's VAD options apply.
    done = run_emotrack("replay", str(record), *common[:-2], "--output", str(second))
    assert done.returncode == 0, done.stderr

    def utterances(path: Path) -> list[tuple]:  # type: ignore[type-arg]
        return [(r["speaker"], r["start"], r["end"], r["text"]) for r in read_results(path)]

    assert utterances(second) == utterances(first)
    assert len(utterances(first)) == len(TURNS)


def test_stereo_call_recording_one_speaker_per_channel(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    audio = tmp_path / "call.flac"
    spoken = make_conversation(audio, stereo=True)
    _, found = replay_to_jsonl(
        audio,
        tiny_checkpoint,
        tmp_path / "call.jsonl",
        "--channels-as-speakers",
        "--speakers",
        "Ana,Ben",
    )
    results = sorted(found, key=lambda r: r["start"])
    assert [r["speaker"] for r in results] == [turn.speaker for turn in TURNS]
    for result, line in zip(results, spoken.lines, strict=True):
        assert abs(result["start"] - line.start) < 0.3
