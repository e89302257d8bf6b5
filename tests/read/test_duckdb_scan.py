"""DuckDB reads of planned files: exactly ArrowScan's rows by field id, or None (fall back)."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import AlwaysTrue, BooleanExpression, EqualTo, GreaterThan
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.types import DoubleType, IntegerType, ListType, LongType, NestedField, StringType

from calve.read.duckdb_scan import local_path, matched_positions, matching_files, read_matched, read_unmatched
from calve.read.planning import plan_files
from tests.iceberg_writers import delete_positions

ALWAYS = AlwaysTrue()
SCHEMA = Schema(
    NestedField(1, "account", IntegerType(), required=False),
    NestedField(2, "day", IntegerType(), required=False),
    NestedField(3, "name", StringType(), required=False),
)


def rows(accounts: list[int], day: int) -> pa.Table:
    return pa.table(
        {
            "account": pa.array(accounts, pa.int32()),
            "day": pa.array([day] * len(accounts), pa.int32()),
            "name": pa.array([f"a{a}d{day}" for a in accounts]),
        }
    )


def create(catalog: SqlCatalog, name: str = "db.t", **properties: str) -> Table:
    table = catalog.create_table(name, schema=SCHEMA, properties=properties)
    for day in range(3):
        table.append(rows(list(range(day, 40 + day)), day))
    return table


def arrow_matched(
    table: Table, keys: pa.Table, row_filter: BooleanExpression = ALWAYS, schema: Schema | None = None
) -> pa.Table:
    """The reference: ArrowScan over the planned files, then an exact semi-join, in file order."""
    schema = schema or table.schema()
    read = ArrowScan(table.metadata, table.io, schema, row_filter).to_table(plan_files(table))
    names = keys.column_names
    key_schema = pa.schema([read.schema.field(n) for n in names])
    numbered = read.append_column("__row", pa.array(range(read.num_rows), pa.int64()))
    kept = numbered.join(keys.cast(key_schema), keys=names, join_type="left semi")
    return kept.sort_by("__row").drop_columns(["__row"])


def ordered(table: pa.Table) -> pa.Table:
    return table.sort_by([(n, "ascending") for n in table.column_names])


def keys_of(pairs: list[tuple[int, int]]) -> pa.Table:
    return pa.table(
        {
            "account": pa.array([a for a, _ in pairs], pa.int64()),
            "day": pa.array([d for _, d in pairs], pa.int64()),
        }
    )


def test_renamed_widened_and_added_columns_are_read_by_field_id(catalog: SqlCatalog) -> None:
    table = create(catalog)
    with table.update_schema() as update:
        update.rename_column("name", "label")
        update.update_column("account", LongType())
        update.add_column("score", DoubleType())
    table.append(
        pa.table(
            {
                "account": pa.array([1, 2], pa.int64()),
                "day": pa.array([7, 7], pa.int32()),
                "label": ["new1", "new2"],
                "score": [0.5, 1.5],
            }
        )
    )
    keys = keys_of([(1, 0), (2, 1), (2, 7), (39, 2), (999, 0)])
    matched = read_matched(table, plan_files(table), keys, AlwaysTrue(), table.schema())
    assert matched is not None
    expected = arrow_matched(table, keys)
    assert matched.rows.schema == expected.schema
    assert ordered(matched.rows).equals(ordered(expected))
    by_key = {(r["account"], r["day"]): r for r in matched.rows.to_pylist()}
    assert by_key[(1, 0)] == {"account": 1, "day": 0, "label": "a1d0", "score": None}  # renamed, NULL
    assert by_key[(2, 7)]["score"] == 1.5
    assert matched.rows_scanned == 3 * 40 + 2


def test_filter_and_projection_as_arrowscan(catalog: SqlCatalog) -> None:
    table = create(catalog)
    keys = keys_of([(a, d) for a in range(0, 50, 3) for d in range(3)])
    projection = table.schema().select("account", "day")
    condition = GreaterThan("name", "a2")  # a column that is not selected
    matched = read_matched(table, plan_files(table), keys, condition, projection)
    assert matched is not None
    expected = arrow_matched(table, keys, condition, projection)
    assert matched.rows.column_names == ["account", "day"]
    assert ordered(matched.rows).equals(ordered(expected))
    assert 0 < matched.rows.num_rows < len(keys)


def test_delete_files_name_mapping_and_nested_types_fall_back(catalog: SqlCatalog) -> None:
    table = catalog.create_table("db.v2", schema=SCHEMA, properties={"format-version": "2"})
    table.append(rows(list(range(10)), 0))
    keys = keys_of([(1, 0), (2, 0)])
    assert read_matched(table, plan_files(table), keys, AlwaysTrue(), table.schema()) is not None
    data_file = plan_files(table)[0].file.file_path
    delete_positions(table, {data_file: [1]})
    table.refresh()
    tasks = plan_files(table)
    assert tasks[0].delete_files
    assert read_matched(table, tasks, keys, AlwaysTrue(), table.schema()) is None
    assert matching_files(table, tasks, keys) is None
    assert read_unmatched(table, tasks, keys) is None
    positions = matched_positions(table, tasks, keys)  # raw positions: deletes do not matter
    assert positions is not None and positions[data_file].tolist() == [1, 2]

    mapping = '[{"field-id": 1, "names": ["account"]}]'
    mapped = create(catalog, "db.mapped", **{"schema.name-mapping.default": mapping})
    assert read_matched(mapped, plan_files(mapped), keys, AlwaysTrue(), mapped.schema()) is None
    assert matched_positions(mapped, plan_files(mapped), keys) is None

    nested = catalog.create_table(
        "db.nested",
        schema=Schema(
            NestedField(1, "account", IntegerType(), required=False),
            NestedField(2, "day", IntegerType(), required=False),
            NestedField(3, "tags", ListType(4, StringType(), element_required=False), required=False),
        ),
    )
    nested.append(
        pa.table({"account": pa.array([1], pa.int32()), "day": pa.array([0], pa.int32()), "tags": [["x"]]})
    )
    assert read_matched(nested, plan_files(nested), keys, AlwaysTrue(), nested.schema()) is None
    only_keys = nested.schema().select("account", "day")  # the nested column is not selected
    assert read_matched(nested, plan_files(nested), keys, AlwaysTrue(), only_keys) is not None


def test_local_paths_only_and_no_globs() -> None:
    assert local_path("file:///tmp/w/data/a.parquet") == "/tmp/w/data/a.parquet"
    assert local_path("/tmp/w/a.parquet") == "/tmp/w/a.parquet"
    assert local_path("s3://bucket/a.parquet") is None
    assert local_path("file:///tmp/w[1]/a.parquet") is None
    assert local_path("/tmp/*/a.parquet") is None


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.lists(st.tuples(st.integers(-2, 45), st.integers(-1, 3)), max_size=60))
def test_random_keys_give_the_rows_and_files_of_the_arrow_path(
    catalog: SqlCatalog, pairs: list[tuple[int, int]]
) -> None:
    try:
        table = catalog.load_table("db.random")
    except Exception:
        table = create(catalog, "db.random")
    keys = keys_of(sorted(set(pairs)))
    tasks = plan_files(table)
    matched = read_matched(table, tasks, keys, AlwaysTrue(), table.schema())
    assert matched is not None
    expected = arrow_matched(table, keys)
    assert ordered(matched.rows).to_pylist() == ordered(expected).to_pylist()

    files = matching_files(table, tasks, keys)
    positions = matched_positions(table, tasks, keys)
    assert files is not None and positions is not None
    assert {p: len(v) for p, v in positions.items()} == files
    assert sum(files.values()) == expected.num_rows
    kept = read_unmatched(table, tasks, keys)
    assert kept is not None and kept.num_rows == 120 - expected.num_rows
    if keys.num_rows:
        single = read_matched(table, tasks, keys.select(["account"]), EqualTo("day", 1), table.schema())
        assert single is not None
        reference = arrow_matched(table, keys.select(["account"]), EqualTo("day", 1))
        assert ordered(single.rows).to_pylist() == ordered(reference).to_pylist()


def test_a_matched_scan_gives_the_same_rows_in_arrow_and_inside_the_engine(catalog: SqlCatalog) -> None:
    from calve.engines.duckdb import DuckDBEngine
    from calve.read.duckdb_scan import scan_matched

    table = create(catalog)
    with table.update_schema() as update:  # read by field id, in the engine's connection too
        update.rename_column("name", "label")
    keys = keys_of([(1, 0), (2, 1), (39, 2), (999, 0)])
    scan = scan_matched(table, plan_files(table), keys, table.schema())
    assert scan is not None and scan.rows_scanned == 3 * 40
    expected = arrow_matched(table, keys)
    assert ordered(scan.to_arrow()).equals(ordered(expected))
    engine = DuckDBEngine()
    sql = "SELECT account, day, label FROM matched ORDER BY account, day"
    inside = engine.run(sql, {"matched": scan}, {})
    assert inside is not None and inside.to_pylist() == ordered(expected).to_pylist()
    again = engine.run(sql, {"matched": scan}, {})  # the temp table went with the run's connection
    assert again is not None and again.num_rows == 3
