"""The stream protocol, version 1 (docs/PROTOCOL.md): topics, control messages, audio chunks.

Control messages are JSON, each checked against its JSON Schema in ``realtime/schemas/``
(``stream_start``, ``stream_end``, ``stream_status``). Audio chunks are binary: an 8-byte header
(``b"EA"``, version 1, flags 0, sequence number as unsigned 32-bit little-endian) followed by
16-bit little-endian PCM, channels interleaved, 20 to 100 ms of audio.
Everything a peer sends that breaks these rules raises :class:`ProtocolError`, whose ``code`` is
one of the status schema's codes.
"""

from __future__ import annotations

import functools
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from realtime.serialize import to_json, utc_timestamp

PROTOCOL = 1
SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
MAGIC = b"EA"
HEADER = struct.Struct("<2sBBI")  # magic, version, flags, sequence number
MIN_CHUNK_S = 0.020
MAX_CHUNK_S = 0.100
MAX_CONTROL_BYTES = 16_384


class ProtocolError(ValueError):
    """A message breaks the protocol; ``code`` names the rule (see stream_status.v1.json)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Topics:
    """Every topic of the protocol under one prefix."""

    prefix: str

    @property
    def start(self) -> str:
        return f"{self.prefix}/sessions/start"

    def shared_start(self, group: str) -> str:
        return f"$share/{group}/{self.start}"

    def audio(self, session: str) -> str:
        return f"{self.prefix}/{session}/audio"

    def end(self, session: str) -> str:
        return f"{self.prefix}/{session}/end"

    def status(self, session: str) -> str:
        return f"{self.prefix}/{session}/status"

    def results(self, session: str) -> str:
        return f"{self.prefix}/{session}/utterance"

    def server(self, server_id: str) -> str:
        """A server's retained ``online``/``offline`` state."""
        return f"{self.prefix}/servers/{server_id}"

    def session_of(self, topic: str) -> tuple[str, str] | None:
        """``(session, kind)`` of a per-session topic (kind: audio, end), else ``None``."""
        head = f"{self.prefix}/"
        if not topic.startswith(head):
            return None
        parts = topic[len(head) :].split("/")
        if len(parts) != 2 or parts[0] == "sessions":
            return None
        return parts[0], parts[1]


@dataclass(frozen=True)
class StartRequest:
    session: str
    sample_rate: int
    channels: int
    channels_as_speakers: bool
    speakers: tuple[str, ...] = ()
    options: dict[str, float] = field(default_factory=dict)
    client: str = ""
    resume_at: float = 0.0  # a taken-over session: stream time its audio starts again at
    first_seq: int = 0  # a taken-over session: the seq of its first new result
    first_utterance_seq: int | None = None  # ... the utterance_seq of its first new utterance

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "protocol": PROTOCOL,
            "session": self.session,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "channels_as_speakers": self.channels_as_speakers,
        }
        if self.speakers:
            data["speakers"] = list(self.speakers)
        if self.options:
            data["options"] = dict(self.options)
        if self.client:
            data["client"] = self.client
        if self.resume_at or self.first_seq or self.first_utterance_seq:
            data["resume"] = {"at": self.resume_at, "first_seq": self.first_seq}
            if self.first_utterance_seq is not None:
                data["resume"]["first_utterance_seq"] = self.first_utterance_seq
        return data

    @property
    def utterance_offset(self) -> int:
        """What a taken-over session adds to its utterances' numbers (``utterance_seq``): the
        ``first_utterance_seq`` of the resume, else its ``first_seq`` (a client that does not
        send it: every result had an utterance of its own)."""
        return self.first_seq if self.first_utterance_seq is None else self.first_utterance_seq

    def chunk_frames(self, seconds: float) -> int:
        return max(1, round(self.sample_rate * seconds))


@dataclass(frozen=True)
class EndRequest:
    session: str
    last_seq: int | None
    reason: str = "eof"

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": PROTOCOL,
            "session": self.session,
            "last_seq": self.last_seq,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class ServerStatus:
    session: str
    state: str  # accepted, refused, error, ended
    reason: str
    server: str
    code: str | None = None
    stats: dict[str, Any] | None = None
    timestamp: str = field(default_factory=utc_timestamp)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "protocol": PROTOCOL,
            "session": self.session,
            "state": self.state,
            "reason": self.reason,
            "server": self.server,
            "timestamp": self.timestamp,
        }
        if self.code is not None:
            data["code"] = self.code
        if self.stats is not None:
            data["stats"] = self.stats
        return data


