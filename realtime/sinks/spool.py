"""An on-disk spool of results the MQTT broker has not acknowledged yet, one file per session.

Why SQLite (the standard library's ``sqlite3``) rather than an append-only JSON-lines file: removing
a delivered result is one ``DELETE`` instead of rewriting or compacting a file, a write torn by a
crash is rolled back instead of leaving half a line to repair, and a second process that opens the
same session's spool is refused by a lock instead of interleaving with the first.

Durability: the database runs in WAL mode with ``synchronous=FULL``, so :meth:`Spool.append`
returns only after the new row has been written *and* fsynced. A result that was appended
therefore survives the process being killed (SIGKILL, OOM killer) and a power loss or OS crash
(as far as the disk honours fsync). ``synchronous=NORMAL`` would be enough against a killed
process (the write reaches the operating system) but could lose the last results on power loss;
results arrive at most a few per second, so an fsync each is affordable. Removals use the same
setting; a removal that is lost anyway only means that the result is delivered once more, which
a subscriber de-duplicating on ``(session, seq)`` ignores.

Every method is blocking I/O: an append (with its fsync) took 0.4 ms on an idle virtual SSD and
1.5-4 ms on a loaded one, several ms on a hard disk or SD card, too long for the event loop. The
MQTT sink calls them from one worker thread, in order, and removes delivered rows in batches.
A :class:`Spool` must be used from the thread that opened it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("realtime.sinks.mqtt")  # the sink's logger: users filter on one name

SUFFIX = ".sqlite3"
_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pending (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: later rows always have larger ids
    seq INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL
);
"""


class SpoolError(RuntimeError):
    """The spool cannot be used; the message is one line meant for the user."""


class SpoolBusy(SpoolError):
    """Another process holds this session's spool."""


@dataclass(frozen=True)
class Spooled:
    """One result waiting in the spool. ``row`` orders rows: later results have larger ids."""

    row: int
    seq: int
    topic: str
    payload: bytes


def spool_path(directory: str | os.PathLike[str], session: str) -> Path:
    """The spool file of ``session`` in ``directory`` (the session id, file-name safe)."""
    name = urllib.parse.quote(session, safe="-_.")
    if name.startswith(".") or len(name) > 120:  # no hidden files; stay far below NAME_MAX
        digest = hashlib.sha256(session.encode()).hexdigest()[:16]
        name = f"{name.lstrip('.')[:100]}~{digest}"
    return Path(directory) / f"{name}{SUFFIX}"


