"""MQTT sink against a real Mosquitto broker: order, QoS 1, retained status, will, reconnects.

The spool (on by default) is tested in ``test_mqtt_spool.py``; here it lives in a temporary
``XDG_STATE_HOME`` so that no test writes to the real home directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from factories import result_factory, stats_factory
from mqtt_broker import MosquittoBroker, free_port, require_mosquitto

from realtime.serialize import validate
from realtime.sinks import MqttOptions, MqttSink, SinkError

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 30.0  # generous: CI machines can be loaded
PASSWORD_VARIABLE = "EMOTRACK_TEST_MQTT_PASSWORD"


@pytest.fixture(autouse=True)
def _spool_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # child processes inherit it


def unique_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


def fast_options(host: str, port: int, prefix: str, **overrides: Any) -> MqttOptions:
    settings: dict[str, Any] = {
        "host": host,
        "port": port,
        "prefix": prefix,
        "reconnect_min": 0.05,
        "reconnect_max": 0.2,
        "timeout": 5.0,
    }
    settings.update(overrides)
    return MqttOptions(**settings)


def subscriber(host: str, port: int, **kwargs: Any) -> aiomqtt.Client:
    kwargs.setdefault("identifier", f"sub-{uuid.uuid4().hex[:8]}")
    return aiomqtt.Client(host, port, timeout=TIMEOUT, **kwargs)


async def collect(client: aiomqtt.Client, count: int) -> list[aiomqtt.Message]:
    messages: list[aiomqtt.Message] = []
    async with asyncio.timeout(TIMEOUT):
        async for message in client.messages:
            messages.append(message)
            if len(messages) == count:
                break
    return messages


async def seqs_until(client: aiomqtt.Client, last: int) -> list[int]:
    """The ``seq`` of every result message, up to and including the first with ``seq == last``."""
    seqs: list[int] = []
    async with asyncio.timeout(TIMEOUT):
        async for message in client.messages:
            seqs.append(payload(message)["seq"])
            if seqs[-1] == last:
                return seqs
    return seqs


async def retained_status(host: str, port: int, topic: str) -> tuple[dict[str, Any], bool]:
    """What a subscriber arriving now reads on the status topic (payload, retain flag)."""
    async with subscriber(host, port) as late:
        await late.subscribe(topic, qos=1)
        (message,) = await collect(late, 1)
    assert isinstance(message.payload, bytes)
    return json.loads(message.payload), message.retain


def payload(message: aiomqtt.Message) -> dict[str, Any]:
    assert isinstance(message.payload, bytes)
    obj: dict[str, Any] = json.loads(message.payload)
    return obj


async def test_every_result_arrives_in_order_with_qos1(mosquitto_broker: tuple[str, int]) -> None:
    host, port = mosquitto_broker
    prefix = unique_prefix()
    n = 100
    sink = MqttSink(session="s1", options=fast_options(host, port, prefix))
    async with subscriber(host, port) as sub:
        await sub.subscribe(f"{prefix}/+/utterance", qos=1)
        await sink.open()
        assert sink.connected
        for seq in range(n):
            await sink.publish(result_factory(seq=seq, session="s1"))
        messages = await collect(sub, n)
        await sink.close(stats_factory(results=n))

    assert [payload(m)["seq"] for m in messages] == list(range(n))
    for message in messages:
        assert message.topic.value == f"{prefix}/s1/utterance"
        assert message.qos == 1
        assert not message.retain
        validate(payload(message))
    assert sink.sent == n and sink.dropped == 0 and sink.unsent == 0
    with pytest.raises(SinkError, match="after close"):
        await sink.publish(result_factory(seq=n, session="s1"))


async def test_speaker_revisions_go_to_their_own_topic_after_the_result(
    mosquitto_broker: tuple[str, int],
) -> None:
    from realtime.messages import SpeakerRevision

    host, port = mosquitto_broker
    prefix = unique_prefix()
    sink = MqttSink(session="s1", options=fast_options(host, port, prefix))
    revision = SpeakerRevision("s1", 0, 0.0, utterance_seq=0, old="speaker 1", new="speaker 2")
    async with subscriber(host, port) as sub:
        await sub.subscribe(f"{prefix}/s1/#", qos=1)
        await sink.open()
        await sink.publish(result_factory(seq=0, session="s1", speaker="speaker 1"))
        await sink.revise(revision)
        messages = [m for m in await collect(sub, 3) if not m.topic.value.endswith("/status")]
        await sink.close(stats_factory(results=1))
    assert [m.topic.value for m in messages[:2]] == [
        f"{prefix}/s1/utterance",
        f"{prefix}/s1/speaker_revised",
    ]
    revised = payload(messages[1])
    validate(revised)
    assert (revised["utterance_seq"], revised["speaker"]) == (0, "speaker 2")
    assert messages[1].qos == 1 and not messages[1].retain


async def test_a_session_that_cannot_be_a_topic_level_is_refused(
    mosquitto_broker: tuple[str, int],
) -> None:
    host, port = mosquitto_broker
    sink = MqttSink(session="ok", options=fast_options(host, port, unique_prefix()))
    await sink.open()
    with pytest.raises(ValueError, match="wildcards"):
        await sink.publish(result_factory(session="bad/#"))
    await sink.publish(result_factory(seq=1, session="ok"))
    await sink.close(stats_factory())
    assert sink.sent == 1


async def test_status_is_retained_online_then_offline_with_stats(
    mosquitto_broker: tuple[str, int],
) -> None:
    host, port = mosquitto_broker
    prefix = unique_prefix()
    sink = MqttSink(session="s2", options=fast_options(host, port, prefix))
    await sink.open()
    for seq in range(3):
        await sink.publish(result_factory(seq=seq, session="s2"))

    status, retained = await retained_status(host, port, f"{prefix}/s2/status")
    assert retained
    assert status["state"] == "online" and status["session"] == "s2"

    final = stats_factory(
        results=3, utterances=3, dropped={"video": 2}, ended="error: cut short at 20.0 s"
    )
    await sink.close(final)
    status, retained = await retained_status(host, port, f"{prefix}/s2/status")
    assert retained
    assert status["state"] == "offline" and status["reason"] == "closed"
    assert status["stats"]["results"] == 3 and status["stats"]["dropped"] == {"video": 2}
    assert status["stats"]["ended"] == "error: cut short at 20.0 s"  # how the input ended
    assert status["mqtt"]["sent"] == 3


async def test_stats_updates_are_published_at_a_bounded_rate(
    mosquitto_broker: tuple[str, int],
) -> None:
    host, port = mosquitto_broker
    prefix = unique_prefix()
    sink = MqttSink(session="s3", options=fast_options(host, port, prefix, status_interval=0.2))
    async with subscriber(host, port) as sub:
        await sub.subscribe(f"{prefix}/s3/status", qos=1)
        await sink.open()
        (online,) = await collect(sub, 1)
        assert payload(online)["state"] == "online"
        for i in range(50):  # a burst of updates gives one status message, with the latest
            sink.update_stats(stats_factory(results=i))
        (update,) = await collect(sub, 1)
        await sink.close(stats_factory(results=50))
        (offline,) = await collect(sub, 1)
    assert payload(update)["reason"] == "update"
    assert payload(update)["stats"]["results"] == 49
    assert payload(offline)["state"] == "offline"


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from realtime.sinks import MqttOptions, MqttSink
    from factories import result_factory

    async def main():
        host, port, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
        sink = MqttSink(session="doomed", options=MqttOptions(host=host, port=port, prefix=prefix))
        await sink.open()
        await sink.publish(result_factory(seq=0, session="doomed"))
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


async def test_last_will_marks_the_session_offline_when_the_process_dies(
    mosquitto_broker: tuple[str, int],
) -> None:
    host, port = mosquitto_broker
    prefix = unique_prefix()
    topic = f"{prefix}/doomed/status"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        host,
        str(port),
        prefix,
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), TIMEOUT)
        if line.strip() != b"ready":
            assert child.stderr is not None
            pytest.fail(f"sink process failed: {(await child.stderr.read()).decode()[-2000:]}")
        async with subscriber(host, port) as sub:
            await sub.subscribe(topic, qos=1)
            (online,) = await collect(sub, 1)
            assert payload(online)["state"] == "online"
            child.kill()  # no clean disconnect: the broker must publish the will
            await child.wait()
            (will,) = await collect(sub, 1)
        assert payload(will)["state"] == "offline"
        assert payload(will)["reason"] == "connection lost"
        status, retained = await retained_status(host, port, topic)
        assert retained and status["state"] == "offline"
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()


async def test_reconnects_and_delivers_what_was_buffered(mosquitto: MosquittoBroker) -> None:
    host, port = mosquitto.address
    prefix = unique_prefix()
    sub_id = f"persistent-{uuid.uuid4().hex[:8]}"
    options = fast_options(host, port, prefix, buffer_size=5, spool_dir=None)  # memory only
    sink = MqttSink(session="s4", options=options)
    # A persistent session: the broker queues QoS 1 messages for it while it is away.
    async with subscriber(host, port, identifier=sub_id, clean_session=False) as sub:
        await sub.subscribe(f"{prefix}/+/utterance", qos=1)
        await sink.open()
        for seq in range(2):
            await sink.publish(result_factory(seq=seq, session="s4"))
        before = await collect(sub, 2)
    assert [payload(m)["seq"] for m in before] == [0, 1]

    mosquitto.stop()
    await asyncio.wait_for(sink.wait_disconnected(), TIMEOUT)
    for seq in range(2, 10):  # never blocks while disconnected; keeps the newest 5
        await asyncio.wait_for(sink.publish(result_factory(seq=seq, session="s4")), 1.0)
    assert sink.dropped == 3 and sink.buffered == 5

    await mosquitto.astart()
    await asyncio.wait_for(sink.wait_connected(), TIMEOUT)
    async with subscriber(host, port, identifier=sub_id, clean_session=False) as sub:
        after = await seqs_until(sub, 9)
        await sink.close(stats_factory(results=10))
    # QoS 1 is at least once: the broker may deliver 0 or 1 again if their acknowledgement was
    # cut off when the subscriber left; everything new arrives once, in order.
    assert [seq for seq in after if seq >= 2] == [5, 6, 7, 8, 9]
    assert set(after) - {5, 6, 7, 8, 9} <= {0, 1}
    assert sink.reconnects == 1 and sink.sent == 7 and sink.unsent == 0


async def test_delivery_resumes_promptly_when_the_broker_returns(
    mosquitto: MosquittoBroker,
) -> None:
    """Not after the back-off sleep: the sink probes the broker's port while it waits."""
    host, port = mosquitto.address
    prefix = unique_prefix()
    sub_id = f"persistent-{uuid.uuid4().hex[:8]}"
    # Real back-off settings: after a few seconds down, the sink sleeps 2-5 s between attempts.
    options = fast_options(host, port, prefix, reconnect_min=0.2, reconnect_max=30.0)
    sink = MqttSink(session="s8", options=options)
    async with subscriber(host, port, identifier=sub_id, clean_session=False) as sub:
        await sub.subscribe(f"{prefix}/+/utterance", qos=1)
    await sink.open()
    mosquitto.stop()
    await asyncio.wait_for(sink.wait_disconnected(), TIMEOUT)
    await sink.publish(result_factory(seq=0, session="s8"))
    await asyncio.sleep(3.5)  # failed attempts at about 0, 0.2, 0.6, 1.4 and 3.0 s: next at 6.2

    loop = asyncio.get_running_loop()
    restarted = loop.time()
    await mosquitto.astart()
    async with subscriber(host, port, identifier=sub_id, clean_session=False) as sub:
        (message,) = await collect(sub, 1)
        delay = loop.time() - restarted
        await sink.close(stats_factory(results=1))
    assert payload(message)["seq"] == 0
    print(f"broker restart -> first result delivered: {delay:.2f} s")
    assert delay < 1.5


