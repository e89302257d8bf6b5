"""Structured filters of workflow files as pyiceberg expressions: never SQL text.

A filter is `{column: {op: value}}`; a value is a literal, `$param` (an injected value) or
`$input.column` (the distinct values of another input's column). Comparing with a missing value
(NULL) matches nothing, as in SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import (
    AlwaysFalse,
    AlwaysTrue,
    And,
    BooleanExpression,
    EqualTo,
    GreaterThan,
    GreaterThanOrEqual,
    In,
    IsNull,
    LessThan,
    LessThanOrEqual,
    NotEqualTo,
    NotNull,
)

from calve.errors import CalveError
from calve.read.table_scan import TableScan
from calve.workflows.model import InputColumnRef, ParamRef, Predicate

_COMPARISONS: dict[str, type[BooleanExpression]] = {
    "eq": EqualTo,
    "ne": NotEqualTo,
    "lt": LessThan,
    "lte": LessThanOrEqual,
    "gt": GreaterThan,
    "gte": GreaterThanOrEqual,
}


def uses_other_inputs(predicates: Iterable[Predicate]) -> bool:
    """Whether a filter takes values from another input (so that input must be read first)."""
    return any(isinstance(_input_ref(p), InputColumnRef) for p in predicates)


def expression(
    predicates: Iterable[Predicate], params: Mapping[str, Any], tables: Mapping[str, Any]
) -> BooleanExpression:
    """The conjunction of `predicates`, their `$` values taken from `params` and `tables` (each
    input's rows: Arrow, or a scan not read yet)."""
    result: BooleanExpression = AlwaysTrue()
    for predicate in predicates:
        term = _term(predicate, lambda value: _resolve(value, params, tables))
        result = term if isinstance(result, AlwaysTrue) else And(result, term)
    return result


def _input_ref(predicate: Predicate) -> Any:
    value = predicate.value
    if isinstance(value, list):
        return next((v for v in value if isinstance(v, InputColumnRef)), None)
    return value


def _resolve(value: Any, params: Mapping[str, Any], tables: Mapping[str, Any]) -> Any:
    if isinstance(value, ParamRef):
        return params.get(value.name)
    if isinstance(value, InputColumnRef):
        table = tables.get(value.alias)
        if table is None or value.column not in table.column_names:
            raise CalveError(
                f"filter value ${value.alias}.{value.column}: input {value.alias!r} has no such column"
            )
        if isinstance(table, TableScan):  # planned, not read: read the one column (and keys), here
            keys = table.keys.column_names if table.keys is not None else []
            projection = table.table.schema().select(*dict.fromkeys([value.column, *keys]))
            table = replace(table, projection=projection).to_arrow()
        elif not isinstance(table, pa.Table):  # matched rows not read yet
            table = table.to_arrow()
        return pc.unique(table.column(value.column)).drop_null().to_pylist()
    if isinstance(value, list):
        return [_resolve(v, params, tables) for v in value]
    return value


def _term(predicate: Predicate, resolve: Callable[[Any], Any]) -> BooleanExpression:
    column, op = predicate.column, predicate.op
    if op == "is_null":
        return IsNull(column)  # type: ignore[call-arg,arg-type]
    if op == "not_null":
        return NotNull(column)  # type: ignore[call-arg,arg-type]
    value = resolve(predicate.value)
    if op == "in":
        values = value if isinstance(value, list) else [value]
        flat = [v for item in values for v in (item if isinstance(item, list) else [item]) if v is not None]
        return In(column, flat) if flat else AlwaysFalse()  # type: ignore[call-arg,arg-type]
    if op == "between":
        low, high = value
        if low is None or high is None:
            return AlwaysFalse()
        return And(_compare(GreaterThanOrEqual, column, low), _compare(LessThanOrEqual, column, high))
    if value is None:
        return AlwaysFalse()
    return _compare(_COMPARISONS[op], column, value)


def _compare(kind: type[BooleanExpression], column: str, value: Any) -> BooleanExpression:
    return kind(column, value)  # type: ignore[call-arg]  # pyiceberg's predicates take (term, literal)
