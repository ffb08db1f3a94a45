"""A real Mosquitto broker for tests, on a free loopback port, configured from a temporary file.

Use the ``mosquitto_broker`` fixture (yields ``(host, port)``; re-exported by ``conftest.py``) or,
for tests that stop and restart the broker, the ``mosquitto`` fixture / :class:`MosquittoBroker`.
Both skip the test with a clear reason when the ``mosquitto`` binary is not installed.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from realtime.mosquitto import LOOPBACK as HOST
from realtime.mosquitto import find_mosquitto, free_port, write_config

__all__ = ["MosquittoBroker", "free_port", "require_mosquitto", "wait_until_ready"]


def require_mosquitto() -> str:
    binary = find_mosquitto()
    if binary is None:
        pytest.skip("mosquitto broker binary not found (install the 'mosquitto' package)")
    return binary


async def wait_until_ready(
    host: str,
    port: int,
    *,
    attempts: int = 100,
    delay: float = 0.05,
    process: subprocess.Popen[bytes] | None = None,
    tls_context: ssl.SSLContext | None = None,
    username: str | None = None,
    password: str | None = None,
) -> None:
    """Connect with an MQTT client until the broker answers; at most ``attempts`` tries."""
    last_error: Exception | None = None
    for _ in range(attempts):
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"mosquitto exited with status {process.returncode}")
        try:
            async with aiomqtt.Client(
                host,
                port,
                identifier=f"ready-{uuid.uuid4().hex[:8]}",
                timeout=2,
                tls_context=tls_context,
                username=username,
                password=password,
            ):
                return
        except aiomqtt.MqttError as exc:
            last_error = exc
        await asyncio.sleep(delay)
    raise RuntimeError(
        f"mosquitto on {host}:{port} not ready after {attempts} attempts: {last_error}"
    )


class MosquittoBroker:
    """One mosquitto process. ``start``/``stop`` may be repeated; the port stays the same.

    Args:
        workdir: holds the configuration, the log and (with ``persistence``) the database.
        persistence: keep retained messages and persistent sessions across a restart.
        extra_config: more lines for ``mosquitto.conf`` (for example authentication or TLS);
            they apply to the listener.
        allow_anonymous: accept clients without credentials.
        probe: keyword arguments for the readiness probe's client (``tls_context``,
            ``username``, ``password``) when the broker needs them.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        persistence: bool = False,
        extra_config: str = "",
        allow_anonymous: bool = True,
        probe: dict[str, Any] | None = None,
    ) -> None:
        binary = find_mosquitto()
        if binary is None:
            raise RuntimeError("mosquitto broker binary not found")
        self.binary = binary
        self.workdir = workdir
        self.host = HOST
        self.port = free_port()
        self.persistence = persistence
        self.extra_config = extra_config
        self.allow_anonymous = allow_anonymous
        self.probe = dict(probe or {})
        self.config_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._started_once = False

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def _spawn(self) -> subprocess.Popen[bytes]:
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("mosquitto is already running")
        write_config(
            self.config_path,
            self.port,
            self.host,
            allow_anonymous=self.allow_anonymous,
            persistence_dir=self.workdir if self.persistence else None,
            extra=self.extra_config,
        )
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self.process

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    async def astart(self) -> None:
        """Start and wait until a client can connect (for use inside a running event loop)."""
        for attempt in range(3):
            process = self._spawn()
            try:
                await wait_until_ready(self.host, self.port, process=process, **self.probe)
                self._started_once = True
                return
            except RuntimeError as exc:
                exited_by_itself = process.poll() is not None
                self.stop()
                error = exc
                # The free port may have been taken in the meantime: try another one, but only
                # on a first start (a restart must keep its port).
                if self._started_once or not exited_by_itself or attempt == 2:
                    break
                self.port = free_port()
        raise RuntimeError(f"{error}; log:\n{self.log()[-2000:]}")

    def start(self) -> None:
        """Start and wait until a client can connect (outside any running event loop)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(self.astart())
        else:
            raise RuntimeError("MosquittoBroker.start() inside an event loop; use 'await astart()'")

    def stop(self, *, kill: bool = False) -> None:
        """Terminate (or, with ``kill``, SIGKILL) the broker and wait for it to exit."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        if kill:
            process.kill()
        else:
            process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.fixture
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """A started :class:`MosquittoBroker` (with persistence), killed at teardown."""
    require_mosquitto()
    broker = MosquittoBroker(tmp_path_factory.mktemp("mosquitto"), persistence=True)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def mosquitto_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """``(host, port)`` of a fresh mosquitto on a free loopback port, killed at teardown."""
    require_mosquitto()
    broker = MosquittoBroker(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    try:
        yield broker.address
    finally:
        broker.stop()
