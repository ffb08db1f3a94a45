"""``emotrack serve``: takes sessions from an MQTT 5 shared subscription and runs one pipeline each.

The server's own connection subscribes to ``$share/{group}/{prefix}/sessions/start``, so the broker
gives each start message to exactly one of the servers of the group. For a session it accepts, it
subscribes to the session's audio and end topics (then answers ``accepted``), and runs the
session's pipeline with the process's shared models (:mod:`realtime.serve.models`). It refuses a
session (``refused``, with a code) beyond ``max_sessions``, while any session is more than
``max_behind`` seconds behind real time (its audio waits that long for the speech detector, or
its utterances for the shared Whisper), while shutting down, or when the start message is bad.
Errors in a session's messages are answered with ``error`` on its status topic; the session goes
on. ``{prefix}/servers/{id}`` holds the server's retained ``online``/``offline`` state (its last
will says ``offline``). SIGTERM or Ctrl-C: no new sessions, the running ones finish what they
received, then the server exits; a second signal aborts (:meth:`Server.run` is cancelled): the
sessions are cancelled and end ``failed``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from realtime.channels import Channel, Policy
from realtime.config import Config, ConfigError
from realtime.mqtt_client import client_kwargs
from realtime.mqtt_options import MqttOptions, check_topic_level
from realtime.serialize import utc_timestamp
from realtime.serve.models import AsrBatching, SharedModels
from realtime.serve.protocol import (
    PROTOCOL,
    EndRequest,
    ProtocolError,
    ServerStatus,
    StartRequest,
    Topics,
    encode_json,
    parse_end,
    parse_start,
    session_hint,
)
from realtime.serve.retained import retained_online
from realtime.serve.session import ServeSession, SessionLimits, SessionOutcome, session_config
from realtime.sinks.base import SinkError

logger = logging.getLogger(__name__)

STATUS_QUEUE = 4096  # control statuses waiting for the connection; the oldest go first when full
ERRORS_IN_FULL = 20  # error statuses per session sent one by one; then every 100th
ABORT_TIMEOUT = 2.0  # seconds an aborted server waits for the broker to take its last statuses
ABORTED = "failed: the server was aborted"  # the ended reason of the sessions an abort cancels


def default_server_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


SERVER_PROBE_TIMEOUT = 2.0  # seconds to wait for the broker to tell a server id's retained state


async def probe_broker(mqtt: MqttOptions, server_id: str | None = None) -> None:
    """Connect once and disconnect; SinkError with one line when the broker cannot be used, or
    when ``server_id`` is online already (:func:`refuse_taken_server_id`)."""
    kwargs = await client_kwargs(
        mqtt, identifier=None, v5=True, logger_name="realtime.serve.probe.mqtt"
    )
    try:
        async with aiomqtt.Client(**kwargs) as client:
            if server_id is not None:
                await refuse_taken_server_id(client, Topics(mqtt.prefix), server_id)
    except aiomqtt.MqttError as exc:
        raise SinkError(
            f"cannot connect to MQTT broker at {mqtt.host}:{mqtt.port}: {exc}"
        ) from None


async def refuse_taken_server_id(client: aiomqtt.Client, topics: Topics, server_id: str) -> None:
    """SinkError (one line) when the retained ``PREFIX/servers/ID`` says ``online``: another
    server runs with this id (a crashed one's last will said ``offline``); a broker that tells
    nothing within SERVER_PROBE_TIMEOUT leaves the id free (:mod:`realtime.serve.retained`).
    Call before anything else subscribes on ``client``."""
    online = await retained_online(client, topics.server(server_id), SERVER_PROBE_TIMEOUT)
    if online is None:
        logger.info("the broker hid server %s's state from this server", server_id)
    if online:
        raise SinkError(
            f"server id {server_id} is online already (another server): give each server its "
            "own --server-id"
        )


@dataclass(frozen=True)
class ServeOptions:
    group: str = "emotrack"  # shared-subscription group: the servers that share the sessions
    max_sessions: int = 8
    max_behind: float = 2.0  # refuse new sessions while a session is this far behind (seconds)
    batching: bool = True  # one forward pass for utterances of several sessions
    max_batch: int = 16  # utterances per cross-session forward pass
    asr: AsrBatching = field(default_factory=AsrBatching)  # Whisper's batches across sessions
    server_id: str = field(default_factory=default_server_id)
    limits: SessionLimits = field(default_factory=SessionLimits)

    def __post_init__(self) -> None:
        if self.max_sessions < 1:
            raise ConfigError("--max-sessions must be at least 1")
        if self.max_batch < 1:
            raise ConfigError("--cross-batch must be at least 1")
        for flag, value in (("--group", self.group), ("--server-id", self.server_id)):
            try:
                check_topic_level(flag, value)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if self.limits.asr_queue < 1 or self.limits.max_delay <= 0:
            raise ConfigError("--asr-queue must be at least 1 and --max-delay positive")
        if self.max_behind <= 0 or self.limits.idle_timeout <= 0 or self.limits.max_backlog <= 0:
            raise ConfigError("--max-behind, --idle-timeout and --max-backlog must be positive")


def _raise_failure(*tasks: asyncio.Task[None]) -> None:
    """Raise the error of the first of ``tasks`` that failed, if any."""
    for task in tasks:
        error = task.exception() if task.done() and not task.cancelled() else None
        if error is not None:
            raise error


@dataclass
class _Outgoing:
    topic: str
    payload: bytes
    retain: bool = False


class Server:
    """One server process's sessions and its connection to the broker."""

    def __init__(self, config: Config, options: ServeOptions, models: SharedModels) -> None:
        self.config = config
        self.options = options
        self.models = models
        self.mqtt = config.sinks.mqtt
        self.topics = Topics(self.mqtt.prefix)
        self.sessions: dict[str, ServeSession] = {}
        self.accepted = 0
        self.refused = 0
        self._errors: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._outbox: Channel[_Outgoing | None] = Channel(
            "status", STATUS_QUEUE, Policy.DROP_OLDEST
        )
        self._client: aiomqtt.Client | None = None
        self._stop = asyncio.Event()
        self.reconnects = 0
        self._lost = False  # the broker was lost at least once
        self._connected_once = False
        self.ready = asyncio.Event()  # online on the broker: sessions may start

    @property
    def server_topic(self) -> str:
        return self.topics.server(self.options.server_id)

    def stop(self) -> None:
        """No new sessions; the running ones finish what they received (call on the loop)."""
        if not self._stop.is_set():
            logger.info("stopping: finishing %d sessions", len(self.sessions))
        self._stop.set()

    async def run(self) -> None:
        """Serve until :meth:`stop`; SinkError when the broker is unreachable at the start.

        A broker lost later is reconnected to (``reconnect_min`` doubling up to
        ``reconnect_max`` seconds): the sessions in flight end (``broker lost``: what they
        received is still processed, their results go out through their own connections once
        the broker is back, and their ``ended`` status after the reconnection); new sessions are
        taken again once reconnected.

        Cancelled (a second signal: abort), the running sessions are cancelled too, not
        finished, and :meth:`run` returns only once they are (their threads no longer use the
        shared models, which the caller may then close).
        """
        try:
            await self._run()
        except asyncio.CancelledError:
            await self._cancel_sessions()  # those _serve has not (the broker was away)
            raise

    async def _run(self) -> None:
        will = aiomqtt.Will(self.server_topic, self._server_state("offline"), qos=1, retain=True)
        kwargs = await client_kwargs(
            self.mqtt,
            identifier=self.mqtt.client_id,
            will=will,
            v5=True,
            logger_name="realtime.serve.server.mqtt",
        )
        delay = self.mqtt.reconnect_min
        while True:
            try:
                async with aiomqtt.Client(**kwargs) as client:
                    self._client = client
                    if self._lost:
                        self.reconnects += 1
                        logger.info("reconnected to the MQTT broker")
                    delay = self.mqtt.reconnect_min
                    await self._serve(client)
                    return
            except aiomqtt.MqttError as exc:
                self._client = None
                if not self._connected_once:
                    raise SinkError(
                        f"MQTT broker {self.mqtt.host}:{self.mqtt.port}: {exc}; the server stopped"
                    ) from None
                self._lost = True
                self._end_sessions("broker lost")
                logger.warning(
                    "lost the MQTT broker %s:%d (%s); reconnecting in %.1f s",
                    self.mqtt.host,
                    self.mqtt.port,
                    exc,
                    delay,
                )
            if await self._stopped_within(delay):
                if self._tasks:  # sessions still finishing what they received
                    await asyncio.wait(set(self._tasks))
                return
            delay = min(delay * 2, self.mqtt.reconnect_max)

    async def _stopped_within(self, seconds: float) -> bool:
        try:
            async with asyncio.timeout(seconds):
                await self._stop.wait()
        except TimeoutError:
            return False
        return True

    def _end_sessions(self, reason: str) -> None:
        """End every running session as its client's end message would, with ``reason``."""
        for session in list(self.sessions.values()):
            session.source.end(EndRequest(session.start.session, None, reason))

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Serve on one connection: until :meth:`stop` (then finish every session and return)
        or until the connection fails (MqttError, sessions left running)."""
        if not self._connected_once:  # a second server of this id: refused before it says online
            await refuse_taken_server_id(client, self.topics, self.options.server_id)
        await client.subscribe(self.topics.shared_start(self.options.group), qos=1)
        await client.publish(self.server_topic, self._server_state("online"), qos=1, retain=True)
        self._connected_once = True
        self.ready.set()
        logger.info(
            "serving %s (group %s) at most %d sessions as %s; cross-session batching: "
            "UniMSE %s, Whisper %s",
            self.topics.start,
            self.options.group,
            self.options.max_sessions,
            self.options.server_id,
            f"up to {self.options.max_batch}" if self.options.batching else "off",
            f"up to {self.options.asr.max_batch}, wait {self.options.asr.max_wait:g} s"
            if self.options.asr.enabled
            else "off",
        )
        reader = asyncio.create_task(self._read(client), name="mqtt-read")
        writer = asyncio.create_task(self._write(client), name="mqtt-write")
        stop = asyncio.create_task(self._stop.wait(), name="stop")
        try:
            await asyncio.wait({reader, writer, stop}, return_when=asyncio.FIRST_COMPLETED)
            _raise_failure(reader, writer)  # the connection failed: run() reconnects
            self._stop.set()
            for session in list(self.sessions.values()):
                session.stop()
            if self._tasks:
                await asyncio.wait(set(self._tasks))
            if not writer.done():
                await self._outbox.put(None)
                await asyncio.wait({writer, reader}, return_when=asyncio.FIRST_COMPLETED)
            _raise_failure(reader, writer)
            await client.publish(
                self.server_topic, self._server_state("offline"), qos=1, retain=True
            )
        except asyncio.CancelledError:  # aborted (a second signal)
            await self._say_aborted(client, await self._cancel_sessions())
            raise
        finally:
            reader.cancel()
            writer.cancel()
            stop.cancel()

    async def _cancel_sessions(self) -> list[str]:
        """Cancel the running sessions (an abort: what they hold is lost); their ids."""
        names = list(self.sessions)
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
            logger.warning("aborted: %d sessions cancelled", len(tasks))
        return names

    async def _say_aborted(self, client: aiomqtt.Client, sessions: list[str]) -> None:
        """After an abort: each of ``sessions`` ``ended`` (failed), so that its client need not
        wait for a timeout, and the server ``offline`` (a clean disconnect sends no last will),
        so that its id may serve again."""
        if not self._connected_once:  # its id not yet checked: the retained state is not ours
            return
        try:
            async with asyncio.timeout(ABORT_TIMEOUT):
                for name in sessions:
                    status = ServerStatus(name, "ended", ABORTED, self.options.server_id, "failed")
                    await client.publish(
                        self.topics.status(name), encode_json(status.to_dict()), qos=1
                    )
                await client.publish(
                    self.server_topic, self._server_state("offline"), qos=1, retain=True
                )
        except (aiomqtt.MqttError, TimeoutError) as exc:
            logger.warning("aborted without telling the broker: %s", str(exc) or "timed out")

    # -- incoming ------------------------------------------------------------------------------

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            data = payload if isinstance(payload, bytes) else str(payload or "").encode()
            topic = message.topic.value
            if topic == self.topics.start:
                self._on_start(data)
                continue
            target = self.topics.session_of(topic)
            session = None if target is None else self.sessions.get(target[0])
            if target is None or session is None:
                logger.debug("ignoring a message on %s (no such session here)", topic)
                continue
            if target[1] == "audio":
                session.source.feed(data)
            elif target[1] == "end":
                self._on_end(session, data)

    def _on_end(self, session: ServeSession, payload: bytes) -> None:
        try:
            end = parse_end(payload)
            if end.session != session.start.session:
                raise ProtocolError("bad_end", f"end message names session {end.session!r}")
        except ProtocolError as exc:
            self._report_error(session.start.session, exc)
            return
        session.source.end(end)

    def _on_start(self, payload: bytes) -> None:
        try:
            start = parse_start(payload)
        except ProtocolError as exc:
            hint = session_hint(payload)
            logger.warning("refused a start message: %s", exc)
            if hint is not None:
                self._refuse(hint, exc.code, str(exc))
            return
        refusal = self._refusal(start)
        if refusal is not None:
            self._refuse(start.session, *refusal)
            return
        try:
            config = session_config(self.config, start)
            session = ServeSession(
                start,
                config,
                self.models,
                on_error=lambda exc: self._report_error(start.session, exc),
                limits=self.options.limits,
            )
        except (ConfigError, ValueError) as exc:
            self._refuse(start.session, "bad_start", f"start message: {exc}")
            return
        self.sessions[start.session] = session
        self.accepted += 1
        task = asyncio.create_task(self._run_session(session), name=f"session:{start.session}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _refusal(self, start: StartRequest) -> tuple[str, str] | None:
        """``(code, reason)`` when this server cannot take the session now."""
        if self._stop.is_set():
            return "shutting_down", "the server is shutting down"
        if start.session in self.sessions:
            return "duplicate_session", f"session {start.session} is already running here"
        if len(self.sessions) >= self.options.max_sessions:
            return "full", f"the server runs {len(self.sessions)} sessions (--max-sessions)"
        waiting = max((s.behind for s in self.sessions.values()), default=0.0)
        behind = max(waiting, self.models.transcriber.waiting_for())
        if behind > self.options.max_behind:
            return "overloaded", f"the server is {behind:.1f} s behind real time"
        return None

    # -- sessions ------------------------------------------------------------------------------

    async def _run_session(self, session: ServeSession) -> None:
        name = session.start.session
        client = self._client
        assert client is not None
        try:
            await client.subscribe([(self.topics.audio(name), 1), (self.topics.end(name), 1)])
            self._status(name, "accepted", f"{session.source.description} accepted")
            logger.info("session %s accepted (%d running)", name, len(self.sessions))
            outcome = await session.run()
        except aiomqtt.MqttError as exc:  # the connection is gone: the server stops
            outcome = SessionOutcome(f"failed: MQTT: {exc}", True, {})
        except Exception as exc:  # one session's bug must not stop the server or the others
            logger.exception("session %s failed", name)
            outcome = SessionOutcome(f"failed: {exc!r}", True, {})
        finally:
            del self.sessions[name]
            self._errors.pop(name, None)
        await self._unsubscribe(client, name)
        self._status(
            name,
            "ended",
            outcome.reason,
            code="failed" if outcome.failed else None,
            stats=outcome.stats,
        )
        logger.info("session %s ended: %s", name, outcome.reason)

    async def _unsubscribe(self, client: aiomqtt.Client, name: str) -> None:
        try:
            await client.unsubscribe([self.topics.audio(name), self.topics.end(name)])
        except aiomqtt.MqttError as exc:
            logger.debug("cannot unsubscribe session %s: %s", name, exc)

    # -- outgoing ------------------------------------------------------------------------------

    def _refuse(self, session: str, code: str, reason: str) -> None:
        self.refused += 1
        logger.info("session %s refused: %s", session, reason)
        self._status(session, "refused", reason, code=code)

    def _report_error(self, session: str, error: ProtocolError) -> None:
        count = self._errors[session] = self._errors.get(session, 0) + 1
        if count <= ERRORS_IN_FULL or count % 100 == 0:
            logger.warning("session %s: %s", session, error)
            suffix = "" if count <= ERRORS_IN_FULL else f" ({count} errors so far)"
            self._status(session, "error", f"{error}{suffix}", code=error.code)

    def _status(
        self,
        session: str,
        state: str,
        reason: str,
        *,
        code: str | None = None,
        stats: dict[str, Any] | None = None,
    ) -> None:
        status = ServerStatus(session, state, reason, self.options.server_id, code, stats)
        self._outbox.put_nowait(
            _Outgoing(self.topics.status(session), encode_json(status.to_dict()))
        )

    def _server_state(self, state: str) -> bytes:
        return encode_json(
            {
                "protocol": PROTOCOL,
                "server": self.options.server_id,
                "state": state,
                "group": self.options.group,
                "max_sessions": self.options.max_sessions,
                "batching": self.options.batching,
                "asr_batching": self.options.asr.enabled,
                "timestamp": utc_timestamp(),
            }
        )

    async def _write(self, client: aiomqtt.Client) -> None:
        while True:
            item = await self._outbox.get()
            if item is None:
                return
            await client.publish(item.topic, item.payload, qos=1, retain=item.retain)
