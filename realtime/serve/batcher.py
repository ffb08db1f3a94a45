"""Cross-session batching: one thread owns the emotion model and serves every session's requests.

Each session's :class:`~realtime.inference.InferenceStage` calls ``classify`` on its own executor
thread; :class:`CrossSessionBatcher` queues the request and blocks that thread until the owner
thread has answered it. With batching on, the owner takes every request waiting when it becomes
free (up to ``max_batch`` utterances, whole requests) and runs one forward pass for all of them;
with batching off it runs one request at a time. Either way the model is used by one thread only.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from realtime.inference import EmotionModel
from realtime.messages import PendingUtterance
from unimse.prediction import Prediction

logger = logging.getLogger(__name__)


@dataclass
class _Request:
    items: Sequence[PendingUtterance]
    future: Future[list[Prediction]] = field(default_factory=Future)


@dataclass
class BatchStats:
    """Forward passes so far: utterances and requests (sessions' batches) in each."""

    utterances: list[int] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    busy_seconds: float = 0.0

    def to_dict(self) -> dict[str, float]:
        passes = len(self.utterances)
        return {
            "forward_passes": passes,
            "utterances": sum(self.utterances),
            "mean_batch": sum(self.utterances) / passes if passes else 0.0,
            "max_batch": max(self.utterances, default=0),
            "merged_requests": sum(r - 1 for r in self.requests),
            "busy_seconds": round(self.busy_seconds, 3),
        }


class CrossSessionBatcher:
    """The one owner of an :class:`EmotionModel` in a server process."""

    def __init__(self, model: EmotionModel, *, max_batch: int, enabled: bool = True) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.model = model
        self.max_batch = max_batch
        self.enabled = enabled
        self.stats = BatchStats()
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="emotion-owner", daemon=True)
        self._thread.start()

    def classify(self, items: Sequence[PendingUtterance]) -> list[Prediction]:
        """Predictions for ``items``, in order (blocking; call from any thread but the owner)."""
        request = _Request(items)
        self._queue.put(request)
        return request.future.result()

    def close(self) -> None:
        """Finish the requests already queued, then stop the owner thread."""
        self._queue.put(None)
        self._thread.join()

    def _take(self, first: _Request) -> tuple[list[_Request], bool]:
        """``first`` and, with batching on, the requests waiting now; and whether to stop."""
        taken = [first]
        size = len(first.items)
        while self.enabled and size < self.max_batch:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                break
            if request is None:
                return taken, True
            taken.append(request)
            size += len(request.items)
        return taken, False

    def _serve(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                return
            requests, stop = self._take(first)
            items = [item for request in requests for item in request.items]
            started = time.perf_counter()
            try:
                predictions = self.model.classify(items)
            except BaseException as exc:  # handed to every waiting session, which raises it
                for request in requests:
                    request.future.set_exception(exc)
                continue
            finally:
                self.stats.busy_seconds += time.perf_counter() - started
            self.stats.utterances.append(len(items))
            self.stats.requests.append(len(requests))
            if len(requests) > 1:
                logger.debug("one pass for %d utterances of %d requests", len(items), len(requests))
            offset = 0
            for request in requests:
                count = len(request.items)
                request.future.set_result(predictions[offset : offset + count])
                offset += count
