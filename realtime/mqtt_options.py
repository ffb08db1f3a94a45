"""The MQTT sink's options: broker address, credentials, TLS and buffering.

Apart from the sink so that reading a configuration does not import the MQTT client (aiomqtt).
"""

from __future__ import annotations

import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from realtime.sinks.base import SinkError

logger = logging.getLogger("realtime.sinks.mqtt")  # the sink's logger, as before the move

_FORBIDDEN_IN_TOPIC = ("+", "#", "\x00")

#: Where results wait for the broker's acknowledgement unless ``spool_dir`` says otherwise. Spelled
#: with ``~`` so that configuration files can repeat it; ``$XDG_STATE_HOME``, when set, replaces
#: ``~/.local/state`` in it (see :meth:`MqttOptions.spool_directory`).
DEFAULT_SPOOL_DIR = "~/.local/state/emotrack/mqtt-spool"
_XDG_STATE_DEFAULT = "~/.local/state"


@dataclass(frozen=True, kw_only=True)
class MqttOptions:
    """Everything needed to reach the broker. Validated on construction.

    Secrets never appear here in plain text: the password is read, when the sink opens, from the
    environment variable named by ``password_env`` or from the file ``password_file`` (its first
    line).

    Attributes:
        host: broker host name or address.
        port: broker port (1883 for plain MQTT, usually 8883 for TLS).
        prefix: first topic level(s); may contain ``/`` but no wildcards.
        client_id: MQTT client identifier; ``None`` lets the client pick a random one.
        username: user name for authentication.
        password_env: name of an environment variable holding the password.
        password_file: path of a file whose first line is the password.
        tls: connect over TLS using the system's trusted certificates. Implied by any other
            ``tls_*`` option.
        tls_ca_file: PEM file of certificate authorities to trust instead of the system's.
        tls_cert_file: client certificate (PEM) for mutual TLS.
        tls_key_file: private key of ``tls_cert_file`` (if not inside the certificate file).
        tls_insecure: do not verify the broker's certificate or host name (testing only).
        keepalive: seconds between keepalive pings; the broker declares the client gone (and
            publishes the last will) after 1.5 times this without traffic.
        qos: QoS of result messages (status messages always use QoS 1).
        buffer_size: results kept in memory while disconnected. Beyond this, further results
            wait only in the spool; without a spool the oldest are dropped.
        status_interval: minimum seconds between status updates driven by new counters
            (0 disables them; connect and close still publish a status).
        reconnect_min: first reconnect delay in seconds; it doubles after every failure.
        reconnect_max: longest reconnect delay in seconds.
        timeout: seconds to wait for the broker to answer a connect or acknowledge a publish
            before the connection is considered lost.
        close_timeout: seconds :meth:`MqttSink.close` waits to deliver what is buffered.
        fail_fast: make :meth:`MqttSink.open` fail if the first connection attempt fails; if
            false, the sink starts anyway and buffers until the broker is reachable.
        spool_dir: directory of the on-disk spool (one SQLite file per session) that keeps every
            result until the broker acknowledged it, so that results survive emotrack being
            killed or the power failing; delivered first when the same session starts again.
            ``None`` or ``""`` turns it off (results then wait only in memory).
    """

    host: str = "localhost"
    port: int = 1883
    prefix: str = "emotrack"
    client_id: str | None = None
    username: str | None = None
    password_env: str | None = None
    password_file: str | os.PathLike[str] | None = None
    tls: bool = False
    tls_ca_file: str | os.PathLike[str] | None = None
    tls_cert_file: str | os.PathLike[str] | None = None
    tls_key_file: str | os.PathLike[str] | None = None
    tls_insecure: bool = False
    keepalive: int = 30
    qos: int = 1
    buffer_size: int = 1000
    status_interval: float = 5.0
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    timeout: float = 10.0
    close_timeout: float = 5.0
    fail_fast: bool = True
    spool_dir: str | os.PathLike[str] | None = DEFAULT_SPOOL_DIR

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("MQTT host must not be empty")
        if not 0 < self.port < 65536:
            raise ValueError(f"MQTT port must be in 1..65535, got {self.port}")
        check_topic_part("MQTT prefix", self.prefix, allow_slash=True)
        if self.prefix.startswith("$"):
            raise ValueError(
                f"MQTT prefix {self.prefix!r} must not start with '$' (the broker's own topics: "
                "no client can publish there)"
            )
        if self.password_env is not None and self.password_file is not None:
            raise ValueError("give the MQTT password by environment variable or by file, not both")
        if (self.password_env is not None or self.password_file is not None) and not self.username:
            raise ValueError("an MQTT password needs a username")
        if self.tls_key_file is not None and self.tls_cert_file is None:
            raise ValueError("an MQTT TLS key file needs a certificate file")
        if self.keepalive < 1:
            raise ValueError(f"MQTT keepalive must be at least 1 s, got {self.keepalive}")
        if self.qos not in (0, 1, 2):
            raise ValueError(f"MQTT QoS must be 0, 1 or 2, got {self.qos}")
        if self.buffer_size < 1:
            raise ValueError(f"MQTT buffer size must be at least 1, got {self.buffer_size}")
        if self.status_interval < 0:
            raise ValueError("MQTT status interval must not be negative")
        if not 0 < self.reconnect_min <= self.reconnect_max:
            raise ValueError("MQTT reconnect delays need 0 < reconnect_min <= reconnect_max")
        if self.timeout <= 0 or self.close_timeout < 0:
            raise ValueError("MQTT timeouts must be positive")

    @property
    def use_tls(self) -> bool:
        return (
            self.tls
            or self.tls_insecure
            or self.tls_ca_file is not None
            or self.tls_cert_file is not None
        )

    def utterance_topic(self, session: str) -> str:
        return f"{self.prefix}/{session}/utterance"

    def partial_topic(self, session: str) -> str:
        return f"{self.prefix}/{session}/partial"

    def revision_topic(self, session: str) -> str:
        return f"{self.prefix}/{session}/speaker_revised"

    def confirmed_topic(self, session: str) -> str:
        return f"{self.prefix}/{session}/confirmed"

    def status_topic(self, session: str) -> str:
        return f"{self.prefix}/{session}/status"

    def spool_directory(self) -> Path | None:
        """The spool directory, ``~`` expanded, or ``None`` when the spool is off.

        The default follows the XDG base directory convention: ``$XDG_STATE_HOME/emotrack/
        mqtt-spool`` when that variable is set, ``~/.local/state/emotrack/mqtt-spool`` otherwise.
        """
        if self.spool_dir is None or os.fspath(self.spool_dir) == "":
            return None
        spool_dir = os.fspath(self.spool_dir)
        state_home = os.environ.get("XDG_STATE_HOME", "")
        if spool_dir == DEFAULT_SPOOL_DIR and os.path.isabs(state_home):
            spool_dir = state_home + spool_dir.removeprefix(_XDG_STATE_DEFAULT)
        return Path(spool_dir).expanduser()

    def resolve_password(self) -> str | None:
        """Read the password from its environment variable or file; raises :class:`SinkError`."""
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if value is None:
                raise SinkError(
                    f"MQTT password variable {self.password_env} is not set in the environment"
                )
            return value
        if self.password_file is not None:
            path = Path(self.password_file)
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise SinkError(f"cannot read MQTT password file {path}: {exc.strerror}") from None
            lines = text.splitlines()
            return lines[0] if lines else ""
        return None

    def build_tls_context(self) -> ssl.SSLContext | None:
        """The TLS context for the connection, or ``None`` without TLS. Reads certificate files."""
        if not self.use_tls:
            return None
        files = {
            "CA": self.tls_ca_file,
            "certificate": self.tls_cert_file,
            "key": self.tls_key_file,
        }
        for name, file in files.items():
            if file is not None and not Path(file).is_file():  # ssl names no file in its error
                raise SinkError(f"MQTT TLS file not found: {file} (the {name} file)")
        try:
            context = ssl.create_default_context(
                cafile=None if self.tls_ca_file is None else os.fspath(self.tls_ca_file)
            )
            if self.tls_cert_file is not None:
                context.load_cert_chain(
                    os.fspath(self.tls_cert_file),
                    None if self.tls_key_file is None else os.fspath(self.tls_key_file),
                )
        except (ssl.SSLError, OSError) as exc:
            raise SinkError(f"cannot load MQTT TLS certificates: {exc}") from None
        if self.tls_insecure:
            logger.warning("MQTT TLS certificate verification is disabled (tls_insecure)")
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def check_topic_level(what: str, value: str) -> None:
    """ValueError (one line) unless ``value`` is one non-empty topic level: no ``/``, MQTT
    wildcards or whitespace (a session id, a server id, a shared-subscription group)."""
    if not value or any(ch in "/+#\x00" or ch.isspace() for ch in value):
        raise ValueError(
            f"{what} {value!r}: one MQTT topic level, not empty, without '/', '+', '#' or spaces"
        )


def check_topic_part(what: str, value: str, *, allow_slash: bool) -> None:
    if not value:
        raise ValueError(f"{what} must not be empty")
    if any(ch in value for ch in _FORBIDDEN_IN_TOPIC):
        raise ValueError(f"{what} {value!r} must not contain the MQTT wildcards + or #")
    if not allow_slash and "/" in value:
        raise ValueError(f"{what} {value!r} must not contain '/'")
    if allow_slash and (value.startswith("/") or value.endswith("/")):
        raise ValueError(f"{what} {value!r} must not start or end with '/'")
