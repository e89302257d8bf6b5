"""The state store's two databases: a SQLite file (the default) and PostgreSQL (shared deployments).

Contract: the store's SQL is written once, with `?` placeholders and the syntax both databases share
(`INSERT ... ON CONFLICT`, `coalesce`, `LIMIT`); a backend supplies only what differs:

- the connection (one per thread and process, kept: opening one costs more than most queries);
- the transaction, with the locking the store relies on: every store transaction is serialized
  against every other one, as SQLite's `BEGIN IMMEDIATE` does. On PostgreSQL that is a
  transaction-level advisory lock taken first (`pg_advisory_xact_lock`), so that read-then-write
  decisions (take a lock unless a live holder has it, record a slot's run unless it has one) hold
  across processes and machines exactly as they do on one SQLite file. The store writes a few
  records per run and per heartbeat: one lock costs nothing next to a run;
- the column types of DDL (snapshot ids are 64-bit: BIGINT; times DOUBLE PRECISION);
- JSON field access, and the schema version (`PRAGMA user_version`; a `calve_schema` table).

psycopg (`calve[postgresql]`) is imported only when a `postgresql://` store is opened. A URL's
password never appears in a message: `redact` it first.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from calve.errors import ConfigError

POSTGRESQL_SCHEMES = ("postgresql", "postgres")
# the key of the advisory lock that serializes the store's transactions (any fixed 64-bit number:
# "calve" in ASCII); other applications on the same database would have to pick the same to clash
_STORE_LOCK_KEY = 0x63616C7665
INSTALL_HINT = "install it with: pip install 'calve[postgresql]'"


class Cursor(Protocol):
    """What the store reads from an executed statement (sqlite3 and psycopg cursors both have it)."""

    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


def is_postgresql_url(location: object) -> bool:
    """Whether a `state:` or `catalog:` value names a PostgreSQL database rather than a file."""
    return isinstance(location, str) and location.split("://", 1)[0].lower() in POSTGRESQL_SCHEMES


def redact(url: str) -> str:
    """`url` with its password replaced by `***`, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[-1]}"))


class Transaction:
    """One transaction of a backend: `execute` takes SQL with `?` placeholders on both databases."""

    def __init__(self, backend: Backend, connection: Any) -> None:
        self.backend = backend
        self.connection = connection

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        cursor: Cursor = self.connection.execute(self.backend.sql(sql), tuple(params))
        return cursor

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        if isinstance(self.connection, sqlite3.Connection):
            self.connection.executemany(sql, rows)
        else:
            with self.connection.cursor() as cursor:
                cursor.executemany(self.backend.sql(sql), rows)


class Backend:
    """One database of the state store: its connections, transactions and dialect."""

    name: str
    description: str  # for messages: a path, or a URL without its password
    errors: tuple[type[BaseException], ...]  # the database's own errors (a migration that failed)

    def __init__(self) -> None:
        self._local = threading.local()

    def sql(self, text: str) -> str:
        """`text` (with `?` placeholders) as this database's driver takes it."""
        return text

    def ddl(self, text: str) -> str:
        """A CREATE or ALTER statement written with SQLite's types, in this database's types."""
        return text

    def json_text(self, column: str, key: str) -> str:
        """An SQL expression: the text of `key` in the JSON object in `column` (NULL if absent)."""
        raise NotImplementedError

    def json_number(self, column: str, key: str) -> str:
        """An SQL expression: the number at `key` in the JSON object in `column` (NULL if absent)."""
        raise NotImplementedError

    insertion_order = "rowid"  # a column that orders a table's rows by insertion (step_commits)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        raise NotImplementedError
        yield  # pragma: no cover

    def schema_version(self, tx: Transaction) -> int:
        raise NotImplementedError

    def set_schema_version(self, tx: Transaction, version: int) -> None:
        raise NotImplementedError

    def _connection(self) -> Any:
        """This thread's connection, opened on first use (and again in a forked child)."""
        connection = getattr(self._local, "connection", None)
        stale = connection is not None and getattr(connection, "closed", False)  # a server that went away
        if connection is None or stale or getattr(self._local, "pid", None) != os.getpid():
            connection = self._open()
            self._local.connection, self._local.pid = connection, os.getpid()
        return connection

    def _open(self) -> Any:
        raise NotImplementedError