@dataclass(frozen=True)
class Chunk:
    """One decoded audio chunk: its sequence number and (frames, channels) float32 samples."""

    seq: int
    samples: np.ndarray = field(repr=False)


@functools.cache
def _validator(name: str) -> Any:
    import jsonschema

    schema = json.loads((SCHEMAS / f"{name}.v1.json").read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def check(name: str, data: Any) -> None:
    """Raise ValueError naming the first broken rule when ``data`` does not follow schema ``name``
    (``stream_start``, ``stream_end`` or ``stream_status``)."""
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator(name).iter_errors(data))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "message"
        raise ValueError(f"{where}: {error.message}")


def _load_json(payload: bytes, code: str, what: str) -> Any:
    if len(payload) > MAX_CONTROL_BYTES:
        raise ProtocolError(code, f"{what} is {len(payload)} bytes (at most {MAX_CONTROL_BYTES})")
    try:
        return json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(code, f"{what} is not JSON: {exc}") from None


def session_hint(payload: bytes) -> str | None:
    """The session id of a start message that failed validation, if one can be read from it."""
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    session = data.get("session") if isinstance(data, dict) else None
    if isinstance(session, str) and session and not set(session) & set("/+# \x00"):
        return session
    return None


def parse_start(payload: bytes) -> StartRequest:
    data = _load_json(payload, "bad_start", "start message")
    try:
        check("stream_start", data)
    except ValueError as exc:
        raise ProtocolError("bad_start", f"start message: {exc}") from None
    channels = int(data["channels"])
    resume = data.get("resume", {})
    return StartRequest(
        session=data["session"],
        sample_rate=int(data["sample_rate"]),
        channels=channels,
        channels_as_speakers=bool(data.get("channels_as_speakers", channels == 2)),
        speakers=tuple(data.get("speakers", ())),
        options={key: float(value) for key, value in data.get("options", {}).items()},
        client=str(data.get("client", "")),
        resume_at=float(resume.get("at", 0.0)),
        first_seq=int(resume.get("first_seq", 0)),
        first_utterance_seq=(
            int(resume["first_utterance_seq"]) if "first_utterance_seq" in resume else None
        ),
    )


def parse_end(payload: bytes) -> EndRequest:
    data = _load_json(payload, "bad_end", "end message")
    try:
        check("stream_end", data)
    except ValueError as exc:
        raise ProtocolError("bad_end", f"end message: {exc}") from None
    return EndRequest(data["session"], data.get("last_seq"), data.get("reason", "eof"))


def encode_json(data: dict[str, Any]) -> bytes:
    return to_json(data).encode()


def encode_chunk(seq: int, pcm: np.ndarray) -> bytes:
    """A chunk's payload: the header, then ``pcm`` ((frames, channels) int16) interleaved."""
    if pcm.dtype != np.int16:
        raise TypeError("audio chunks carry int16 PCM")
    return HEADER.pack(MAGIC, PROTOCOL, 0, seq) + pcm.astype("<i2").tobytes()


def decode_chunk(payload: bytes, start: StartRequest) -> Chunk:
    """Check and decode an audio chunk of the session that ``start`` opened."""
    if len(payload) < HEADER.size:
        raise ProtocolError("bad_chunk", f"audio chunk of {len(payload)} bytes has no header")
    magic, version, _flags, seq = HEADER.unpack_from(payload)
    if magic != MAGIC or version != PROTOCOL:
        raise ProtocolError(
            "bad_chunk", f"audio chunk header {payload[:4]!r} is not protocol {PROTOCOL} audio"
        )
    body = len(payload) - HEADER.size
    frame_bytes = 2 * start.channels
    if body % frame_bytes:
        raise ProtocolError(
            "wrong_size",
            f"audio chunk {seq}: {body} bytes is not a whole number of {start.channels}-channel "
            "16-bit frames",
        )
    frames = body // frame_bytes
    seconds = frames / start.sample_rate
    if not MIN_CHUNK_S - 1e-9 <= seconds <= MAX_CHUNK_S + 1e-9:
        raise ProtocolError(
            "wrong_size",
            f"audio chunk {seq}: {seconds * 1000:.1f} ms of audio (chunks hold 20 to 100 ms)",
        )
    pcm = np.frombuffer(payload, dtype="<i2", offset=HEADER.size).reshape(frames, start.channels)
    return Chunk(seq, pcm.astype(np.float32) / 32768.0)
