"""Target tables of workflow steps: creation from a step's output, and conforming output to them."""

from __future__ import annotations

import contextlib
import re
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError, NoSuchTableError
from pyiceberg.table import Table
from pyiceberg.transforms import (
    BucketTransform,
    DayTransform,
    HourTransform,
    IdentityTransform,
    MonthTransform,
    Transform,
    TruncateTransform,
    YearTransform,
)

from calve.errors import CalveError, DataError

_PARTITION = re.compile(
    r"^\s*(?:(year|month|day|hour|bucket|truncate)\s*\(\s*(?:(\d+)\s*,\s*)?(\w+)\s*\)|(\w+))\s*$"
)


def parse_partition_field(text: str) -> tuple[str, Transform[Any, Any], str]:
    """Parse 'day' (identity), 'day(ts)', 'bucket(16, id)', 'truncate(4, name)': (column, transform, name)."""
    match = _PARTITION.match(text)
    if not match:
        raise ValueError(
            f"partition field {text!r} is not valid: write a column, or year/month/day/hour(column), "
            "bucket(N, column) or truncate(W, column)"
        )
    transform_name, width, column, plain = match.groups()
    if plain:
        return plain, IdentityTransform(), plain
    simple: dict[str, Transform[Any, Any]] = {
        "year": YearTransform(),
        "month": MonthTransform(),
        "day": DayTransform(),
        "hour": HourTransform(),
    }
    if transform_name in simple:
        if width:
            raise ValueError(f"{transform_name}() takes one column: {transform_name}({column})")
        return column, simple[transform_name], f"{column}_{transform_name}"
    if not width:
        raise ValueError(f"{transform_name} needs a number: {transform_name}(N, {column})")
    if transform_name == "bucket":
        return column, BucketTransform(int(width)), f"{column}_bucket"
    return column, TruncateTransform(int(width)), f"{column}_trunc"


def load_or_create(
    catalog: Catalog,
    identifier: str,
    schema: pa.Schema,
    partition_by: tuple[str, ...],
    properties: dict[str, str] | None = None,
) -> Table:
    """The target table; created from the output's schema (and the declared partitioning) if missing."""
    try:
        return catalog.load_table(identifier)
    except NoSuchTableError:
        pass
    namespace = identifier.rsplit(".", 1)[0]
    with contextlib.suppress(NamespaceAlreadyExistsError):
        catalog.create_namespace(namespace)
    columns = set(schema.names)
    for text in partition_by:
        column, _, _ = parse_partition_field(text)
        if column not in columns:
            raise CalveError(
                f"cannot create {identifier}: partition_by names {column!r}, which the step's output does "
                f"not have (its columns: {', '.join(schema.names)})"
            )
    # pyiceberg assigns field ids from an Arrow schema only without a partition spec; add it after
    table = catalog.create_table_if_not_exists(
        identifier, schema=_nullable(schema), properties=properties or {}
    )
    if partition_by and table.spec().is_unpartitioned():
        with table.update_spec() as update:
            for text in partition_by:
                column, transform, name = parse_partition_field(text)
                update.add_field(column, transform, name)
    return table


def _nullable(schema: pa.Schema) -> pa.Schema:
    return pa.schema([field.with_nullable(True) for field in schema])


def conform(data: pa.Table, target: Table, step: str) -> pa.Table:
    """Select and cast the output's columns to the target's schema, by name, or say what differs."""
    expected = target.schema().as_arrow()
    check_columns(data.column_names, expected.names, target, step)
    columns = []
    for field in expected:
        column = data.column(field.name)
        if not column.type.equals(field.type):
            try:
                column = column.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise DataError(
                    f"step {step!r}: column {field.name!r} is {column.type} but the table has {field.type} "
                    f"and it does not convert ({exc}); cast it in the step"
                ) from None
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=expected)


def check_columns(names: list[str], expected: list[str], target: Table, step: str) -> None:
    """That an output's columns are the target's, by name, or a `CalveError` saying which differ."""
    missing = [n for n in expected if n not in names]
    extra = [n for n in names if n not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if extra:
            parts.append(f"not in the table: {', '.join(extra)}")
        raise CalveError(
            f"step {step!r}: its output does not match {'.'.join(target.name())} ({'; '.join(parts)}). "
            "Name the output columns as the table's, or evolve the table's schema first"
        )
