"""What every Mosquitto broker emotrack starts for itself shares: the binary, a free loopback port
and the configuration file (used by ``emotrack bench latency`` and by the test suite's broker)."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

LOOPBACK = "127.0.0.1"
# Distribution packages install the broker in an sbin folder that is often not on PATH.
_SBIN = ("/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin")


def find_mosquitto() -> str | None:
    """Path of the ``mosquitto`` binary, or None when it is not installed."""
    path = os.pathsep.join([os.environ.get("PATH", ""), *_SBIN])
    return shutil.which("mosquitto", path=path)


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on right now (another process may take it before we do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def write_config(
    path: Path,
    port: int,
    host: str = LOOPBACK,
    *,
    allow_anonymous: bool = True,
    persistence_dir: Path | None = None,
    extra: str = "",
) -> Path:
    """Write a one-listener ``mosquitto.conf`` to ``path``. ``persistence_dir`` keeps retained
    messages and sessions across restarts; ``extra`` lines (TLS, auth, logging) are appended."""
    lines = [
        f"listener {port} {host}",
        f"allow_anonymous {'true' if allow_anonymous else 'false'}",
        f"persistence {'false' if persistence_dir is None else 'true'}",
    ]
    if persistence_dir is not None:
        lines += [f"persistence_location {persistence_dir}/", "persistence_file mosquitto.db"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        lines.append("user root")  # otherwise it drops to 'mosquitto', who cannot use our folder
    if extra:
        lines.append(extra.strip())
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
