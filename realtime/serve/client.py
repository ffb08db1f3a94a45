"""``emotrack stream``'s engine: plays audio into the stream protocol and collects what comes back.

:class:`StreamClient` connects (its last will ends the session with ``client lost``), subscribes to
the session's status and results, publishes the start message (again after a refusal that says
the server is busy, up to ``retries`` times), sends the audio chunks as they come, then the end
message, and returns once the server says ``ended``, or as soon as the session's status turns
``offline`` with ``connection lost`` (the server died: the last will of its sink).
:meth:`StreamClient.stop` (Ctrl-C) stops the audio: the end message goes out at once with reason
``stopped``, and what was sent is still processed and delivered before ``ended``; called before a
server took the session, it stops waiting for one at once and sends nothing more. With
``takeovers``, a lost server's session is started again (another server of the group takes it)
with a ``resume`` from the end of the last result received: the audio since then is sent again
from the ``history`` the client keeps, and the results go on in order. Retained messages are old
news (an earlier run of the same session id) and are ignored.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiomqtt
import numpy as np

from realtime.mqtt_client import client_kwargs
from realtime.mqtt_options import MqttOptions
from realtime.serve.protocol import EndRequest, StartRequest, Topics, encode_chunk, encode_json
from realtime.serve.retained import retained_online
from realtime.sinks.base import SinkError

logger = logging.getLogger(__name__)

#: Refusals worth trying again: another server of the group, or this one later, may take it.
RETRY_CODES = ("full", "overloaded", "shutting_down")

T = TypeVar("T")


def resume_point(results: list[dict[str, Any]]) -> tuple[float, int, int]:
    """Where a takeover goes on after ``results`` (as received): the end of the furthest speech
    they cover, the next result ``seq`` and the next ``utterance_seq`` (the last result received
    may be a revision of an earlier utterance, a re-read)."""
    done = max((float(r["end"]) for r in results), default=0.0)
    seq = max((int(r["seq"]) + 1 for r in results), default=0)
    utterance = max((int(r["utterance_seq"]) + 1 for r in results), default=0)
    return done, seq, utterance


@dataclass(frozen=True)
class StreamSettings:
    accept_timeout: float = 30.0  # seconds to wait for a server's answer to the start message
    end_timeout: float = 120.0  # seconds to wait for ``ended`` after the end message
    retries: int = 3  # start messages sent again after a busy refusal
    retry_delay: float = 1.0  # seconds before the first retry; doubles each time
    takeovers: int = 0  # times a lost server's session is started again on another
    history: float = 30.0  # seconds of sent audio kept to send again after a takeover
    # seconds the probe waits for the broker's answer before connecting with the session's id
    # (:meth:`StreamClient.already_streaming`; 0: no probe)
    probe_timeout: float = 2.0


@dataclass
class StreamOutcome:
    """What a session got back. ``state``: ended, server lost, broker lost, refused, no answer,
    timeout, stopped (by :meth:`StreamClient.stop` before a server took the session)."""

    session: str
    state: str = "no answer"
    reason: str = ""
    server: str | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # monotonic time each result arrived
    errors: list[dict[str, Any]] = field(default_factory=list)  # the server's error statuses
    stats: dict[str, Any] | None = None  # the ended status's counters
    chunks_sent: int = 0
    started_at: float | None = None  # monotonic time the first chunk was sent
    takeovers: int = 0  # servers lost and replaced by another
    resent: float = 0.0  # seconds of audio sent again to the servers that took over
    lost_audio: float = 0.0  # seconds of audio no server turned into results (beyond history)

    @property
    def ok(self) -> bool:
        """The server ended the session after all of its audio (the client's end message)."""
        return self.state == "ended" and self.reason == "eof"


class StreamClient:
    """One session of the stream protocol against whichever server takes it."""

    def __init__(
        self,
        mqtt: MqttOptions,
        start: StartRequest,
        settings: StreamSettings | None = None,
        *,
        on_result: Callable[[dict[str, Any]], None] | None = None,
        on_error: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.mqtt = mqtt
        self.start = start
        self.settings = settings or StreamSettings()
        self.topics = Topics(mqtt.prefix)
        self.outcome = StreamOutcome(start.session)
        self._on_result = on_result
        self._on_error = on_error
        self._answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._finished = asyncio.Event()  # ended, or the server was lost
        self._stopping = asyncio.Event()  # stop(): no more audio, end the session now
        self._history: collections.deque[_Sent] = collections.deque()
        self._replay: collections.deque[_Sent] = collections.deque()
        self._position = 0.0  # stream seconds taken from the audio so far
        self._server_seq = 0  # the next chunk's sequence number for the current server

    async def run(self, chunks: AsyncIterator[np.ndarray]) -> StreamOutcome:
        """Stream ``chunks`` ((frames, channels) int16 at the start message's rate)."""
        session = self.start.session
        last_will = EndRequest(session, None, "client lost").to_dict()
        will = aiomqtt.Will(self.topics.end(session), encode_json(last_will), qos=1)
        identifier = self.mqtt.client_id or session
        if self.settings.probe_timeout and await self.already_streaming(identifier):
            self.outcome.state = "refused"
            self.outcome.reason = (
                f"duplicate_session: session {session} is being streamed by another client now "
                f"(connecting as {identifier!r} would cut it off); pick another --session"
            )
            return self.outcome
        kwargs = await client_kwargs(
            self.mqtt, identifier=identifier, will=will, logger_name="realtime.serve.stream.mqtt"
        )
        connected = False
        try:
            async with aiomqtt.Client(**kwargs) as client:
                connected = True
                await client.subscribe(
                    [(self.topics.status(session), 1), (self.topics.results(session), 1)]
                )
                receiver = asyncio.create_task(self._receive(client), name="receive")
                try:
                    if await self._start(client, self.start):
                        await self._stream(client, chunks)
                finally:
                    receiver.cancel()
                    with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                        await receiver
        except aiomqtt.MqttError as exc:
            where = f"MQTT broker at {self.mqtt.host}:{self.mqtt.port}"
            if not connected:
                raise SinkError(f"cannot connect to {where}: {exc}") from None
            self.outcome.state = "broker lost"
            self.outcome.reason = f"lost the connection to {where}: {exc}"
        return self.outcome

    def stop(self) -> None:
        """Send no more audio: the end message (reason ``stopped``) goes out now and
        :meth:`run` still waits, up to ``end_timeout``, for the results of what was sent and the
        server's ``ended``; before a server took the session, :meth:`run` returns at once and
        sends nothing more (call on the loop)."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def accepted(self) -> bool:
        """A server runs the session now (it took the start message and has not ended it)."""
        return self.outcome.state == "accepted"

    async def already_streaming(self, identifier: str) -> bool:
        """Whether the session runs now: its retained status says ``online``. Asked on a
        connection of its own, since the broker keeps one connection per client id and would
        close the running client's (whose last will then ends its session). The broker
        answers in order: the retained status, if any, comes before a marker this probe
        publishes after subscribing; a broker whose ACL hides either tells nothing (False,
        after ``probe_timeout``)."""
        session = self.start.session
        kwargs = await client_kwargs(
            self.mqtt,
            identifier=f"{identifier}-probe-{uuid.uuid4().hex[:8]}",
            logger_name="realtime.serve.stream.probe",
        )
        try:
            async with aiomqtt.Client(**kwargs) as probe:
                online = await retained_online(
                    probe, self.topics.status(session), self.settings.probe_timeout
                )
        except aiomqtt.MqttError as exc:
            where = f"MQTT broker at {self.mqtt.host}:{self.mqtt.port}"
            raise SinkError(f"cannot connect to {where}: {exc}") from None
        if online is None:
            logger.info("the broker hid session %s's status from the probe", session)
        return bool(online)

    async def _stream(self, client: aiomqtt.Client, chunks: AsyncIterator[np.ndarray]) -> None:
        """Send the audio and the end; after a lost server, start over on another one (up to
        ``takeovers`` times) from the end of the last result received."""
        takeovers = self.settings.takeovers
        while True:
            await self._send(client, chunks)
            await self._finish(client)
            if self.outcome.state == "server lost" and not await self._broker_answers(client):
                self.outcome.state = "broker lost"
                self.outcome.reason = (
                    f"lost the MQTT broker at {self.mqtt.host}:{self.mqtt.port} (the server's "
                    f"session connection went too); {len(self.outcome.results)} results arrived "
                    "before"
                )
                return
            if self.outcome.state != "server lost" or takeovers == 0 or self.stopping:
                return
            takeovers -= 1
            if not await self._take_over(client):
                return

    async def _broker_answers(self, client: aiomqtt.Client) -> bool:
        """Whether this client's own connection still works (a QoS 1 publish is acknowledged):
        when the server's session status said ``connection lost`` because the broker went away,
        it does not."""
        marker = f"{self.mqtt.prefix}/{self.start.session}/probe"
        try:
            async with asyncio.timeout(self.settings.probe_timeout or 2.0):
                await client.publish(marker, b"", qos=1)
        except (aiomqtt.MqttError, TimeoutError):
            return False
        return True

    async def _take_over(self, client: aiomqtt.Client) -> bool:
        done, first_seq, first_utterance = resume_point(self.outcome.results)
        replay = [sent for sent in self._history if sent.at + sent.seconds > done]
        resume_at = replay[0].at if replay else self._position
        if replay and replay[0].at > done:  # older than the history kept: no result for it
            self.outcome.lost_audio += replay[0].at - done
        lost = self.outcome.server
        request = dataclasses.replace(
            self.start,
            resume_at=resume_at,
            first_seq=first_seq,
            first_utterance_seq=first_utterance,
        )
        self._finished.clear()
        if not await self._start(client, request):
            return False
        self._replay = collections.deque(replay)
        self._server_seq = 0
        self.outcome.takeovers += 1
        self.outcome.resent += sum(sent.seconds for sent in replay)
        logger.warning(
            "session %s: server %s lost; %s took it over from %.2f s of its audio",
            self.start.session,
            lost,
            self.outcome.server,
            resume_at,
        )
        return True

    async def _start(self, client: aiomqtt.Client, start: StartRequest) -> bool:
        """Publish the start message until a server accepts it; False when none does, or when
        :meth:`stop` is called before one did (nothing more is sent then)."""
        delay = self.settings.retry_delay
        payload = encode_json(start.to_dict())
        for attempt in range(self.settings.retries + 1):
            if self.stopping:
                break
            await client.publish(self.topics.start, payload, qos=1)
            try:
                answer = await self._unless_stopped(
                    self._answers.get(), self.settings.accept_timeout
                )
            except TimeoutError:
                self.outcome.state = "no answer"
                self.outcome.reason = (
                    f"no server answered within {self.settings.accept_timeout:g} s "
                    f"(is `emotrack serve` running with prefix {self.mqtt.prefix!r}?)"
                )
                return False
            if answer is None:  # stopped while waiting
                break
            self.outcome.server = answer.get("server")
            if answer["state"] == "accepted":
                logger.info("session %s accepted by %s", self.start.session, answer["server"])
                self.outcome.state, self.outcome.reason = "accepted", ""
                return True
            self.outcome.state = "refused"
            self.outcome.reason = f"{answer.get('code')}: {answer['reason']}"
            if answer.get("code") not in RETRY_CODES or attempt == self.settings.retries:
                return False
            logger.info("refused (%s); trying again in %.1f s", self.outcome.reason, delay)
            await self._unless_stopped(asyncio.sleep(delay))
            delay *= 2
        # only stop() ends the loop (every other way out returns): nothing more is sent
        self.outcome.state = "stopped"
        self.outcome.reason = "before a server took the session"
        return False

    async def _unless_stopped(self, work: Awaitable[T], timeout: float | None = None) -> T | None:
        """``work``'s result; None once :meth:`stop` was called before it completed (it is
        cancelled then); TimeoutError when neither happened within ``timeout`` seconds."""
        doing = asyncio.ensure_future(work)
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait(
                {doing, stopping}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopping.cancel()
            if not doing.done():
                doing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await doing
        if not doing.cancelled():
            return doing.result()
        if self.stopping:
            return None
        raise TimeoutError

    async def _send(self, client: aiomqtt.Client, chunks: AsyncIterator[np.ndarray]) -> None:
        """What a takeover sends again, then the audio as it comes, until it ends or the
        server is lost (a chunk taken meanwhile stays in the history, for the next server)."""
        while self._replay:
            if self._finished.is_set() or self.stopping:
                return
            await self._publish_chunk(client, self._replay.popleft().chunk)
        while not self.stopping:
            chunk = await self._next_chunk(chunks)
            if chunk is None:
                return
            seconds = len(chunk) / self.start.sample_rate
            self._history.append(_Sent(self._position, seconds, chunk))
            self._position += seconds
            while self._history[0].at < self._position - self.settings.history:
                self._history.popleft()
            if self._finished.is_set():
                return
            await self._publish_chunk(client, chunk)

    async def _next_chunk(self, chunks: AsyncIterator[np.ndarray]) -> np.ndarray | None:
        """The next chunk of the audio; None at its end, or once :meth:`stop` was called while
        waiting for it (the audio then stops: a file's pacing or the microphone is cancelled)."""
        return await self._unless_stopped(_take(chunks))

    async def _publish_chunk(self, client: aiomqtt.Client, chunk: np.ndarray) -> None:
        if self.outcome.started_at is None:
            self.outcome.started_at = time.monotonic()
        topic = self.topics.audio(self.start.session)
        await client.publish(topic, encode_chunk(self._server_seq, chunk), qos=1)
        self._server_seq += 1
        self.outcome.chunks_sent += 1

    async def _finish(self, client: aiomqtt.Client) -> None:
        if self._finished.is_set():
            return
        sent = self._server_seq
        reason = "stopped" if self.stopping else "eof"
        end = EndRequest(self.start.session, sent - 1 if sent else None, reason)
        await client.publish(self.topics.end(self.start.session), encode_json(end.to_dict()), qos=1)
        try:
            async with asyncio.timeout(self.settings.end_timeout):
                await self._finished.wait()
        except TimeoutError:
            self.outcome.state = "timeout"
            self.outcome.reason = (
                f"the server did not end the session in {self.settings.end_timeout:g} s"
            )

    async def _receive(self, client: aiomqtt.Client) -> None:
        results = self.topics.results(self.start.session)
        async for message in client.messages:
            if message.retain:  # an earlier run's
                continue
            try:
                data = json.loads(message.payload if isinstance(message.payload, bytes) else b"")
            except json.JSONDecodeError:
                logger.warning("not JSON on %s: ignored", message.topic)
                continue
            if message.topic.value == results:
                self.outcome.results.append(data)
                self.outcome.arrivals.append(time.monotonic())
                if self._on_result is not None:
                    self._on_result(data)
            elif "protocol" in data:
                self._on_server_status(data)
            elif data.get("state") == "offline" and data.get("reason") == "connection lost":
                self.outcome.state = "server lost"
                self.outcome.reason = (
                    f"the server {self.outcome.server or ''} went offline (connection lost); "
                    f"{len(self.outcome.results)} results arrived before"
                )
                self._finished.set()

    def _on_server_status(self, data: dict[str, Any]) -> None:
        state = data.get("state")
        if state in ("accepted", "refused"):
            self._answers.put_nowait(data)
        elif state == "error":
            self.outcome.errors.append(data)
            if self._on_error is not None:
                self._on_error(data)
        elif state == "ended":
            self.outcome.state = "ended"
            self.outcome.reason = str(data.get("reason", ""))
            self.outcome.stats = data.get("stats")
            self._finished.set()


@dataclass(frozen=True)
class _Sent:
    """A chunk taken from the audio: its stream time, its length, its samples."""

    at: float
    seconds: float
    chunk: np.ndarray = field(repr=False)


async def _take(chunks: AsyncIterator[np.ndarray]) -> np.ndarray | None:
    """The next of ``chunks``; None at their end."""
    try:
        return await anext(chunks)
    except StopAsyncIteration:
        return None


async def paced_chunks(
    audio: np.ndarray, sample_rate: int, *, chunk_ms: int = 20, speed: float = 1.0
) -> AsyncIterator[np.ndarray]:
    """``audio`` ((frames, channels) int16) in chunks of ``chunk_ms``, each when its time comes
    (real time at ``speed`` 1); the last one padded with silence to a whole chunk."""
    frames = sample_rate * chunk_ms // 1000
    loop = asyncio.get_running_loop()
    started = loop.time()
    for index, offset in enumerate(range(0, len(audio), frames)):
        delay = started + index * chunk_ms / 1000 / speed - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        chunk = audio[offset : offset + frames]
        if len(chunk) < frames:
            chunk = np.concatenate(
                [chunk, np.zeros((frames - len(chunk), audio.shape[1]), chunk.dtype)]
            )
        yield chunk