async def test_open_fails_fast_with_a_one_line_error() -> None:
    port = free_port()  # nothing listens there
    sink = MqttSink(session="s", options=MqttOptions(host="127.0.0.1", port=port))
    with pytest.raises(SinkError) as info:
        await sink.open()
    message = str(info.value)
    assert message.startswith(f"cannot connect to MQTT broker at 127.0.0.1:{port}: ")
    assert "\n" not in message
    with pytest.raises(SinkError, match="before open"):
        await sink.publish(result_factory())


async def test_without_fail_fast_it_waits_for_the_broker(tmp_path: Path) -> None:
    require_mosquitto()
    broker = MosquittoBroker(tmp_path)
    sink = MqttSink(
        session="s5",
        options=fast_options(broker.host, broker.port, unique_prefix(), fail_fast=False),
    )
    await sink.open()  # the broker is not running yet
    assert not sink.connected
    for seq in range(3):
        await sink.publish(result_factory(seq=seq, session="s5"))
    try:
        await broker.astart()
        await asyncio.wait_for(sink.wait_connected(), TIMEOUT)
        await sink.close(stats_factory(results=3))
    finally:
        broker.stop()
    assert sink.sent == 3 and sink.unsent == 0


async def test_close_gives_up_after_close_timeout_and_counts_unsent() -> None:
    sink = MqttSink(
        session="s6",
        options=MqttOptions(host="127.0.0.1", port=free_port(), fail_fast=False, close_timeout=0.2),
    )
    await sink.open()
    await sink.publish(result_factory(seq=0, session="s6"))
    await sink.close(stats_factory())
    assert sink.unsent == 1 and sink.sent == 0