class SqliteBackend(Backend):
    """A SQLite file: WAL mode, `BEGIN IMMEDIATE` takes the write lock up front.

    WAL with synchronous=NORMAL: a power cut may lose the last records (never corrupt the file);
    what they describe stays safe, since checkpoints live in the tables' own commits.
    """

    name = "sqlite"
    errors = (sqlite3.Error,)

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.description = str(path)
        path.parent.mkdir(parents=True, exist_ok=True)

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield Transaction(self, db)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def json_text(self, column: str, key: str) -> str:
        return f"json_extract({column}, '$.{key}')"

    def json_number(self, column: str, key: str) -> str:
        return f"json_extract({column}, '$.{key}')"

    def schema_version(self, tx: Transaction) -> int:
        return int(tx.execute("PRAGMA user_version").fetchone()[0])

    def set_schema_version(self, tx: Transaction, version: int) -> None:
        tx.execute(f"PRAGMA user_version = {int(version)}")  # a PRAGMA takes no parameter


_TYPES = {"INTEGER": "BIGINT", "REAL": "DOUBLE PRECISION"}


class PostgresBackend(Backend):
    """A PostgreSQL database, through psycopg 3: one advisory lock serializes the store's transactions.

    Credentials come from the URL or from the standard PG* environment variables (PGPASSWORD,
    PGPASSFILE, PGSSLMODE, ...), which libpq reads itself.
    """

    name = "postgresql"
    insertion_order = "seq"  # PostgreSQL tables have no rowid: step_commits gets a serial column

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.description = redact(url)
        self.psycopg = import_psycopg("a PostgreSQL state store")
        self.errors = (self.psycopg.Error,)

    def _open(self) -> Any:
        try:
            return self.psycopg.connect(self.url, autocommit=False, connect_timeout=30)
        except self.psycopg.OperationalError as exc:
            raise ConfigError(
                f"cannot connect to the state store {self.description}: {_first_line(exc)}. Check `state:` "
                "in calve.yaml (postgresql://USER@HOST:PORT/DATABASE; the password from the URL or "
                "PGPASSWORD / ~/.pgpass) and that the server is up"
            ) from None

    def sql(self, text: str) -> str:
        return text.replace("%", "%%").replace("?", "%s")

    def ddl(self, text: str) -> str:
        return re.sub(r"\b(INTEGER|REAL)\b", lambda m: _TYPES[m.group(1)], text)

    def json_text(self, column: str, key: str) -> str:
        return f"(CAST({column} AS jsonb) ->> '{key}')"

    def json_number(self, column: str, key: str) -> str:
        return f"CAST(CAST({column} AS jsonb) ->> '{key}' AS DOUBLE PRECISION)"

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        connection = self._connection()
        try:
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (_STORE_LOCK_KEY,))
            yield Transaction(self, connection)
            connection.commit()
        except BaseException:
            try:
                connection.rollback()
            except self.psycopg.Error:  # the connection broke: the next transaction opens a new one
                self._local.connection = None
            raise

    def schema_version(self, tx: Transaction) -> int:
        tx.execute("CREATE TABLE IF NOT EXISTS calve_schema (version INTEGER NOT NULL)")
        row = tx.execute("SELECT max(version) FROM calve_schema").fetchone()
        return int(row[0] or 0)

    def set_schema_version(self, tx: Transaction, version: int) -> None:
        tx.execute("DELETE FROM calve_schema")
        tx.execute("INSERT INTO calve_schema (version) VALUES (?)", (version,))


def open_backend(location: Path | str) -> Backend:
    """The backend of a `state:` location: a `postgresql://` URL, or a SQLite file's path."""
    if is_postgresql_url(location):
        return PostgresBackend(str(location))
    return SqliteBackend(Path(location))


def import_psycopg(what: str) -> Any:
    """psycopg 3, or a ConfigError with the install hint (it is an optional extra)."""
    try:
        import psycopg
    except ImportError:
        raise ConfigError(
            f"{what} needs psycopg (PostgreSQL's driver), which is not installed: {INSTALL_HINT}"
        ) from None
    return psycopg


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
