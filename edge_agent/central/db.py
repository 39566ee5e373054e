"""One small DB-API layer over SQLite and PostgreSQL (psycopg 3), and versioned migrations per module.

SQL in edge_agent.central is written once with `?` placeholders; `Database` rewrites them to `%s`
for psycopg. Where the dialects differ (row locks, `IN` lists, upserts), the few helpers here say so
in one place. Times stored by the central side are UNIX epoch seconds (DOUBLE PRECISION) so the
same arithmetic works on both; the BI views render them as timestamps.

Schema contract (other central modules, e.g. the anchor, build on these names):
  records(device, seq, hash, kind, ts, record, ingested_at, verified, PRIMARY KEY (device, seq))
  devices(device PRIMARY KEY, site, pubkey, key_id, status 'active'|'revoked', revoked_at, ...)
A module adds its own tables with `register_migrations("module", [...])` at import time; `migrate()`
applies what is missing, in order, under a lock so two workers starting together do not race.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from edge_agent.errors import EdgeAgentError

log = logging.getLogger(__name__)

SQLITE = "sqlite"
POSTGRESQL = "postgresql"


class CentralDbError(EdgeAgentError):
    """The central database cannot be opened, migrated or written."""


# ---------------------------------------------------------------- migrations


@dataclass(frozen=True)
class Migration:
    """One schema step; `sql` runs on both dialects unless `sqlite`/`postgresql` override it."""

    version: int
    description: str
    sql: Sequence[str] = ()
    sqlite: Sequence[str] | None = None
    postgresql: Sequence[str] | None = None

    def statements(self, dialect: str) -> Sequence[str]:
        own = self.sqlite if dialect == SQLITE else self.postgresql
        return own if own is not None else self.sql


_MIGRATIONS: dict[str, list[Migration]] = {}
_ORDER: list[str] = []


def register_migrations(module: str, steps: Sequence[Migration]) -> None:
    """Declare a module's schema steps (versions ascending from 1); modules migrate in registration order."""
    versions = [m.version for m in steps]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migrations of {module!r}: versions must be 1, 2, 3...; got {versions}")
    if module not in _ORDER:
        _ORDER.append(module)
    _MIGRATIONS[module] = list(steps)


def registered_modules() -> list[str]:
    return list(_ORDER)


# ---------------------------------------------------------------- DSN


def parse_dsn(dsn: str) -> tuple[str, str]:
    """('sqlite', path) or ('postgresql', conninfo); raise CentralDbError saying what a DSN looks like."""
    parts = urlsplit(dsn)
    if parts.scheme == "sqlite":
        # SQLAlchemy's convention: sqlite:///relative.db, sqlite:////absolute/path.db
        path = unquote(dsn[len("sqlite:///") :]) if dsn.startswith("sqlite:///") else ""
        if not path and parts.netloc:  # sqlite://central.db: two slashes make the file name a host
            raise CentralDbError(
                f"--db {dsn!r}: {parts.netloc + parts.path} reads as a host after two slashes; write "
                f"sqlite:///{parts.netloc + parts.path} (three slashes, a path relative to here) or "
                "sqlite:////absolute/path.db (four)"
            )
        if not path or path == "/":
            raise CentralDbError(f"--db {dsn!r}: expected sqlite:///path/to/central.db, the path is empty")
        return SQLITE, path
    if parts.scheme in ("postgresql", "postgres"):
        if parts.netloc.count("@") > 1:  # libpq ends the user part at the first '@': the rest would be the host
            raise CentralDbError(
                f"--db {_redact(dsn)}: the user or password holds an '@'; write it as %40 "
                "(or keep the password in ~/.pgpass or PGPASSWORD)"
            )
        return POSTGRESQL, dsn
    raise CentralDbError(
        f"--db {_redact(dsn)!r}: expected sqlite:///path/to/central.db or postgresql://user@host:port/dbname"
    )


def _redact(dsn: str) -> str:
    """The DSN without its password (user:PASSWORD@, ?password=, key=value's password=), for messages."""
    dsn = re.sub(r"(://[^:/@]*:).*@", r"\1***@", dsn)
    return re.sub(r"(password\s*=\s*)('[^']*'|[^\s&]*)", r"\1***", dsn, flags=re.IGNORECASE)


def driver_error(dsn: str, exc: BaseException) -> CentralDbError | None:
    """A driver's error met while using the database (a damaged SQLite file, PostgreSQL gone mid-command) as one
    line naming the database, or None when `exc` is no database driver's."""
    pg = sys.modules.get("psycopg")
    if not isinstance(exc, sqlite3.Error) and not (pg is not None and isinstance(exc, pg.Error)):
        return None
    what = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return CentralDbError(f"--db {_redact(dsn)}: {what}{_damaged(dsn, exc)}")


