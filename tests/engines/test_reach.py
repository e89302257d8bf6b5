"""A step's SQL reaches its inputs only: each attack tried for real on the engine, and the text check."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from calve.engines.duckdb import DuckDBEngine
from calve.engines.reach import reaches
from calve.errors import SqlError

AMOUNTS = pa.table({"account": pa.array([1, 2], pa.int64()), "amount": pa.array([5, 9], pa.int64())})
HINT = "declare the table as an input of the step"


def refused(sql: str) -> SqlError:
    with pytest.raises(SqlError) as caught:
        DuckDBEngine().run(sql, {"amounts": AMOUNTS}, {})
    assert HINT in str(caught.value)
    return caught.value


def test_copy_to_a_file_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "stolen.csv"
    refused(f"COPY (SELECT * FROM amounts) TO '{target}'")
    refused(f"EXPORT DATABASE '{tmp_path / 'export'}'")
    assert not target.exists() and not (tmp_path / "export").exists()


def test_reading_a_local_file_is_refused_however_it_is_named(tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("password\nhunter2\n")
    assert duckdb.connect().sql(f"SELECT * FROM read_csv('{secret}')").fetchall() == [("hunter2",)]
    for sql in (
        f"SELECT * FROM read_csv('{secret}')",
        f"SELECT * FROM '{secret}'",
        f"SELECT * FROM read_text('{secret}')",
        f"SELECT * FROM glob('{tmp_path}/*')",
        # built at run time, so that the text check cannot see it: the engine still refuses it
        f"SELECT * FROM query('SELECT * FROM read_' || 'csv(''{secret}'')')",
    ):
        error = refused(sql)
        assert "hunter2" not in str(error)


def test_attaching_another_database_is_refused(tmp_path: Path) -> None:
    lite = tmp_path / "other.sqlite"
    sqlite3.connect(lite).execute("CREATE TABLE t (a)").connection.commit()
    duck = tmp_path / "other.duckdb"
    duckdb.connect(str(duck)).close()
    refused(f"ATTACH '{lite}' AS other (TYPE sqlite); SELECT * FROM other.t")
    refused(f"ATTACH '{duck}' AS other; SELECT 1")
    refused(f"SELECT * FROM sqlite_scan('{lite}', 't')")


def test_extensions_cannot_be_installed_or_loaded_and_settings_cannot_change() -> None:
    refused("INSTALL httpfs")
    refused("LOAD httpfs")
    refused("SET enable_external_access = true")
    refused("SET lock_configuration = false")
    refused("RESET enable_external_access")
    refused("PRAGMA threads = 1")
    refused("CREATE PERSISTENT SECRET s (TYPE s3, KEY_ID 'k', SECRET 's')")


def test_python_variables_are_not_scanned_by_name() -> None:
    hidden = pa.table({"x": [42]})  # DuckDB's replacement scan would find this in the caller's frame
    assert duckdb.connect().sql("SELECT * FROM hidden").fetchall() == [(42,)]
    assert hidden.num_rows == 1
    with pytest.raises(SqlError, match="hidden does not exist"):
        DuckDBEngine().run("SELECT * FROM hidden", {}, {})


def test_what_a_step_makes_of_its_inputs_still_works() -> None:
    engine = DuckDBEngine(threads=2)
    sql = """
        CREATE TEMP TABLE big AS SELECT * FROM amounts WHERE amount > 6;
        CREATE TEMP VIEW doubled AS SELECT account, amount * 2 AS amount FROM big;
        CREATE MACRO plus_one(v) AS v + 1;
        CREATE TABLE scratch AS SELECT account, plus_one(amount) AS amount FROM doubled;
        INSERT INTO scratch SELECT 3, 1;
        WITH t AS (SELECT * FROM scratch) SELECT * FROM t ORDER BY account
    """
    for _ in range(2):  # and again on the same database: the run's scratch catalog went with it
        out = engine.run(sql, {"amounts": AMOUNTS}, {})
        assert out is not None and out.to_pylist() == [
            {"account": 2, "amount": 19},
            {"account": 3, "amount": 1},
        ]


@pytest.mark.parametrize(
    ("sql", "construct"),
    [
        ("COPY (SELECT 1) TO '/tmp/x.csv'", "COPY"),
        ("ATTACH 'x.db' AS x", "ATTACH"),
        ("DETACH x", "DETACH"),
        ("USE x", "USE"),
        ("INSTALL httpfs", "INSTALL"),
        ("FORCE INSTALL httpfs", "FORCE INSTALL"),
        ("LOAD httpfs", "LOAD"),
        ("SET threads = 1", "SET"),
        ("RESET threads", "RESET"),
        ("PRAGMA threads = 1", "PRAGMA"),
        ("EXPORT DATABASE '/tmp/e'", "EXPORT DATABASE"),
        ("IMPORT DATABASE '/tmp/e'", "IMPORT DATABASE"),
        ("CREATE SECRET (TYPE s3)", "CREATE SECRET"),
        ("CREATE OR REPLACE TEMPORARY SECRET s (TYPE s3)", "CREATE SECRET"),
        ("CALL pragma_version()", "CALL"),
        ("BEGIN", "BEGIN"),
        ("SELECT * FROM read_csv('/etc/passwd')", "read_csv(...)"),
        ("SELECT * FROM read_csv_auto('/etc/passwd')", "read_csv_auto(...)"),
        ("SELECT * FROM read_parquet(['a.parquet'])", "read_parquet(...)"),
        ("SELECT * FROM read_json_auto('a.json')", "read_json_auto(...)"),
        ("SELECT * FROM parquet_scan('a.parquet')", "parquet_scan(...)"),
        ("SELECT * FROM iceberg_scan('warehouse/t')", "iceberg_scan(...)"),
        ("SELECT * FROM delta_scan('t')", "delta_scan(...)"),
        ("SELECT * FROM postgres_scan('dbname=x', 'public', 't')", "postgres_scan(...)"),
        ("SELECT * FROM t WHERE k IN (SELECT * FROM read_blob('/etc/passwd'))", "read_blob(...)"),
        ("SELECT * FROM glob('*')", "glob(...)"),
        ("SELECT * FROM 'data/events.csv'", "the file path 'data/events.csv' used as a table"),
        ("CREATE VIEW v AS SELECT * FROM read_text('x')", "read_text(...)"),
        ("CREATE MACRO m(p) AS TABLE SELECT * FROM read_json(p)", "read_json(...)"),
    ],
)
def test_the_text_check_names_each_construct(sql: str, construct: str) -> None:
    (reach,) = reaches("SELECT 1;\n-- a comment\n" + sql)
    assert reach.construct == construct
    assert reach.line == 3
    assert reach.message.startswith(f"{construct} ") and HINT in reach.message


def test_the_text_check_lets_queries_and_their_own_objects_through() -> None:
    sql = """
        CREATE TEMP TABLE t AS SELECT * FROM events;
        CREATE OR REPLACE TEMP VIEW v AS SELECT day, count(*) AS n FROM t GROUP BY day;
        INSERT INTO t SELECT * FROM events; UPDATE t SET n = 1; DELETE FROM t WHERE n = 0; DROP VIEW v;
        PIVOT t ON day USING sum(n);
        WITH r AS (SELECT * FROM range(3)) SELECT * FROM r, unnest([1, 2]), "quoted name"
    """
    assert reaches(sql) == ()
