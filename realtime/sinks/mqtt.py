"""MQTT sink built on aiomqtt.

Topics, for a prefix ``P`` (default ``emotrack``) and a session ``S``:

``P/S/utterance``
    One JSON result message (see ``realtime/schemas/emotion_result.v1.json``) per result, QoS 1,
    in pipeline order. Delivery is at least once: after a reconnect the message that was in flight
    is sent again, so a subscriber may see a ``seq`` twice and should ignore repeats.
``P/S/status``
    Retained JSON ``{"state": "online" | "offline", "stats": {...}, ...}``. ``online`` is published
    on every (re)connection and, at most every ``status_interval`` seconds, when the pipeline's
    counters change; ``offline`` when the sink closes. The broker publishes a retained ``offline``
    (the last will) if the connection drops without a clean close.

The connection is owned by one task that the sink starts in :meth:`MqttSink.open`. It reconnects
with exponential backoff; while disconnected, results wait in a bounded buffer and the oldest are
dropped (and counted) when it is full. While connected, :meth:`MqttSink.publish` waits for room
instead, so a slow broker pushes back into the pipeline's queue for this sink.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
from dataclasses import dataclass
from typing import Any

import aiomqtt

from realtime.messages import EmotionResult, StatsSnapshot
from realtime.mqtt_options import MqttOptions, check_topic_part
from realtime.serialize import SCHEMA_VERSION, result_to_dict, stats_to_dict, to_json, utc_timestamp
from realtime.sinks.base import Sink, SinkError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Outgoing:
    topic: str
    payload: bytes
    seq: int


class MqttSink(Sink):
    """Publishes results and session status to an MQTT broker.

    Args:
        session: the session id; it names the status topic and the last will.
        options: broker address, credentials, TLS and buffering (see :class:`MqttOptions`).
        name: the sink's name in logs and counters.

    Counters (read them at any time): ``sent``, ``dropped`` (discarded from a full buffer while
    disconnected), ``unsent`` (still buffered when :meth:`close` gave up), ``reconnects``.
    """

    def __init__(self, *, session: str, options: MqttOptions | None = None, name: str = "mqtt"):
        check_topic_part("session id", session, allow_slash=False)
        self.name = name
        self.session = session
        self.options = options if options is not None else MqttOptions()
        self.sent = 0
        self.dropped = 0
        self.unsent = 0
        self.reconnects = 0
        self._buffer: collections.deque[_Outgoing] = collections.deque()
        self._stats: StatsSnapshot | None = None
        self._stats_dirty = False
        self._last_status_at = 0.0
        self._connected = False
        self._ever_connected = False
        self._closing = False
        self._drop_warned = False
        self._client_kwargs: dict[str, Any] = {}
        self._task: asyncio.Task[None] | None = None
        self._first_connect: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()  # work for the connection task
        self._space = asyncio.Event()  # room in the buffer, or a state change
        self._close_requested = asyncio.Event()
        self._up = asyncio.Event()  # set while connected
        self._down = asyncio.Event()  # set while not connected
        self._down.set()

    # -- public API -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def status_topic(self) -> str:
        return self.options.status_topic(self.session)

    async def wait_connected(self) -> None:
        """Return once the sink is connected to the broker."""
        await self._up.wait()

    async def wait_disconnected(self) -> None:
        """Return once the sink has noticed that it is not connected."""
        await self._down.wait()

    async def open(self) -> None:
        if self._task is not None:
            raise SinkError(f"{self.name}: already open")
        if self._closing:
            raise SinkError(f"{self.name}: a closed MQTT sink cannot be reopened; make a new one")
        opts = self.options
        password = opts.resolve_password()
        tls_context = await asyncio.to_thread(opts.build_tls_context) if opts.use_tls else None
        self._client_kwargs = {
            "hostname": opts.host,
            "port": opts.port,
            "username": opts.username,
            "password": password,
            "identifier": opts.client_id,
            "keepalive": opts.keepalive,
            "timeout": opts.timeout,
            "tls_context": tls_context,
            "tls_insecure": True if opts.tls_insecure else None,
            "will": aiomqtt.Will(
                topic=self.status_topic,
                payload=self._status_payload("offline", reason="connection lost", with_stats=False),
                qos=1,
                retain=True,
            ),
            "logger": logging.getLogger(f"{__name__}.client"),
        }
        self._first_connect = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(), name=f"{self.name}:{self.session}")
        self._task.add_done_callback(self._on_task_done)
        if not opts.fail_fast:
            return
        try:
            await self._first_connect
        except BaseException:
            task, self._task = self._task, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise

    async def publish(self, result: EmotionResult) -> None:
        self._check_running()
        if result.session != self.session:
            check_topic_part("session id", result.session, allow_slash=False)
        item = _Outgoing(
            topic=self.options.utterance_topic(result.session),
            payload=to_json(result_to_dict(result)).encode(),
            seq=result.seq,
        )
        while len(self._buffer) >= self.options.buffer_size:
            if not self._connected:
                lost = self._buffer.popleft()
                self.dropped += 1
                if not self._drop_warned:
                    self._drop_warned = True
                    logger.warning(
                        "%s: broker unreachable and buffer full (%d); dropping oldest results "
                        "(first dropped seq %d)",
                        self.name,
                        self.options.buffer_size,
                        lost.seq,
                    )
                break
            self._space.clear()
            await self._space.wait()
            self._check_running()
        self._buffer.append(item)
        self._wake.set()

    def update_stats(self, stats: StatsSnapshot) -> None:
        self._stats = stats
        self._stats_dirty = True
        self._wake.set()

    async def close(self, stats: StatsSnapshot) -> None:
        task = self._task
        if task is None:
            return
        self._stats = stats
        self._closing = True
        self._close_requested.set()
        self._wake.set()
        self._space.set()
        try:
            await asyncio.wait_for(task, timeout=self.options.close_timeout)
        except TimeoutError:
            self.unsent = len(self._buffer)
            logger.warning(
                "%s: could not deliver to %s:%d within %.1f s; %d results unsent",
                self.name,
                self.options.host,
                self.options.port,
                self.options.close_timeout,
                self.unsent,
            )
        except Exception as exc:
            raise SinkError(f"{self.name}: MQTT connection task failed: {exc!r}") from exc
        finally:
            self._task = None
            self._set_connected(False)
        logger.info(
            "%s: closed (%d sent, %d dropped, %d unsent, %d reconnects)",
            self.name,
            self.sent,
            self.dropped,
            self.unsent,
            self.reconnects,
        )

    # -- connection task --------------------------------------------------------------------

    def _check_running(self) -> None:
        task = self._task
        if task is None or self._closing:
            raise SinkError(f"{self.name}: publish() called before open() or after close()")
        if task.done():
            exc = None if task.cancelled() else task.exception()
            raise SinkError(f"{self.name}: MQTT connection task stopped: {exc!r}")

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, SinkError):
            logger.error("%s: MQTT connection task failed", self.name, exc_info=exc)

    def _set_connected(self, connected: bool) -> None:
        self._connected = connected
        if connected:
            self._down.clear()
            self._up.set()
        else:
            self._up.clear()
            self._down.set()
        self._space.set()  # waiters re-check: a disconnected sink drops instead of waiting
        if connected:
            self._drop_warned = False

    async def _run(self) -> None:
        opts = self.options
        delay = opts.reconnect_min
        try:
            while True:
                try:
                    async with aiomqtt.Client(**self._client_kwargs) as client:
                        self._on_connected()
                        delay = opts.reconnect_min
                        await self._serve(client)
                        return
                except aiomqtt.MqttError as exc:
                    was_connected = self._connected
                    self._set_connected(False)
                    first = self._first_connect
                    if first is not None and not first.done() and opts.fail_fast:
                        first.set_exception(
                            SinkError(
                                f"cannot connect to MQTT broker at {opts.host}:{opts.port}: {exc}"
                            )
                        )
                        return
                    logger.warning(
                        "%s: %s MQTT broker %s:%d (%s); retrying in %.1f s",
                        self.name,
                        "lost connection to" if was_connected else "cannot connect to",
                        opts.host,
                        opts.port,
                        exc,
                        delay,
                    )
                await self._backoff(delay)
                delay = min(delay * 2, opts.reconnect_max)
        finally:
            self._set_connected(False)

    async def _backoff(self, delay: float) -> None:
        delay *= 1.0 + 0.2 * random.random()
        if self._close_requested.is_set():
            await asyncio.sleep(delay)
            return
        # A close request cuts the wait short once, for a last attempt to deliver.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._close_requested.wait(), timeout=delay)

    def _on_connected(self) -> None:
        self._set_connected(True)
        if self._ever_connected:
            self.reconnects += 1
            logger.info("%s: reconnected to %s:%d", self.name, self.options.host, self.options.port)
        else:
            logger.info("%s: connected to %s:%d", self.name, self.options.host, self.options.port)
        self._ever_connected = True
        first = self._first_connect
        if first is not None and not first.done():
            first.set_result(None)

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Deliver buffered results in order until closing; raises MqttError on disconnection."""
        watcher = asyncio.create_task(self._watch(client), name=f"{self.name}:watch")
        try:
            await self._publish_status(client, "online", reason="connected")
            while True:
                self._wake.clear()
                while self._buffer:
                    if watcher.done():
                        watcher.result()
                    item = self._buffer.popleft()
                    self._space.set()
                    try:
                        await client.publish(item.topic, item.payload, qos=self.options.qos)
                    except BaseException:
                        self._buffer.appendleft(item)  # resent after reconnecting
                        raise
                    self.sent += 1
                if self._closing:
                    await self._publish_status(client, "offline", reason="closed")
                    return
                if self._status_due():
                    await self._publish_status(client, "online", reason="update")
                await self._wait_for_work(watcher)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await watcher

    async def _watch(self, client: aiomqtt.Client) -> None:
        # Nothing is subscribed; the iterator exists to raise MqttError when the connection drops.
        async for message in client.messages:
            logger.debug("%s: ignoring unexpected message on %s", self.name, message.topic)

    async def _wait_for_work(self, watcher: asyncio.Task[None]) -> None:
        timeout: float | None = None
        if self._stats_dirty and self.options.status_interval > 0:
            loop = asyncio.get_running_loop()
            timeout = max(0.0, self._last_status_at + self.options.status_interval - loop.time())
        wake = asyncio.ensure_future(self._wake.wait())
        try:
            done, _ = await asyncio.wait(
                {wake, watcher}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            wake.cancel()
        if watcher in done:
            watcher.result()
            raise aiomqtt.MqttError("connection closed")

    def _status_due(self) -> bool:
        if not self._stats_dirty or self.options.status_interval <= 0:
            return False
        now = asyncio.get_running_loop().time()
        return now >= self._last_status_at + self.options.status_interval

    async def _publish_status(self, client: aiomqtt.Client, state: str, *, reason: str) -> None:
        payload = self._status_payload(state, reason=reason)
        self._stats_dirty = False
        self._last_status_at = asyncio.get_running_loop().time()
        await client.publish(self.status_topic, payload, qos=1, retain=True)

    def _status_payload(self, state: str, *, reason: str, with_stats: bool = True) -> bytes:
        stats = self._stats if with_stats else None
        status = {
            "schema_version": SCHEMA_VERSION,
            "session": self.session,
            "state": state,
            "reason": reason,
            "timestamp": utc_timestamp(),
            "stats": None if stats is None else stats_to_dict(stats),
            "mqtt": {
                "sent": self.sent,
                "dropped": self.dropped,
                "buffered": len(self._buffer),
                "reconnects": self.reconnects,
            },
        }
        return to_json(status).encode()
