"""The workflow model: the frozen specs a workflow file is loaded into, and the names they use.

These are plain values: a `Workflow` of `StepSpec`s (each with `InputSpec`s, an `OutputSpec`, and its
SQL or Python), `ParamSpec`s and `TriggerSpec`s. `calve.workflows.loader` builds them from YAML and
validates them; the runner and the scheduler only read them. The file format is documented in
docs/workflows.md.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from calve.engines import EngineSpec
from calve.errors import ConfigError, did_you_mean
from calve.workflows.values import PARAM_TYPES, RELATIVE_DATE
from calve.write.modes import WriteMode as WriteMode  # workflow files use calve.write's modes


class ReadKind(StrEnum):
    """How a step reads one input table."""

    ICDC = "icdc"  # the pending appended rows, through the published zero-copy ICDC table
    INSERTED = "inserted"  # the rows inserted since the checkpoint (any kind of snapshot)
    CHANGELOG = "changelog"  # inserted and deleted rows, with a _change_type column
    KEYS = "keys"  # the distinct values of `keys` over inserted and deleted rows
    RANGES = "ranges"  # no rows: only the change ranges of `ranges` columns (and the checkpoint)
    TABLE = "table"  # the whole table (optionally filtered), pinned at one snapshot for the run

    @property
    def incremental(self) -> bool:
        return self is not ReadKind.TABLE


class Strategy(StrEnum):
    """How calve keeps a step's aggregate output up to date (`strategy:`; see docs/workflows.md)."""

    AUTO = "auto"  # calve chooses from the SQL and the data (`calve explain` says which and why)
    AGGREGATE = "aggregate"  # maintain a mergeable state from the input's changelog
    FILTER_JOIN = "filter_join"  # re-aggregate the changed group keys from all their rows
    RECOMPUTE = "recompute"  # re-aggregate everything, every run


class StepKind(StrEnum):
    SQL = "sql"
    PYTHON = "python"
    ICDC = "icdc"
    COMPACT = "compact"


class TriggerKind(StrEnum):
    CRON = "cron"
    INTERVAL = "interval"
    INCREMENTAL = "incremental"


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str
    default: Any = None
    required: bool = False
    description: str = ""

    @property
    def relative_default(self) -> tuple[int, str] | None:
        """A date default written `logical_date - N days` (N a number or an int param): (sign, N)."""
        if self.type != "date" or not isinstance(self.default, str):
            return None
        match = RELATIVE_DATE.match(self.default)
        if not match:
            return None
        sign, amount = match.groups()
        return (-1 if sign == "-" else 1, amount or "0")

    def parse(self, value: Any) -> Any:
        """Convert a value from YAML or from `--param k=v` to this param's type."""
        if self.type.startswith("list["):
            item = PARAM_TYPES[self.type[5:-1]]
            if isinstance(value, str):
                value = [v for v in (p.strip() for p in value.split(",")) if v]
            if not isinstance(value, list):
                raise ValueError(f"{value!r} is not a list (give a YAML list, or comma-separated values)")
            return [item(v) for v in value]
        return PARAM_TYPES[self.type](value)


# Filters: {column: {op: value}}; a value is a literal, `$param`, or `$input.column` (its distinct values).
FILTER_OPS = ("eq", "ne", "lt", "lte", "gt", "gte", "between", "in", "is_null", "not_null")


@dataclass(frozen=True)
class ParamRef:
    name: str


@dataclass(frozen=True)
class InputColumnRef:
    alias: str
    column: str


FilterValue = Any  # a literal, ParamRef or InputColumnRef (or a list of them for `between`)


@dataclass(frozen=True)
class Predicate:
    column: str
    op: str
    value: FilterValue = None


@dataclass(frozen=True)
class InputSpec:
    alias: str
    table: str
    read: ReadKind
    keys: tuple[str, ...] = ()
    ranges: tuple[str, ...] = ()
    filter: tuple[Predicate, ...] = ()
    columns: tuple[str, ...] = ()  # projection (all columns when empty)
    match: str | None = None  # another input whose key tuples this one's rows must have
    # `ranges: {col: month}`: widen that column's change range to whole days, months or years
    # (values.GRAINS; values.widen), for a range overwrite at that grain
    range_grains: tuple[tuple[str, str], ...] = ()

    def range_grain(self, column: str) -> str | None:
        """The grain a `ranges` column's change range is widened to, or None to keep it as is."""
        return dict(self.range_grains).get(column)


@dataclass(frozen=True)
class OutputSpec:
    table: str
    mode: WriteMode
    keys: tuple[str, ...] = ()
    delete_column: str | None = None
    filter: tuple[Predicate, ...] = ()
    partition_by: tuple[str, ...] = ()
    properties: tuple[tuple[str, str], ...] = ()  # table properties set when the table is created
    sort_by: tuple[str, ...] = ()  # rows are written in this order (narrow file and row-group bounds)


