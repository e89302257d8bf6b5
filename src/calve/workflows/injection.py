"""Injected parameters: the one list of the `$name`s calve gives a step, and the values it binds.

The loader validates a step's SQL and filters against `step_names`; the runner builds the values with
`run_values`, `input_values` and `range_union_values`; docs/workflows.md documents `CATALOGUE`, and a
test checks that it lists every entry. Values are always bound by the engine as parameters, never
pasted into SQL text.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from calve.workflows.model import Foreach, InputSpec, ParamSpec, ReadKind


@dataclass(frozen=True)
class Injected:
    """One injected name (a pattern for per-input names) and what it holds."""

    pattern: str
    meaning: str


RUN_NAMES: dict[str, str] = {
    "run_id": "the run's id",
    "workflow": "the workflow's id",
    "step": "the step's id",
    "trigger": "what started the run (manual, cron:..., interval:..., incremental:..., recovery of RUN_ID)",
    "logical_date": "the run's logical date (a date; a scheduled run's slot date, else today in UTC)",
}

CATALOGUE: tuple[Injected, ...] = (
    *(Injected(f"${name}", meaning) for name, meaning in RUN_NAMES.items()),
    Injected("$<param>", "each param of the workflow, typed"),
    Injected("$<alias>", "the current value of a `foreach` step's list param"),
    Injected("$<input>_snapshot_id", "the snapshot the input was read at"),
    Injected("$<input>_from_snapshot_id", "the checkpoint the changes start after (exclusive)"),
    Injected("$<input>_icdc_table", "the ICDC table's name (for `read: icdc`)"),
    Injected("$<input>_<col>_min", "the low end of the change range of a `ranges` column of one input"),
    Injected("$<input>_<col>_max", "the high end of the change range of a `ranges` column of one input"),
    Injected("$range_<col>_min", "the low end of that column's ranges, united over the step's inputs"),
    Injected("$range_<col>_max", "the high end of that column's ranges, united over the step's inputs"),
)


def input_names(spec: InputSpec) -> set[str]:
    """The `$name`s one input of a step injects."""
    names = {f"{spec.alias}_snapshot_id"}
    if spec.read.incremental:
        names.add(f"{spec.alias}_from_snapshot_id")
    if spec.read is ReadKind.ICDC:
        names.add(f"{spec.alias}_icdc_table")
    for column in spec.ranges:
        names |= {f"{spec.alias}_{column}_min", f"{spec.alias}_{column}_max"}
        names |= {f"range_{column}_min", f"range_{column}_max"}
    return names


def step_names(params: Iterable[ParamSpec], inputs: Iterable[InputSpec], foreach: Foreach | None) -> set[str]:
    """Every `$name` a step's SQL and filters may use."""
    names = {p.name for p in params} | set(RUN_NAMES)
    for spec in inputs:
        names |= input_names(spec)
    if foreach is not None:
        names.add(foreach.alias)
    return names


def run_values(
    params: Mapping[str, Any],
    *,
    run_id: str,
    workflow: str,
    step: str,
    trigger: str,
    logical_date: dt.date,
    foreach: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The run's own values and the params (and a foreach iteration's value)."""
    run = {"run_id": run_id, "workflow": workflow, "step": step, "trigger": trigger}
    return {**params, **run, "logical_date": logical_date, **(foreach or {})}


def input_values(
    alias: str,
    snapshot_id: int | None,
    *,
    from_snapshot_id: int | None = None,
    incremental: bool = False,
    icdc_table: str | None = None,
    ranges: Mapping[str, tuple[Any, Any]] | None = None,
) -> dict[str, Any]:
    """The values one input injects (see `input_names`)."""
    values: dict[str, Any] = {f"{alias}_snapshot_id": snapshot_id}
    if incremental:
        values[f"{alias}_from_snapshot_id"] = from_snapshot_id
    if icdc_table is not None:
        values[f"{alias}_icdc_table"] = icdc_table
    for column, (low, high) in (ranges or {}).items():
        values[f"{alias}_{column}_min"] = low
        values[f"{alias}_{column}_max"] = high
    return values


def range_union_values(ranges: Mapping[str, Iterable[tuple[Any, Any]]]) -> dict[str, Any]:
    """`$range_<col>_min/max`: each column's ranges united over the inputs (None where none is known)."""
    values: dict[str, Any] = {}
    for column, pairs in ranges.items():
        known = [(low, high) for low, high in pairs if low is not None]
        values[f"range_{column}_min"] = min((low for low, _ in known), default=None)
        values[f"range_{column}_max"] = max((high for _, high in known), default=None)
    return values
