"""The embedded DuckDB engine: statements, bound parameters, errors with lines, result types."""

from __future__ import annotations

import pyarrow as pa
import pytest

from calve.engines import get_engine
from calve.engines.duckdb import DuckDBEngine, sql_parameters
from calve.errors import ConfigError, DataError, SqlError

AMOUNTS = pa.table({"account": pa.array([1, 1, 2], pa.int64()), "amount": pa.array([5, 7, 9], pa.int64())})


def test_sum_of_a_bigint_comes_out_as_a_bigint_not_a_decimal() -> None:
    out = DuckDBEngine().run(
        "SELECT account, sum(amount) AS total, count(*) AS n FROM amounts GROUP BY account ORDER BY account",
        {"amounts": AMOUNTS},
        {},
    )
    assert out is not None
    assert out.schema.field("total").type == pa.int64()  # DuckDB says HUGEINT: Arrow decimal(38, 0)
    assert out.to_pylist() == [{"account": 1, "total": 12, "n": 2}, {"account": 2, "total": 9, "n": 1}]


def test_a_sum_too_large_for_a_bigint_names_the_column_and_the_value() -> None:
    big = pa.table({"amount": pa.array([2**62, 2**62], pa.int64())})
    with pytest.raises(DataError, match=r"column 'total' .* holds 9223372036854775808, .* CAST"):
        DuckDBEngine().run("SELECT sum(amount) AS total FROM big", {"big": big}, {})


def test_values_are_bound_never_pasted() -> None:
    hostile = "x'; DROP TABLE amounts; SELECT '"
    out = DuckDBEngine().run(
        "SELECT $label AS label, count(*) AS n FROM amounts", {"amounts": AMOUNTS}, {"label": hostile}
    )
    assert out is not None and out.to_pylist() == [{"label": hostile, "n": 3}]


def test_an_sql_error_carries_the_line_within_the_whole_text() -> None:
    sql = "CREATE TEMP TABLE t AS SELECT 1 AS a;\nSELECT a,\n       nope\nFROM t"
    with pytest.raises(SqlError) as caught:
        DuckDBEngine().run(sql, {}, {})
    assert caught.value.line == 3
    assert "nope" in caught.value.engine_message


def test_parameters_of_a_text_and_unknown_engines() -> None:
    assert sql_parameters("SELECT $a, $b FROM t WHERE x = $a") == {"a", "b"}
    with pytest.raises(ConfigError, match=r"no engine named 'spark'.*duckdb"):
        get_engine("spark")


def test_what_one_run_creates_is_gone_in_the_next() -> None:
    engine = DuckDBEngine()
    sql = "CREATE TABLE scratch AS SELECT * FROM amounts; SELECT count(*) AS n FROM scratch"
    for _ in range(2):  # the second run would fail with "table scratch already exists"
        out = engine.run(sql, {"amounts": AMOUNTS}, {})
        assert out is not None and out.to_pylist() == [{"n": 3}]