def _damaged(dsn: str, exc: BaseException) -> str:
    """What to do about an SQLite file damaged on disk (SQLITE_CORRUPT), or ''."""
    if not isinstance(exc, sqlite3.Error) or (getattr(exc, "sqlite_errorcode", 0) & 0xFF) != sqlite3.SQLITE_CORRUPT:
        return ""
    path = parse_dsn(dsn)[1]
    return f"; the file is damaged: restore it from a backup (`sqlite3 {path} .recover` salvages what it can)"


# ---------------------------------------------------------------- connection


class Database:
    """A connection with one placeholder style, explicit transactions and a couple of dialect helpers.

    Not thread-safe: one Database per thread (a worker has one for ingest, one for its sweeper).
    """

    def __init__(self, dialect: str, conn: Any, where: str) -> None:
        self.dialect = dialect
        self.conn = conn
        self.where = where
        self._sql_cache: dict[str, str] = {}
        self._in_tx = False
        self._lock = threading.Lock()

    # -- SQL text
    def sql(self, text: str) -> str:
        if self.dialect == SQLITE:
            return text
        out = self._sql_cache.get(text)
        if out is None:
            out = text.replace("%", "%%").replace("?", "%s")
            if len(self._sql_cache) < 512:  # multi-row statements vary in length: keep memory bounded
                self._sql_cache[text] = out
        return out

    def in_list(self, n: int) -> str:
        """`(?, ?, ?)` for n values (both dialects accept it; n must be >= 1)."""
        return "(" + ",".join("?" * n) + ")"

    def in_values(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """`column IN (...)` for SQLite, `column = ANY(array)` for PostgreSQL (one parameter, no SQL to parse)."""
        if self.dialect == POSTGRESQL:
            return f"{column} = ANY(?)", [list(values)]
        return f"{column} IN {self.in_list(len(values))}", list(values)

    def in_pairs(self, a: str, b: str, pairs: Sequence[tuple[str, int]]) -> tuple[str, list[Any]]:
        """`(a, b) IN` a list of (text, integer) pairs: VALUES on SQLite, two unnested arrays on PostgreSQL."""
        if self.dialect == POSTGRESQL:
            return f"({a}, {b}) IN (SELECT * FROM unnest(?::text[], ?::bigint[]))", [
                [p[0] for p in pairs],
                [p[1] for p in pairs],
            ]
        return f"({a}, {b}) IN (VALUES {','.join(['(?, ?)'] * len(pairs))})", [v for p in pairs for v in p]

    def copy_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Bulk insert of rows known not to conflict: COPY on PostgreSQL, executemany on SQLite."""
        if not rows:
            return
        if self.dialect == POSTGRESQL:
            with self.conn.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as cp:
                for r in rows:
                    cp.write_row(r)
            return
        marks = ",".join("?" * len(columns))
        self.conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)

    @property
    def for_update(self) -> str:
        """Row lock suffix: PostgreSQL locks rows; SQLite's BEGIN IMMEDIATE already holds the write lock."""
        return " FOR UPDATE" if self.dialect == POSTGRESQL else ""

    # -- statements
    def execute(self, text: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(self.sql(text), tuple(params))

    def executemany(self, text: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        if self.dialect == SQLITE:
            self.conn.executemany(text, rows)
        else:
            with self.conn.cursor() as cur:
                cur.executemany(self.sql(text), rows)

    def query(self, text: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self.conn.execute(self.sql(text), tuple(params))
        return [tuple(r) for r in cur.fetchall()]

    def query_one(self, text: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = self.query(text, params)
        return rows[0] if rows else None

    def insert_many(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, conflict: str = ""
    ) -> None:
        """Multi-row INSERT in chunks (one round trip per chunk); `conflict` e.g. 'ON CONFLICT DO NOTHING'."""
        if not rows:
            return
        width = len(columns)
        # SQLite allows 32766 host parameters; PostgreSQL 65535. Stay well under both.
        chunk = max(1, 30000 // width)
        head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
        one = "(" + ",".join("?" * width) + ")"
        for i in range(0, len(rows), chunk):
            part = rows[i : i + chunk]
            params = [v for r in part for v in r]
            self.execute(head + ",".join([one] * len(part)) + (" " + conflict if conflict else ""), params)

    # -- transactions
    @contextlib.contextmanager
    def transaction(self) -> Iterator[Database]:
        """BEGIN (IMMEDIATE on SQLite: take the write lock now, not at the first write) ... COMMIT or ROLLBACK."""
        if self._in_tx:
            raise RuntimeError("nested transaction")
        self._in_tx = True
        try:
            if self.dialect == SQLITE:
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self
                except BaseException:
                    self.conn.execute("ROLLBACK")
                    raise
                self.conn.execute("COMMIT")
            else:
                with self.conn.transaction():
                    yield self
        finally:
            self._in_tx = False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- migrations
    def migrate(self, modules: Sequence[str] | None = None) -> list[tuple[str, int]]:
        """Apply missing migration steps of the registered modules; returns the (module, version) applied."""
        applied: list[tuple[str, int]] = []
        with self.transaction():
            if self.dialect == POSTGRESQL:
                # One migrator at a time across workers; released at commit.
                self.execute("SELECT pg_advisory_xact_lock(727274)")
            self._refuse_other_schema()
            self.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (module TEXT NOT NULL, version INTEGER NOT NULL,"
                " description TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (module, version))"
            )
            done = {(m, v) for m, v in self.query("SELECT module, version FROM schema_migrations")}
            import time

            for module in modules if modules is not None else _ORDER:
                for step in _MIGRATIONS.get(module, []):
                    if (module, step.version) in done:
                        continue
                    for stmt in step.statements(self.dialect):
                        try:
                            self.execute(stmt)
                        except Exception as exc:
                            raise CentralDbError(
                                f"{self.where}: migration {module} v{step.version} ({step.description}) failed: {exc}"
                            ) from exc
                    self.execute(
                        "INSERT INTO schema_migrations (module, version, description, applied_at) VALUES (?, ?, ?, ?)",
                        (module, step.version, step.description, time.time()),
                    )
                    applied.append((module, step.version))
        for module, version in applied:
            log.info("central database %s: applied migration %s v%d", self.where, module, version)
        return applied

    def _refuse_other_schema(self) -> None:
        """A database that holds tables but no schema_migrations is another program's (a device's outbox.db, another
        application's PostgreSQL database): central's tables must not be written into it."""
        if self.dialect == SQLITE:
            sql = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        else:
            sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1"
        tables = [r[0] for r in self.query(sql)]
        if tables and "schema_migrations" not in tables:
            shown = ", ".join(tables[:5]) + (f" and {len(tables) - 5} more" if len(tables) > 5 else "")
            raise CentralDbError(
                f"{self.where}: not a central database (it holds other tables: {shown}; no schema_migrations); "
                "check the path, or give central a database of its own"
            )

    def schema_versions(self) -> dict[str, int]:
        rows = self.query("SELECT module, MAX(version) FROM schema_migrations GROUP BY module")
        return {m: int(v) for m, v in rows}


def open_db(dsn: str, *, migrate: bool = True, busy_timeout_s: float = 30.0, must_exist: bool = False) -> Database:
    """Open `sqlite:///path` or `postgresql://...`; run the registered migrations unless told not to. With
    `must_exist` (commands that read, or need devices registered), an SQLite file that is not there or empty
    is an error instead of a new database: a mistyped path would otherwise show an empty central."""
    # The central schema registers itself on import; importing it here keeps open_db() self-sufficient.
    import edge_agent.central.schema  # noqa: F401

    dialect, target = parse_dsn(dsn)
    if dialect == SQLITE:
        path = Path(target)
        if not path.parent.exists():
            raise CentralDbError(f"--db {dsn}: directory {path.parent} does not exist")
        if must_exist and (not path.is_file() or path.stat().st_size == 0):
            raise CentralDbError(
                f"--db {dsn}: no central database at {path} (`central devices add` makes one; check the path)"
            )
        try:
            conn = sqlite3.connect(str(path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit survives a process crash; a power cut may lose the last
            # commits, which the broker then redelivers only if they were not yet acknowledged.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise CentralDbError(f"--db {dsn}: cannot open SQLite database: {exc}{_damaged(dsn, exc)}") from None
        db = Database(SQLITE, conn, str(path))
    else:
        try:
            import psycopg
        except ImportError:
            raise CentralDbError("PostgreSQL needs psycopg 3: pip install 'psycopg[binary]'") from None
        try:
            pconn = psycopg.connect(target, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise CentralDbError(f"--db {_redact(dsn)}: cannot connect to PostgreSQL: {exc}".strip()) from None
        db = Database(POSTGRESQL, pconn, _redact(dsn))
    if migrate:
        try:
            db.migrate()
        except BaseException:
            db.close()
            raise
    return db