async def test_close_with_no_time_to_deliver_returns_at_once() -> None:
    """close_timeout = 0 while reconnecting: the cancellation must not get lost (it used to
    hang, on Python 3.11, when it met the close request inside asyncio.wait_for)."""
    for attempt in range(6):
        session = f"s9-{attempt}"
        sink = MqttSink(
            session=session,
            options=fast_options("127.0.0.1", free_port(), "p", fail_fast=False, close_timeout=0),
        )
        await sink.open()
        await sink.publish(result_factory(seq=0, session=session))
        await asyncio.sleep(0.03 * attempt)  # meet the reconnect loop at different points
        await asyncio.wait_for(sink.close(stats_factory()), 5.0)
        assert sink.unsent == 1


def _password_file(tmp_path: Path, user: str, password: str) -> Path:
    tool = shutil.which("mosquitto_passwd", path=os.pathsep.join([os.environ["PATH"], "/usr/bin"]))
    if tool is None:
        pytest.skip("mosquitto_passwd not installed")
    path = tmp_path / "passwd"
    subprocess.run([tool, "-c", "-b", str(path), user, password], check=True, capture_output=True)
    return path


async def test_password_from_environment_or_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_mosquitto()
    passwd = _password_file(tmp_path, "emo", "s3cret")
    broker = MosquittoBroker(
        tmp_path,
        allow_anonymous=False,
        extra_config=f"password_file {passwd}",
        probe={"username": "emo", "password": "s3cret"},
    )
    await broker.astart()
    try:
        host, port = broker.address
        monkeypatch.setenv(PASSWORD_VARIABLE, "s3cret")
        by_env = MqttSink(
            session="env",
            options=fast_options(
                host, port, unique_prefix(), username="emo", password_env=PASSWORD_VARIABLE
            ),
        )
        await by_env.open()
        await by_env.close(stats_factory())

        secret = tmp_path / "mqtt-password"
        secret.write_text("s3cret\n", encoding="utf-8")
        by_file = MqttSink(
            session="file",
            options=fast_options(host, port, unique_prefix(), username="emo", password_file=secret),
        )
        await by_file.open()
        await by_file.close(stats_factory())

        monkeypatch.setenv(PASSWORD_VARIABLE, "wrong")
        with pytest.raises(SinkError, match=r"cannot connect to MQTT broker .*ot authori[sz]ed"):
            await MqttSink(session="bad", options=by_env.options).open()

        monkeypatch.delenv(PASSWORD_VARIABLE)
        with pytest.raises(SinkError, match="EMOTRACK_TEST_MQTT_PASSWORD is not set"):
            await MqttSink(session="unset", options=by_env.options).open()
        missing = fast_options(host, port, "p", username="emo", password_file=tmp_path / "nope")
        with pytest.raises(SinkError, match="cannot read MQTT password file"):
            await MqttSink(session="nofile", options=missing).open()
    finally:
        broker.stop()


