"""Cross-session batching: one thread owns a model and serves every session's requests.

Each session's pipeline stage calls its model on its own executor thread; a :class:`ModelOwner`
queues the request and blocks that thread until the owner thread has answered it. With batching
on, the owner takes the request at the head of the queue and every other one waiting (whole
requests, while fewer than ``max_batch`` items are taken), waiting for more at most until the
first has waited ``max_wait`` seconds, and answers them all with one call of the model; with
batching off it runs one request at a time. Either way the model is used by one thread only.

A request may carry a deadline (``time.monotonic()`` seconds): one the owner takes only after its
deadline is answered with :class:`TooLate` instead of being run. :class:`CrossSessionBatcher`
owns the emotion model (one forward pass for the utterances of all waiting sessions);
:class:`~realtime.serve.models.SharedTranscriber` owns Whisper the same way.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from realtime.inference import EmotionModel, InterimInput
from realtime.messages import PendingUtterance
from unimse.prediction import Prediction

logger = logging.getLogger(__name__)

Item = TypeVar("Item")
Out = TypeVar("Out")


class TooLate(RuntimeError):
    """The model became free for a call only after the call's deadline."""


@dataclass
class _Request(Generic[Item, Out]):
    items: Sequence[Item]
    deadline: float | None = None  # time.monotonic() seconds
    asked: float = field(default_factory=time.perf_counter)
    ticket: int = 0
    future: Future[list[Out]] = field(default_factory=Future)


@dataclass
class BatchStats:
    """Model calls so far: items and requests (sessions' calls) in each."""

    utterances: list[int] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    busy_seconds: float = 0.0
    expired: int = 0  # requests answered TooLate

    def to_dict(self) -> dict[str, float]:
        passes = len(self.utterances)
        return {
            "forward_passes": passes,
            "utterances": sum(self.utterances),
            "mean_batch": sum(self.utterances) / passes if passes else 0.0,
            "max_batch": max(self.utterances, default=0),
            "merged_requests": sum(r - 1 for r in self.requests),
            "busy_seconds": round(self.busy_seconds, 3),
            "expired": self.expired,
        }


class ModelOwner(Generic[Item, Out]):
    """The one thread that calls ``run`` (a model: items in, one output per item, in order)."""

    def __init__(
        self,
        run: Callable[[list[Item]], list[Out]],
        *,
        name: str,
        max_batch: int,
        enabled: bool = True,
        max_wait: float = 0.0,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if max_wait < 0:
            raise ValueError("max_wait must be >= 0")
        self.run = run
        self.max_batch = max_batch
        self.enabled = enabled
        self.max_wait = max_wait
        self.stats = BatchStats()
        self._queue: queue.SimpleQueue[_Request[Item, Out] | None] = queue.SimpleQueue()
        self._waiting: dict[int, float] = {}  # requests not yet taken: since when
        self._waiting_lock = threading.Lock()
        self._tickets = itertools.count()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, items: Sequence[Item], deadline: float | None = None) -> list[Out]:
        """Outputs for ``items``, in order (blocking; call from any thread but the owner);
        :class:`TooLate` when the owner took them only after ``deadline``."""
        request: _Request[Item, Out] = _Request(items, deadline, ticket=next(self._tickets))
        with self._waiting_lock:
            self._waiting[request.ticket] = request.asked
        self._queue.put(request)
        return request.future.result()

    def waiting_for(self) -> float:
        """How long the longest-waiting request has waited for the model so far (0: none)."""
        with self._waiting_lock:
            oldest = min(self._waiting.values(), default=None)
        return 0.0 if oldest is None else time.perf_counter() - oldest

    def close(self) -> None:
        """Finish the requests already queued, then stop the owner thread."""
        self._queue.put(None)
        self._thread.join()

    def _take(self, first: _Request[Item, Out]) -> tuple[list[_Request[Item, Out]], bool]:
        """``first`` and, with batching on, the requests waiting now or arriving until ``first``
        has waited ``max_wait``; and whether to stop."""
        taken = [first]
        size = len(first.items)
        until = first.asked + self.max_wait
        while self.enabled and size < self.max_batch:
            timeout = until - time.perf_counter()
            try:
                request = (
                    self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if request is None:
                return taken, True
            taken.append(request)
            size += len(request.items)
        return taken, False

    def _expired(self, requests: list[_Request[Item, Out]]) -> list[_Request[Item, Out]]:
        """The requests still in time; the others are answered :class:`TooLate`."""
        now, started = time.monotonic(), time.perf_counter()
        timely = []
        for request in requests:
            with self._waiting_lock:
                self._waiting.pop(request.ticket, None)
            if request.deadline is not None and now > request.deadline:
                self.stats.expired += 1
                waited = started - request.asked
                request.future.set_exception(
                    TooLate(f"the model was free only {waited:.1f} s later")
                )
            else:
                timely.append(request)
        return timely

    def _serve(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                return
            taken, stop = self._take(first)
            requests = self._expired(taken)
            if not requests:
                continue
            items = [item for request in requests for item in request.items]
            started = time.perf_counter()
            try:
                outputs = self.run(items)
            except BaseException as exc:  # handed to every waiting session, which raises it
                for request in requests:
                    request.future.set_exception(exc)
                continue
            finally:
                self.stats.busy_seconds += time.perf_counter() - started
            self.stats.utterances.append(len(items))
            self.stats.requests.append(len(requests))
            if len(requests) > 1:
                logger.debug("one call for %d items of %d requests", len(items), len(requests))
            offset = 0
            for request in requests:
                count = len(request.items)
                request.future.set_result(outputs[offset : offset + count])
                offset += count


class CrossSessionBatcher(ModelOwner[PendingUtterance | InterimInput, Prediction]):
    """The one owner of an :class:`EmotionModel` in a server process."""

    def __init__(
        self, model: EmotionModel, *, max_batch: int, enabled: bool = True, max_wait: float = 0.0
    ) -> None:
        super().__init__(
            model.classify,
            name="emotion-owner",
            max_batch=max_batch,
            enabled=enabled,
            max_wait=max_wait,
        )
        self.model = model

    def classify(self, items: Sequence[PendingUtterance | InterimInput]) -> list[Prediction]:
        """Predictions for ``items`` (closed utterances and interim ones batch together), in
        order (blocking; call from any thread but the owner)."""
        return self.submit(items)
