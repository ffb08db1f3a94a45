"""Ctrl-C and SIGTERM for a command that runs one piece of async work: the first signal asks the
work to stop (what was taken in is still processed and delivered), the second aborts it."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


async def run_until_signalled(
    work: Coroutine[Any, Any, T], stop: Callable[[], None], signals: list[int]
) -> T:
    """Await ``work``; the first SIGINT / SIGTERM calls ``stop``, the second cancels ``work``.
    Every signal received is appended to ``signals`` (the exit code reads them)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()

    def on_signal(sig: int) -> None:
        signals.append(sig)
        if len(signals) == 1:
            stop()
        elif task is not None:
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # not on Windows event loops
            loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await work
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(sig)
