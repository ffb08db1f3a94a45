"""MQTT sink built on aiomqtt.

Topics, for a prefix ``P`` (default ``emotrack``) and a session ``S``:

``P/S/utterance``
    One JSON result message (see ``realtime/schemas/emotion_result.v1.json``) per result, QoS 1,
    in pipeline order. A result may be followed by a revision here: a result with the same
    ``utterance_seq`` and a higher ``revision`` that replaces it (with ``--speculative``, after a
    result marked ``speculative``: the speaker went on; with the default model, marked
    ``reread``: a later utterance of the speaker changed how it reads). Delivery is at least
    once: after a reconnect, or when a session is started again after a crash, a message whose
    acknowledgement had not arrived is sent again, so a subscriber may see a ``seq`` twice and
    should ignore repeats (de-duplicate on ``(session, seq)``).
``P/S/speaker_revised``
    With diarisation (``--diarize``): a JSON message (``kind`` ``speaker_revised``, same schema)
    each time re-clustering moves an utterance already published to another speaker: apply it to
    the result with the same ``utterance_seq``. Same QoS, spool and order as the results (after
    the result it revises); never retained.
``P/S/confirmed``
    With ``--speculative``: a JSON message (``kind`` ``confirmed``, same schema) when a
    speculative result stands (the hangover passed with no more speech). Same QoS, spool and
    order as the results (after the result it confirms); never retained.
``P/S/partial``
    With ``--partial``: interim results while someone speaks (``kind`` ``partial``, ``final``
    false, same schema), QoS 0, never retained, never spooled: sent when connected and the
    buffer has room, otherwise dropped (counted in ``partials_dropped``); never resent.
``P/S/status``
    Retained JSON ``{"state": "online" | "offline", "stats": {...}, ...}``. ``online`` is published
    on every (re)connection and, at most every ``status_interval`` seconds, when the pipeline's
    counters change; ``offline`` when the sink closes. The broker publishes a retained ``offline``
    (the last will) if the connection drops without a clean close. Once the input has ended,
    ``stats.ended`` says how: ``eof``, ``stopped`` or ``error: ...`` (a damaged file).

The connection is owned by one task that the sink starts in :meth:`MqttSink.open`. It reconnects
with exponential backoff; while it waits, it probes the broker's TCP port (at most every 0.5 s)
and reconnects at once when a port that was closed accepts connections again.

Where results wait until the broker acknowledged them (QoS 1 PUBACK):

* **The spool** (``spool_dir``, on by default): every result is written to an SQLite file of its
  session (see :mod:`realtime.sinks.spool`), committed and fsynced, before it is handed to the
  connection, and removed once the broker acknowledged it. What the broker never acknowledged
  survives emotrack being killed and a power loss; when the same session starts again, the sink
  delivers those results first, in their original order, then the new ones. Nothing is dropped
  while the spool works: results beyond ``buffer_size`` wait on disk only.
* **Memory**: at most ``buffer_size`` results, the next ones to send. Without a spool this is the
  only place: while disconnected the oldest are dropped (and counted) when it is full.

While connected, :meth:`MqttSink.publish` waits when the memory buffer is full (and nothing waits
on disk), so a slow broker pushes back into the pipeline's queue for this sink.

What can still be lost: with the spool off, what is in memory when emotrack dies, and what is
dropped from a full buffer. With the spool on, if it cannot be opened (a one-line warning at open)
or a write fails (disk full, I/O error: a warning), the sink carries on as without a spool from
then on. With QoS 0 a result leaves the spool once written to the socket, acknowledged or not.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import random
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt

from realtime.messages import (
    EmotionResult,
    PartialResult,
    SpeakerRevision,
    StatsSnapshot,
    UtteranceConfirmed,
)
from realtime.mqtt_client import client_kwargs
from realtime.mqtt_options import MqttOptions, check_topic_part
from realtime.serialize import (
    SCHEMA_VERSION,
    confirmation_to_dict,
    partial_to_dict,
    result_to_dict,
    revision_to_dict,
    stats_to_dict,
    to_json,
    utc_timestamp,
)
from realtime.sinks.base import Sink, SinkError
from realtime.sinks.spool import Spool, SpoolBusy, Spooled, SpoolError, other_sessions

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: While reconnecting, the broker's TCP port is probed at most this often (seconds).
PROBE_INTERVAL = 0.5


@dataclass(frozen=True)
class _Outgoing:
    topic: str
    payload: bytes
    seq: int
    row: int | None = None  # the spool's row id, once written there
    qos: int | None = None  # None: the sink's QoS; 0 for interim results (never resent)


class MqttSink(Sink):
    """Publishes results and session status to an MQTT broker.

    Args:
        session: the session id; it names the status topic and the last will.
        options: broker address, credentials, TLS and buffering (see :class:`MqttOptions`).
        name: the sink's name in logs and counters.

    Counters (read them at any time): ``sent``, ``dropped`` (discarded from a full buffer while
    disconnected, which happens only without a working spool), ``unsent`` (still waiting when
    :meth:`close` gave up; with a spool they stay in it for the next run of the session),
    ``reconnects``, ``recovered`` (results of an earlier run of the session found in the spool
    at open and delivered first).
    """

    def __init__(self, *, session: str, options: MqttOptions | None = None, name: str = "mqtt"):
        check_topic_part("session id", session, allow_slash=False)
        self.name = name
        self.session = session
        self.options = options if options is not None else MqttOptions()
        self.sent = 0
        self.dropped = 0
        self.partials_dropped = 0  # interim results not sent: disconnected or buffer full
        self.unsent = 0
        self.reconnects = 0
        self.recovered = 0
        self._buffer: collections.deque[_Outgoing] = collections.deque()
        # The spool and its one worker thread (every spool call runs there, in call order).
        self._spool: Spool | None = None
        self._spool_writable = False
        self._executor: ThreadPoolExecutor | None = None
        # Results only on disk: ``_backlog`` rows with ``_loaded_upto < row <= _disk_tail``, all
        # newer than every result in memory; the connection task moves them into memory in order.
        self._backlog = 0
        self._loaded_upto = 0
        self._disk_tail = 0
        self._loading = asyncio.Lock()  # one move from disk to memory at a time
        self._acked: list[int] = []  # delivered rows not yet removed from the spool
        self._removing: asyncio.Future[None] | None = None
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
        """Results waiting for the broker, in memory and (only there) in the spool."""
        return len(self._buffer) + self._backlog

    @property
    def spool_path(self) -> Path | None:
        """The session's spool file while the sink is open with a spool, else ``None``."""
        return None if self._spool is None else self._spool.path

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
        will = aiomqtt.Will(
            topic=self.status_topic,
            payload=self._status_payload("offline", reason="connection lost", with_stats=False),
            qos=1,
            retain=True,
        )
        kwargs = await client_kwargs(
            opts, identifier=opts.client_id, will=will, logger_name=f"{__name__}.client"
        )
        await self._open_spool()
        self._client_kwargs = kwargs
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
            await self._close_spool()
            raise

    async def publish(self, result: EmotionResult) -> None:
        self._check_running()
        if result.session != self.session:
            check_topic_part("session id", result.session, allow_slash=False)
        topic = self.options.utterance_topic(result.session)
        await self._enqueue(_Outgoing(topic, to_json(result_to_dict(result)).encode(), result.seq))

    async def revise(self, revision: SpeakerRevision) -> None:
        topic = self._topic(revision.session, self.options.revision_topic)
        payload = to_json(revision_to_dict(revision)).encode()
        await self._enqueue(_Outgoing(topic, payload, revision.seq))

    async def confirm(self, confirmation: UtteranceConfirmed) -> None:
        topic = self._topic(confirmation.session, self.options.confirmed_topic)
        payload = to_json(confirmation_to_dict(confirmation)).encode()
        await self._enqueue(_Outgoing(topic, payload, confirmation.seq))

    def _topic(self, session: str, topic_of: Callable[[str], str]) -> str:
        """The topic of a message of ``session`` (checked when not the sink's own)."""
        self._check_running()
        if session != self.session:
            check_topic_part("session id", session, allow_slash=False)
        return topic_of(session)

    async def partial(self, result: PartialResult) -> None:
        self._check_running()
        if not self._connected or self._backlog or len(self._buffer) >= self.options.buffer_size:
            self.partials_dropped += 1  # stale by the time it could go: never waits
            return
        topic = self.options.partial_topic(result.session)
        payload = to_json(partial_to_dict(result)).encode()
        self._buffer.append(_Outgoing(topic, payload, result.seq, qos=0))
        self._wake.set()

    async def _enqueue(self, item: _Outgoing) -> None:
        """Spool (when on) and buffer one outgoing message; waits while the buffer is full."""
        if self._spool_writable:
            size = self.options.buffer_size
            while self._connected and not self._backlog and len(self._buffer) >= size:
                self._space.clear()
                await self._space.wait()
                self._check_running()
            stored = await self._store(item)
            if stored is not None:
                if self._backlog or len(self._buffer) >= size:
                    self._to_backlog(stored)
                    return
                item = stored
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
            self.unsent = self.buffered
            logger.warning(
                "%s: could not deliver to %s:%d within %.1f s; %d results unsent%s",
                self.name,
                self.options.host,
                self.options.port,
                self.options.close_timeout,
                self.unsent,
                "" if self._spool is None else " (kept in the spool, see below)",
            )
        except Exception as exc:
            raise SinkError(f"{self.name}: MQTT connection task failed: {exc!r}") from exc
        finally:
            self._task = None
            self._set_connected(False)
            await self._close_spool()
        logger.info(
            "%s: closed (%d sent, %d dropped, %d unsent, %d reconnects)",
            self.name,
            self.sent,
            self.dropped,
            self.unsent,
            self.reconnects,
        )

    # -- spool ------------------------------------------------------------------------------

    async def _in_spool_thread(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        assert self._executor is not None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: function(*args, **kwargs))

    async def _open_spool(self) -> None:
        directory = self.options.spool_directory()
        if directory is None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.name}-spool")
        try:
            spool, pending, last = await self._in_spool_thread(
                Spool.open_with_backlog, directory, self.session
            )
        except SpoolBusy as exc:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise SinkError(f"{self.name}: {exc}") from None
        except (SpoolError, OSError, sqlite3.Error) as exc:
            self._executor.shutdown(wait=False)
            self._executor = None
            logger.warning(
                "%s: %s; results wait only in memory and are lost if emotrack dies", self.name, exc
            )
            return
        self._spool, self._spool_writable = spool, True
        self.recovered = self._backlog = pending
        self._loaded_upto, self._disk_tail = 0, last
        if pending:
            logger.info(
                "%s: %d results of session %s that an earlier run could not deliver are in the "
                "spool %s; delivering them first",
                self.name,
                pending,
                self.session,
                spool.path,
            )
        others = await self._in_spool_thread(other_sessions, directory, self.session)
        if others:
            logger.info(
                "%s: the spool %s also holds undelivered results of %d other sessions; they are "
                "delivered when emotrack runs again with that --session",
                self.name,
                directory,
                len(others),
            )

    async def _close_spool(self) -> None:
        spool, executor = self._spool, self._executor
        if spool is None or executor is None:
            return
        while self._removing is not None:  # the last delivered rows, in as few batches as may be
            await asyncio.wait([self._removing])
        try:
            left = await self._in_spool_thread(spool.close)
        except sqlite3.Error as exc:
            left = -1
            logger.warning("%s: cannot close the spool %s: %s", self.name, spool.path, exc)
        finally:
            self._spool, self._spool_writable, self._executor = None, False, None
            executor.shutdown(wait=False)
        if left:
            logger.warning(
                "%s: undelivered results (%s) stay in the spool %s; they are delivered when "
                "emotrack runs again with --session %s",
                self.name,
                "unknown number" if left < 0 else left,
                spool.path,
                self.session,
            )

    async def _store(self, item: _Outgoing) -> _Outgoing | None:
        """``item`` written to the spool (with its row id), or ``None`` if the spool failed."""
        assert self._spool is not None
        try:
            row = await self._in_spool_thread(
                self._spool.append, item.topic, item.seq, item.payload
            )
        except (OSError, sqlite3.Error) as exc:
            await self._spool_failed(f"cannot write to the spool {self._spool.path}: {exc}")
            return None
        return dataclasses.replace(item, row=row)

    def _to_backlog(self, item: _Outgoing) -> None:
        assert item.row is not None
        if not self._backlog:
            self._loaded_upto = item.row - 1  # every older row is in memory or delivered
        self._backlog += 1
        self._disk_tail = item.row
        self._wake.set()

    async def _spool_failed(self, reason: str) -> None:
        """Carry on without writing to the spool; what waits only on disk moves into memory."""
        self._spool_writable = False
        logger.warning(
            "%s: %s; from now on results wait only in memory and are lost if emotrack dies",
            self.name,
            reason,
        )
        if not self._backlog:
            return
        dropped = self.dropped
        await self._load_backlog(limit=-1)
        if self._backlog:  # unreadable
            self.dropped += self._backlog
            self._backlog = 0
            self._loaded_upto = self._disk_tail
        while not self._connected and len(self._buffer) > self.options.buffer_size:
            self._buffer.popleft()
            self.dropped += 1
        if self.dropped > dropped:
            logger.warning(
                "%s: %d results dropped (they stay in the spool file for a later run)",
                self.name,
                self.dropped - dropped,
            )

    async def _load_backlog(self, limit: int) -> None:
        """Move the oldest results that wait only on disk into memory (at most ``limit``)."""
        assert self._spool is not None
        async with self._loading:
            if not self._backlog:
                return
            upto = self._disk_tail
            try:
                rows = await self._in_spool_thread(
                    self._spool.load, after=self._loaded_upto, upto=upto, limit=limit
                )
            except (OSError, sqlite3.Error) as exc:
                error: Exception | None = exc
            else:
                error = None
                self._took_from_disk(rows, upto)
        if error is not None and self._spool_writable:
            await self._spool_failed(f"cannot read the spool {self._spool.path}: {error}")

    def _took_from_disk(self, rows: list[Spooled], upto: int) -> None:
        self._buffer.extend(_Outgoing(r.topic, r.payload, r.seq, r.row) for r in rows)
        self._backlog -= len(rows)
        self._loaded_upto = rows[-1].row if rows else upto
        if not rows and self._backlog:  # cannot happen while this process holds the lock
            logger.warning("%s: %d results missing from the spool", self.name, self._backlog)
            self.dropped += self._backlog
            self._backlog = 0

    def _acknowledged(self, row: int) -> None:
        """The broker has ``row``: remove it from the spool, batched, without waiting for it."""
        self._acked.append(row)
        if self._removing is None:
            self._remove_acknowledged()

    def _remove_acknowledged(self) -> None:
        if self._spool is None or not self._acked:
            return
        rows, self._acked = self._acked, []
        self._removing = asyncio.ensure_future(self._in_spool_thread(self._spool.remove, rows))
        self._removing.add_done_callback(self._removed)

    def _removed(self, future: asyncio.Future[None]) -> None:
        self._removing = None
        exc = None if future.cancelled() else future.exception()
        if exc is not None:
            # Harmless for a de-duplicating subscriber: the rows are delivered again next time.
            logger.warning("%s: cannot remove delivered results from the spool: %s", self.name, exc)
        self._remove_acknowledged()  # what was acknowledged meanwhile, in one batch

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
        self._space.set()  # waiters re-check: a disconnected sink spools or drops, never waits
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
                        "%s: %s MQTT broker %s:%d (%s); retrying in at most %.1f s",
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
        """Wait ``delay`` (plus jitter) before reconnecting, or less: a close request cuts the
        wait short once, for a last attempt to deliver, and so does a broker that is back.

        The broker's port is probed at once and then every :data:`PROBE_INTERVAL` seconds while
        it refuses connections; when it accepts them again, the wait ends. A port that accepts
        connections from the start (the broker refused the MQTT connection itself, for example
        the credentials) is not probed again: the full delay applies, so the broker is not
        hammered.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay * (1.0 + 0.2 * random.random())
        close_cuts_short = not self._close_requested.is_set()
        probing, port_was_closed = True, False
        while True:
            if probing:
                if await self._port_open(timeout=PROBE_INTERVAL):
                    if port_was_closed:
                        logger.info("%s: the broker accepts connections again", self.name)
                        return
                    probing = False  # open all along: wait the full delay
                else:
                    port_was_closed = True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            step = min(remaining, PROBE_INTERVAL) if probing else remaining
            if not close_cuts_short:
                await asyncio.sleep(step)
                continue
            # Not asyncio.wait_for: on Python 3.11 it can swallow the cancellation that close()
            # sends when its close_timeout is over, if the close request arrives at that moment.
            close = asyncio.ensure_future(self._close_requested.wait())
            try:
                done, _ = await asyncio.wait({close}, timeout=step)
            finally:
                close.cancel()
            if done:
                return

    async def _port_open(self, timeout: float) -> bool:
        """Whether a TCP connection to the broker's port succeeds (closed at once, no MQTT)."""
        try:
            async with asyncio.timeout(timeout):
                _reader, writer = await asyncio.open_connection(
                    self.options.host, self.options.port
                )
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

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
            await self._publish_status(client, watcher, "online", reason="connected")
            while True:
                self._wake.clear()
                while self._buffer or self._backlog:
                    if watcher.done():
                        watcher.result()
                    if not self._buffer:
                        await self._load_backlog(limit=self.options.buffer_size)
                        continue
                    item = self._buffer.popleft()
                    self._space.set()
                    qos = self.options.qos if item.qos is None else item.qos
                    try:
                        await self._send(client, watcher, item.topic, item.payload, qos)
                    except BaseException:
                        if item.qos != 0:
                            self._buffer.appendleft(item)  # resent after reconnecting
                        raise
                    self.sent += 1
                    if item.row is not None:
                        self._acknowledged(item.row)
                if self._closing:
                    await self._publish_status(client, watcher, "offline", reason="closed")
                    return
                if self._status_due():
                    await self._publish_status(client, watcher, "online", reason="update")
                await self._wait_for_work(watcher)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await watcher

    async def _send(
        self,
        client: aiomqtt.Client,
        watcher: asyncio.Task[None],
        topic: str,
        payload: bytes,
        qos: int,
        *,
        retain: bool = False,
    ) -> None:
        """Publish; returns when the QoS flow completed (QoS 1: the PUBACK arrived).

        Raises MqttError as soon as the connection drops: aiomqtt itself would go on waiting for
        the acknowledgement until ``timeout``.
        """
        sending = asyncio.ensure_future(client.publish(topic, payload, qos=qos, retain=retain))
        try:
            await asyncio.wait({sending, watcher}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            sending.cancel()
            raise
        if sending.done():
            return sending.result()
        sending.cancel()
        watcher.result()
        raise aiomqtt.MqttError("connection closed")

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

    async def _publish_status(
        self, client: aiomqtt.Client, watcher: asyncio.Task[None], state: str, *, reason: str
    ) -> None:
        payload = self._status_payload(state, reason=reason)
        self._stats_dirty = False
        self._last_status_at = asyncio.get_running_loop().time()
        await self._send(client, watcher, self.status_topic, payload, 1, retain=True)

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
                "buffered": self.buffered,
                "reconnects": self.reconnects,
            },
        }
        return to_json(status).encode()
