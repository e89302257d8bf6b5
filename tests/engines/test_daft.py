"""The Daft engine on Daft's local runner: the same rows as DuckDB, values bound safely, files and URLs
refused before Daft runs anything, and the maintained list of differences checked against Daft.

Marked `daft`: needs `calve[ray]`; run apart from `-m ray` (Daft sets one runner per process)."""

from __future__ import annotations

import datetime as dt
import importlib.util
from pathlib import Path

import pyarrow as pa
import pytest

from calve.engines.duckdb import DuckDBEngine
from calve.errors import ConfigError, SqlError
from tests.conftest import require_extra

EVENTS = pa.table(
    {
        "event_id": [1, 1, 2, 3, 4],
        "account_id": [10, 10, 10, 20, 30],
        "day": [dt.date(2024, 1, d) for d in (1, 1, 2, 2, 3)],
        "sent_at": [1, 2, 3, 4, 5],
        "item": [" Tea ", "tea", "CAKE", "Tea", None],
        "amount": [1.5, 1.5, 7.0, 2.25, 0.0],
    }
)
SAME_AS_DUCKDB = [
    (Path(__file__).parents[2] / "examples/append_merge/workflows/clean_events.yaml", None),
    (
        "SELECT account_id, count(*) AS n, count(DISTINCT item) AS items, sum(amount) AS total, "
        "min(day) AS first_day, count(*) FILTER (WHERE amount > 1) AS big FROM events GROUP BY account_id",
        None,
    ),
    (
        "WITH d AS (SELECT day, sum(amount) AS gross FROM events GROUP BY day) "
        "SELECT d.day, d.gross, coalesce(e.n, 0) AS n FROM d LEFT JOIN "
        "(SELECT day, count(*) AS n FROM events WHERE amount > $min GROUP BY day) AS e USING (day) "
        "WHERE d.day BETWEEN $lo AND $hi",
        {"min": 1, "lo": dt.date(2024, 1, 1), "hi": dt.date(2024, 1, 2)},
    ),
    (
        "CREATE TEMP TABLE big AS SELECT * FROM events WHERE amount > 1;\n"
        "SELECT account_id, CASE WHEN sum(amount) > 5 THEN 'high' END AS band FROM big GROUP BY account_id",
        None,
    ),
]


@pytest.fixture(scope="module")
def engine() -> object:
    require_extra("daft")
    from daft.runners import get_or_infer_runner_type

    from calve.engines.daft import DaftEngine, _current_runner

    if _current_runner() is not None and get_or_infer_runner_type() != "native":
        pytest.skip("this process runs Daft on Ray: run `pytest -m daft` in a process of its own")
    return DaftEngine()


def _sql(spec: object) -> str:
    if isinstance(spec, Path):
        import yaml

        return str(yaml.safe_load(spec.read_text())["steps"][0]["sql"])
    return str(spec)


@pytest.mark.daft
@pytest.mark.parametrize(("spec", "params"), SAME_AS_DUCKDB)
def test_same_rows_and_types_as_duckdb(
    engine: object, spec: object, params: dict[str, object] | None
) -> None:
    sql = _sql(spec)
    params = params or {"min_amount": 1.0}
    expected = DuckDBEngine().run(sql, {"events": EVENTS}, params)
    actual = engine.run(sql, {"events": EVENTS}, params)  # type: ignore[attr-defined]
    assert expected is not None and actual is not None
    order = [(name, "ascending") for name in expected.column_names]
    assert actual.schema == expected.schema
    assert actual.sort_by(order).to_pylist() == expected.sort_by(order).to_pylist()


@pytest.mark.daft
def test_a_hostile_value_is_one_value(engine: object) -> None:
    hostile = "it's'; SELECT * FROM read_csv('/etc/passwd'); -- \\' \" \n"
    out = engine.run(
        "SELECT $v AS v, count(*) AS n FROM events WHERE item <> $v", {"events": EVENTS}, {"v": hostile}
    )  # type: ignore[attr-defined]
    assert out.to_pylist() == [{"v": hostile, "n": 4}]


@pytest.mark.daft
@pytest.mark.parametrize("table", ["read_parquet('{path}')", "read_csv('{path}')", "'{path}'"])
def test_files_are_refused_before_daft_reads_them(engine: object, tmp_path: Path, table: str) -> None:
    import pyarrow.parquet as pq

    path = tmp_path / "secret.parquet"
    pq.write_table(pa.table({"secret": ["s3cr3t"]}), path)
    with pytest.raises(SqlError, match="reads only the tables declared as its inputs"):
        engine.run(f"SELECT * FROM {table.format(path=path)}", {"events": EVENTS}, {})  # type: ignore[attr-defined]
    with pytest.raises(SqlError, match="url_download"):
        engine.run("SELECT url_download('http://127.0.0.1:9/x') AS body", {}, {})  # type: ignore[attr-defined]


@pytest.mark.daft
def test_the_maintained_lists_match_the_installed_daft(engine: object) -> None:
    """Each construct the list calls unsupported fails in Daft; each reaching function exists there."""
    import daft
    from daft.daft import list_sql_functions

    from calve.engines.daft_sql import REACHING_FUNCTIONS, reaches_out

    names = {f.name.lower() for f in list_sql_functions()}
    assert {n for n in REACHING_FUNCTIONS if not n.endswith("config")} <= names
    io_like = {n for n in names if n.startswith(("url_", "read_")) or "file" in n}
    assert all(reaches_out(n) for n in io_like), io_like  # a new Daft I/O function: list it
    session = daft.Session()
    session.create_temp_table("events", daft.from_arrow(EVENTS))
    for sql in [
        "SELECT * FROM events WHERE amount = ANY([1.5])",
        "SELECT day, sum(amount) AS s FROM events GROUP BY CUBE (day)",
        "SELECT day, sum(amount) AS s FROM events GROUP BY GROUPING SETS ((day), ())",
        "SELECT * FROM events, LATERAL (SELECT 1 AS x)",
        "SELECT CAST(day AS TIMESTAMPTZ) AS t FROM events",
        "SELECT * FROM events QUALIFY row_number() OVER (ORDER BY day) = 1",  # rewritten by calve
        "SELECT count(*) FILTER (WHERE amount > 1) AS n FROM events",  # rewritten by calve
    ]:
        with pytest.raises(Exception, match=r"Unsupported|not supported|Invalid"):
            frame = session.sql(sql)
            assert frame is not None
            frame.collect()


def test_a_missing_extra_fails_with_the_install_line() -> None:
    if importlib.util.find_spec("daft") is not None:
        pytest.skip("daft is installed here")
    from calve.engines import get_engine

    with pytest.raises(ConfigError, match=r"pip install 'calve\[ray\]'"):
        get_engine("daft").run("SELECT 1 AS a", {}, {})