def _make_certificates(directory: Path) -> dict[str, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not installed")
    files = {name: directory / name for name in ("ca.key", "ca.crt", "server.key", "server.crt")}
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    csr = directory / "server.csr"
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n", encoding="utf-8")
    ca_key, ca_crt = files["ca.key"], files["ca.crt"]
    server_key, server_crt = files["server.key"], files["server.crt"]
    ca_out = ["-keyout", ca_key, "-out", ca_crt]
    ca_flags = ["-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial", "-extfile", ext]
    commands = [
        [openssl, "req", "-x509", *ec, *ca_out, "-subj", "/CN=test CA", "-days", "1"],
        [openssl, "req", *ec, "-subj", "/CN=127.0.0.1", "-keyout", server_key, "-out", csr],
        [openssl, "x509", "-req", "-in", csr, *ca_flags, "-days", "1", "-out", server_crt],
    ]
    for command in commands:
        subprocess.run([str(c) for c in command], check=True, capture_output=True, timeout=30)
    return files


async def test_tls_with_ca_file_and_insecure_mode(tmp_path: Path) -> None:
    require_mosquitto()
    certs = _make_certificates(tmp_path)
    probe_context = ssl.create_default_context(cafile=str(certs["ca.crt"]))
    broker = MosquittoBroker(
        tmp_path,
        extra_config="\n".join(
            [
                f"cafile {certs['ca.crt']}",
                f"certfile {certs['server.crt']}",
                f"keyfile {certs['server.key']}",
            ]
        ),
        probe={"tls_context": probe_context},
    )
    await broker.astart()
    try:
        host, port = broker.address
        prefix = unique_prefix()
        verified = MqttSink(
            session="tls", options=fast_options(host, port, prefix, tls_ca_file=certs["ca.crt"])
        )
        async with subscriber(host, port, tls_context=probe_context) as sub:
            await sub.subscribe(f"{prefix}/tls/utterance", qos=1)
            await verified.open()
            await verified.publish(result_factory(seq=0, session="tls"))
            (message,) = await collect(sub, 1)
            await verified.close(stats_factory())
        assert payload(message)["seq"] == 0

        insecure_options = fast_options(host, port, prefix, tls_insecure=True)
        insecure = MqttSink(session="tls2", options=insecure_options)
        await insecure.open()
        await insecure.close(stats_factory())

        untrusted = MqttSink(session="tls3", options=fast_options(host, port, prefix, tls=True))
        with pytest.raises(SinkError, match=r"cannot connect to MQTT broker .*(?i:certificate)"):
            await untrusted.open()

        missing = fast_options(host, port, prefix, tls_ca_file=tmp_path / "nope.crt")
        named = r"MQTT TLS file not found: .*nope\.crt \(the CA file\)"  # ssl names no file
        with pytest.raises(SinkError, match=named):
            await MqttSink(session="tls4", options=missing).open()
    finally:
        broker.stop()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"prefix": "a/#"}, "wildcards"),
        ({"prefix": "/a"}, "start or end"),
        ({"prefix": ""}, "must not be empty"),
        ({"port": 0}, "port"),
        ({"password_env": "X", "password_file": "y", "username": "u"}, "not both"),
        ({"password_env": "X"}, "needs a username"),
        ({"tls_key_file": "k.pem"}, "certificate file"),
        ({"qos": 3}, "QoS"),
        ({"buffer_size": 0}, "buffer size"),
        ({"reconnect_min": 5, "reconnect_max": 1}, "reconnect"),
    ],
)
def test_options_are_validated(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MqttOptions(**settings)


def test_options_are_keyword_only_and_topics_are_derived() -> None:
    with pytest.raises(TypeError):
        MqttOptions("localhost")  # type: ignore[call-arg]
    opts = MqttOptions(prefix="home/emotrack")
    assert opts.utterance_topic("abc") == "home/emotrack/abc/utterance"
    assert opts.status_topic("abc") == "home/emotrack/abc/status"
    assert not opts.use_tls and MqttOptions(tls_ca_file="ca.pem").use_tls
    with pytest.raises(ValueError, match="must not contain '/'"):
        MqttSink(session="a/b")
    with pytest.raises(ValueError, match="wildcards"):
        MqttSink(session="a+b")
