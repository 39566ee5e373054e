"""The central database layer: DSNs, migrations on SQLite and a real PostgreSQL, one SQL path."""

from __future__ import annotations

import pytest

from edge_agent.central.db import CentralDbError, Migration, open_db, parse_dsn, register_migrations


def test_parse_dsn__sqlite_and_postgresql() -> None:
    assert parse_dsn("sqlite:////var/lib/central.db") == ("sqlite", "/var/lib/central.db")
    assert parse_dsn("sqlite:///central.db") == ("sqlite", "central.db")
    assert parse_dsn("postgresql://u@h:5432/db")[0] == "postgresql"


def test_parse_dsn__two_slashes_say_how_many_to_write() -> None:
    """sqlite://central.db makes central.db the URL's host, and the path empty: the message says so and
    gives the DSN the user meant."""
    with pytest.raises(CentralDbError) as info:
        parse_dsn("sqlite://central.db")
    assert "central.db reads as a host after two slashes; write sqlite:///central.db" in str(info.value)
    with pytest.raises(CentralDbError, match=r"write sqlite:///data/central.db \(three slashes"):
        parse_dsn("sqlite://data/central.db")
    with pytest.raises(CentralDbError, match="the path is empty"):
        parse_dsn("sqlite:///")


def test_parse_dsn__other_scheme_says_what_is_expected() -> None:
    with pytest.raises(CentralDbError, match=r"expected sqlite:///path/to/central.db or postgresql://"):
        parse_dsn("mysql://u:secret@h/db")
    with pytest.raises(CentralDbError) as info:
        parse_dsn("mysql://u:secret@h/db")
    assert "secret" not in str(info.value)


def test_open_db__unreachable_postgres_names_it_without_password() -> None:
    with pytest.raises(CentralDbError, match="cannot connect to PostgreSQL") as info:
        open_db("postgresql://u:hunter2@127.0.0.1:9/db")
    assert "hunter2" not in str(info.value)


def test_open_db__a_password_anywhere_in_the_dsn_is_not_printed() -> None:
    """A password given as ?password=, in key=value form or with a bare '@' in it was printed with the error."""
    for dsn in ("postgresql://u@127.0.0.1:9/db?sslmode=disable&password=hunter2", "host=h password=hunter2"):
        with pytest.raises(CentralDbError) as info:
            open_db(dsn)
        assert "hunter2" not in str(info.value) and "password=***" in str(info.value), str(info.value)
    with pytest.raises(CentralDbError) as info:
        open_db("postgresql://u:hunt@er2@127.0.0.1:9/db")
    message = str(info.value)
    assert "hunt" not in message and "er2" not in message, message
    assert "postgresql://u:***@127.0.0.1:9/db: the user or password holds an '@'; write it as %40" in message


def test_migrate__creates_contract_tables_once(dsn: str) -> None:
    db = open_db(dsn)
    try:
        assert db.schema_versions()["central"] >= 2
        assert db.migrate() == []  # nothing left to apply
        db.execute(
            "INSERT INTO records (device, seq, hash, prev, kind, ts, key_id, record, ingested_at, verified)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ("d1", 1, "a" * 64, "0" * 64, "trip", "2026-01-01T00:00:00.000Z", "k", '{"body":{"route":"A-B"}}', 1.5, 1),
        )
        with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
            db.execute(
                "INSERT INTO records (device, seq, hash, prev, kind, ts, key_id, record, ingested_at, verified)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ("d1", 1, "b" * 64, "0" * 64, "trip", "x", "k", "{}", 1.0, 0),
            )
        assert db.query("SELECT route FROM trips") == [("A-B",)]
    finally:
        db.close()


def test_migrate__another_module_adds_its_steps(dsn: str) -> None:
    register_migrations(
        "test_extra",
        [
            Migration(1, "a table", sql=["CREATE TABLE extra_t (x INTEGER PRIMARY KEY)"]),
            Migration(2, "a column", sql=["ALTER TABLE extra_t ADD COLUMN y TEXT"]),
        ],
    )
    db = open_db(dsn)
    try:
        assert db.schema_versions()["test_extra"] == 2
        db.execute("INSERT INTO extra_t (x, y) VALUES (?, ?)", (1, "100%"))
        assert db.query("SELECT y FROM extra_t WHERE y LIKE '%\\%%' ESCAPE '\\'") == [("100%",)]
    finally:
        db.close()


def test_register_migrations__versions_must_count_from_one() -> None:
    with pytest.raises(ValueError, match="must be 1, 2, 3"):
        register_migrations("bad", [Migration(2, "skips one", sql=["SELECT 1"])])