@dataclass(frozen=True)
class Foreach:
    param: str
    alias: str


@dataclass(frozen=True)
class Compaction:
    table: str
    small_file_bytes: int
    min_files: int


@dataclass(frozen=True)
class Check:
    """A check on a step's recomputed rows (run on every backfill chunk before it commits).

    `sql` must return no rows (the rows it returns are the offence); `equal` is two scalar queries
    whose values must be equal (a row count of the input range against a sum of the output). The
    queries see the step's inputs under their aliases and the recomputed rows as `output`.
    """

    name: str
    sql: str | None = None
    equal: tuple[str, str] | None = None


@dataclass(frozen=True)
class StepSpec:
    id: str
    kind: StepKind
    inputs: tuple[InputSpec, ...] = ()
    output: OutputSpec | None = None
    depends_on: tuple[str, ...] = ()
    sql: str | None = None
    sql_origin: tuple[Path, int] | None = None  # the file and line where the SQL text starts
    python: str | None = None
    icdc_for: str | None = None
    compact: Compaction | None = None
    foreach: Foreach | None = None
    description: str = ""
    strategy: Strategy | None = None  # an aggregate over one whole table, kept up to date by calve
    checks: tuple[Check, ...] = ()  # run on each backfill chunk of this step before it commits

    @property
    def incremental_inputs(self) -> tuple[InputSpec, ...]:
        """The inputs whose changes the step processes (a strategy step's one input is one)."""
        if self.strategy is not None:
            return self.inputs
        return tuple(i for i in self.inputs if i.read.incremental)


@dataclass(frozen=True)
class TriggerSpec:
    kind: TriggerKind
    cron: str | None = None
    interval_s: int | None = None
    sources: tuple[str, ...] = ()
    when: str = "any"
    min_interval_s: int = 0

    @property
    def key(self) -> str:
        """Stable name of this trigger, used for its scheduling state."""
        if self.kind is TriggerKind.CRON:
            return f"cron:{self.cron}"
        if self.kind is TriggerKind.INTERVAL:
            return f"interval:{self.interval_s}s"
        return f"incremental:{self.when}:{','.join(self.sources)}"


@dataclass(frozen=True)
class Workflow:
    id: str
    path: Path
    version: str
    description: str
    params: tuple[ParamSpec, ...]
    triggers: tuple[TriggerSpec, ...]
    steps: tuple[StepSpec, ...]  # in a valid run order (dependencies first)
    # `engine:` of the workflow file, and the line of that key; None: the project's engine (calve.yaml)
    engine: EngineSpec | None = None
    engine_line: int | None = None

    def step(self, step_id: str) -> StepSpec:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise ConfigError(
            f"workflow {self.id!r} has no step {step_id!r}{did_you_mean(step_id, [s.id for s in self.steps])}"
        )

    def param(self, name: str) -> ParamSpec | None:
        return next((p for p in self.params if p.name == name), None)

    def consumer_name(self, step: StepSpec) -> str:
        """The consumer whose checkpoints a step commits into its output table."""
        return f"{self.id}-{step.id}"

    def resolve_params(self, given: dict[str, Any], logical_date: dt.date | None = None) -> dict[str, Any]:
        """Typed values of every param: the given ones (strings from the CLI are parsed) or defaults.

        A date default written `logical_date - N days` is computed from the run's logical date.
        """
        unknown = [k for k in given if self.param(k) is None]
        if unknown:
            names = [p.name for p in self.params]
            raise ConfigError(
                f"workflow {self.id!r} has no param {unknown[0]!r}{did_you_mean(unknown[0], names)}; "
                f"its params are: {', '.join(names) or '(none)'}"
            )
        values: dict[str, Any] = {}
        for param in self.params:
            if param.name in given:
                try:
                    values[param.name] = param.parse(given[param.name])
                except (TypeError, ValueError) as exc:
                    raise ConfigError(
                        f"param {param.name!r} of workflow {self.id!r} must be a {param.type}: {exc}"
                    ) from None
            elif param.required:
                raise ConfigError(
                    f"workflow {self.id!r} needs param {param.name!r} ({param.type}): "
                    f"pass --param {param.name}=VALUE"
                )
            else:
                values[param.name] = param.default
        for param in self.params:
            relative = param.relative_default
            if relative is not None and param.name not in given:
                sign, amount = relative
                days = int(amount) if amount.isdigit() else int(values.get(amount) or 0)
                base = logical_date or dt.datetime.now(dt.UTC).date()
                values[param.name] = base + dt.timedelta(days=sign * days)
        return values

    @property
    def source_tables(self) -> set[str]:
        """Tables read by some step and written by none: pinned once at the start of a run."""
        written = {s.output.table for s in self.steps if s.output}
        return {i.table for s in self.steps for i in s.inputs} - written

    @property
    def output_tables(self) -> set[str]:
        return {s.output.table for s in self.steps if s.output}