class Spool:
    """The unacknowledged results of one session, in insertion (pipeline) order.

    Use :meth:`open`; it creates the directory and the file, takes an exclusive lock that lasts
    until :meth:`close` (or the death of the process), and moves a damaged file aside.
    """

    def __init__(self, path: Path, session: str, connection: sqlite3.Connection) -> None:
        self.path = path
        self.session = session
        self._db = connection

    @classmethod
    def open(cls, directory: str | os.PathLike[str], session: str) -> Spool:
        """Open (or create) the spool of ``session`` under ``directory``.

        A file that is not a readable spool of this session is renamed ``<file>.corrupt-<time>``
        with a one-line warning, and an empty spool replaces it. Raises :class:`SpoolBusy` when
        another process holds the spool and :class:`SpoolError` when the directory or the file
        cannot be used at all.
        """
        path = spool_path(Path(directory).expanduser(), session)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(f"cannot create MQTT spool directory {path.parent}: {exc}") from None
        try:
            return cls(path, session, _connect(path, session))
        except SpoolBusy:
            raise
        except (sqlite3.DatabaseError, SpoolError) as exc:
            if not path.exists():
                raise SpoolError(f"cannot open MQTT spool {path}: {exc}") from None
            aside = _move_aside(path)
            logger.warning(
                "MQTT spool %s is unreadable (%s); moved it aside to %s and started an empty one",
                path,
                " ".join(str(exc).split()),  # one line, whatever sqlite said
                aside.name,
            )
        try:
            return cls(path, session, _connect(path, session))
        except sqlite3.DatabaseError as exc:
            raise SpoolError(f"cannot open MQTT spool {path}: {exc}") from None

    @classmethod
    def open_with_backlog(
        cls, directory: str | os.PathLike[str], session: str
    ) -> tuple[Spool, int, int]:
        """:meth:`open`, and what an earlier run left: ``(spool, rows, largest row id)``."""
        spool = cls.open(directory, session)
        try:
            return spool, spool.count(), spool.last_row()
        except BaseException:
            spool.close()
            raise

    def append(self, topic: str, seq: int, payload: bytes) -> int:
        """Store one result durably (committed and fsynced); returns its row id."""
        cursor = self._db.execute(  # one statement: its own transaction, committed on return
            "INSERT INTO pending (seq, topic, payload) VALUES (?, ?, ?)", (seq, topic, payload)
        )
        row = cursor.lastrowid
        assert row is not None
        return row

    def load(self, *, after: int = 0, upto: int | None = None, limit: int = -1) -> list[Spooled]:
        """Rows with ``after < row <= upto``, oldest first, at most ``limit`` (-1: all)."""
        cursor = self._db.execute(
            "SELECT id, seq, topic, payload FROM pending WHERE id > ? AND id <= ? "
            "ORDER BY id LIMIT ?",
            (after, upto if upto is not None else 2**63 - 1, limit),
        )
        return [Spooled(row, seq, topic, bytes(payload)) for row, seq, topic, payload in cursor]

    def remove(self, rows: list[int]) -> None:
        """Forget delivered rows (one transaction)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany("DELETE FROM pending WHERE id = ?", [(row,) for row in rows])
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def count(self) -> int:
        (count,) = self._db.execute("SELECT count(*) FROM pending").fetchone()
        return int(count)

    def last_row(self) -> int:
        (last,) = self._db.execute("SELECT coalesce(max(id), 0) FROM pending").fetchone()
        return int(last)

    def close(self) -> int:
        """Release the spool; an empty spool's file is deleted. Returns the rows left in it."""
        try:
            left = self.count()
        except sqlite3.Error:
            left = -1
        self._db.close()
        if left == 0:
            for file in _files_of(self.path):
                with contextlib.suppress(FileNotFoundError):
                    file.unlink()
        return left


def other_sessions(directory: str | os.PathLike[str], session: str) -> list[Path]:
    """Spool files in ``directory`` that belong to sessions other than ``session``."""
    own = spool_path(Path(directory).expanduser(), session)
    try:
        return sorted(p for p in own.parent.glob(f"*{SUFFIX}") if p != own)
    except OSError:
        return []


def _connect(path: Path, session: str) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions; they are spelled out below and in append.
    db = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        _prepare(db, session)
    except sqlite3.OperationalError as exc:
        db.close()
        if exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            raise SpoolBusy(
                f"MQTT spool {path} is in use by another process "
                f"(is another emotrack running with session {session!r}?)"
            ) from None
        raise
    except BaseException:
        db.close()
        raise
    return db


def _prepare(db: sqlite3.Connection, session: str) -> None:
    # EXCLUSIVE: the lock taken by the first write below is held until close, so a second process
    # on the same session fails at once instead of sharing (and stealing) rows. The operating
    # system releases the lock when the process dies, however it dies.
    db.execute("PRAGMA locking_mode = EXCLUSIVE")
    mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise SpoolError(f"journal mode {mode!r} instead of WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("BEGIN IMMEDIATE")
    try:
        (check,) = db.execute("PRAGMA quick_check").fetchone()
        if check != "ok":
            raise SpoolError(f"integrity check failed: {check}")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, _SCHEMA_VERSION):
            raise SpoolError(f"unknown spool format {version}")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('session', ?)", (session,))
        (owner,) = db.execute("SELECT value FROM meta WHERE key = 'session'").fetchone()
        if owner != session:
            raise SpoolError(f"it belongs to session {owner!r}")
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise


def _files_of(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def _move_aside(path: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    for file, target in zip(_files_of(path), _files_of(aside), strict=True):
        try:
            file.rename(target)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise SpoolError(f"cannot move the unreadable MQTT spool {path} aside: {exc}") from None
    return aside
