"""Planning a backfill: the chunks of its range, and what it will rewrite, read and set off downstream.

`plan_backfill` checks everything a backfill needs before anything runs: the workflow and its steps,
that each target exists and has a range column (`calve.workflows.versions`), the range and the
chunk size. It estimates the rows and files each step reads and rewrites from manifest statistics
(no data is read), and lists the downstream workflows that will see the rewrite through their
incremental inputs. `calve.workflows.backfill` runs the plan.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import BooleanExpression
from pyiceberg.table import Table

from calve.catalog import load_table
from calve.errors import CalveError
from calve.read.planning import plan_files
from calve.workflows.filters import expression
from calve.workflows.model import Predicate, ReadKind, StepKind, StepSpec, Workflow
from calve.workflows.versions import RangeKind, decode, encode, resolve_range_column, successor

if TYPE_CHECKING:
    from calve.workflows.runner import Runner

CHUNK = re.compile(r"^\s*(\d+)\s*([hdw]?)\s*$")
EXAMPLES = {RangeKind.DATE: "2026-11-01", RangeKind.TIMESTAMP: "2026-11-01T06:00", RangeKind.INTEGER: "42"}


class BackfillError(CalveError):
    """A backfill cannot be planned or a chunk cannot run (the message says why and what to do)."""


# ---- chunks --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    """One chunk of a backfill's range: [lo, hi] for dates and integers, [lo, hi) for timestamps."""

    index: int
    lo: Any
    hi: Any
    kind: RangeKind

    @property
    def last(self) -> Any:
        """The chunk's last value (inclusive), as `$range_<col>_max` gives it."""
        if self.kind is RangeKind.TIMESTAMP:
            return self.hi - dt.timedelta(microseconds=1)
        return self.hi

    @property
    def label(self) -> str:
        if self.kind is not RangeKind.TIMESTAMP and self.lo == self.hi:
            return encode(self.lo)
        closing = ")" if self.kind is RangeKind.TIMESTAMP else "]"
        return f"[{encode(self.lo)}, {encode(self.hi)}{closing}"

    def predicates(self, column: str) -> tuple[Predicate, ...]:
        high = "lt" if self.kind is RangeKind.TIMESTAMP else "lte"
        return (Predicate(column, "gte", self.lo), Predicate(column, high, self.hi))

    def expression(self, column: str) -> BooleanExpression:
        return expression(self.predicates(column), {}, {})

    def outside(self, values: pa.ChunkedArray) -> pa.ChunkedArray:
        """A mask of the values not in the chunk (nulls included)."""
        below = pc.less(values, pa.scalar(self.lo, values.type))
        high = pc.greater_equal if self.kind is RangeKind.TIMESTAMP else pc.greater
        above = high(values, pa.scalar(self.hi, values.type))
        return pc.fill_null(pc.or_(below, above), True)


def parse_bound(kind: RangeKind, text: str, what: str) -> Any:
    try:
        return decode(kind, text.strip())
    except ValueError:
        example = EXAMPLES[kind]
        raise BackfillError(f"{what} {text!r} is not a {kind.value}: write it like {example}") from None


def split_range(kind: RangeKind, start: Any, end: Any, chunk: str | None) -> list[Chunk]:
    """The chunks of [start, end] (dates, integers) or [start, end) (timestamps), in range order.

    `chunk` is a number of days (`1d`, `7d`), weeks (`2w`) or hours (`6h`, timestamps only), or a plain
    number of values for an integer column; by default a day, or the whole range for integers.
    """
    if (kind is RangeKind.TIMESTAMP and end <= start) or end < start:
        raise BackfillError(f"the range is empty: --to {encode(end)} is not after --from {encode(start)}")
    step: Any
    if kind is RangeKind.INTEGER:
        if chunk is None:
            return [Chunk(0, start, end, kind)]
        match = CHUNK.match(chunk)
        if not match or match.group(2) or int(match.group(1)) < 1:
            raise BackfillError(f"--chunk {chunk!r}: for an integer column, give a number of values (1000)")
        step = int(match.group(1))
    else:
        match = CHUNK.match(chunk or "1d")
        if not match or int(match.group(1)) < 1 or not match.group(2):
            raise BackfillError(f"--chunk {chunk!r} is not a duration: write 1d, 7d, 2w or 6h")
        amount, unit = int(match.group(1)), match.group(2)
        if unit == "h" and kind is RangeKind.DATE:
            raise BackfillError(f"--chunk {chunk!r}: a date column is chunked by days or weeks (1d, 7d, 2w)")
        days = amount * (7 if unit == "w" else 1)
        step = dt.timedelta(hours=amount) if unit == "h" else dt.timedelta(days=days)
        if kind is RangeKind.DATE:
            step = step.days
    chunks: list[Chunk] = []
    low = start
    while (low < end) if kind is RangeKind.TIMESTAMP else (low <= end):
        if kind is RangeKind.DATE:
            high = min(low + dt.timedelta(days=step - 1), end)
        elif kind is RangeKind.INTEGER:
            high = min(low + step - 1, end)
        else:
            high = min(low + step, end)
        chunks.append(Chunk(len(chunks), low, high, kind))
        low = high if kind is RangeKind.TIMESTAMP else successor(kind, high)
    return chunks


# ---- the plan ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """Files and rows in the range (from manifest statistics), or of the whole table if not ranged."""

    table: str
    files: int
    rows: int
    ranged: bool  # False: the table has no range column and is read (or may change) whole

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "files": self.files, "rows": self.rows, "ranged": self.ranged}


@dataclass(frozen=True)
class StepPlan:
    step: str
    target: Estimate  # the rows and files the backfill rewrites
    inputs: dict[str, Estimate]  # alias -> what the step reads over the whole range

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "rewrites": self.target.to_dict(),
            "reads": {alias: e.to_dict() for alias, e in self.inputs.items()},
        }


@dataclass(frozen=True)
class DownstreamPlan:
    """A workflow that will see the backfill through its incremental inputs."""

    workflow: str
    steps: tuple[str, ...]
    reads: tuple[str, ...]  # the rewritten tables it reads
    targets: tuple[Estimate, ...]  # its targets' rows and files in the range: the most it recomputes

    def to_dict(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "steps": list(self.steps),
            "reads": list(self.reads),
            "targets": [t.to_dict() for t in self.targets],
        }


@dataclass(frozen=True)
class BackfillPlan:
    workflow: Workflow
    steps: tuple[StepSpec, ...]
    column: str
    kind: RangeKind
    start: Any
    end: Any
    chunk: str
    chunks: tuple[Chunk, ...]
    stages: tuple[StepPlan, ...]
    downstream: tuple[DownstreamPlan, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow.id,
            "workflow_version": self.workflow.version,
            "steps": [s.id for s in self.steps],
            "column": self.column,
            "from": encode(self.start),
            "to": encode(self.end),
            "chunk": self.chunk,
            "chunks": [c.label for c in self.chunks],
            "stages": [s.to_dict() for s in self.stages],
            "downstream": [d.to_dict() for d in self.downstream],
        }


def plan_backfill(
    runner: Runner,
    workflows: Mapping[str, Workflow],
    workflow_id: str,
    start: str,
    end: str,
    *,
    steps: tuple[str, ...] = (),
    chunk: str | None = None,
    column: str | None = None,
    params: Mapping[str, str] | None = None,
    estimate: bool = True,
) -> BackfillPlan:
    """Check that the backfill can run and estimate what it does; nothing is written.

    `params` are the workflow's params as given (`--param`): checked here, parsed for each chunk.
    Without `estimate`, no manifest is planned: the stages are empty and the downstream workflows
    carry no estimates (what running a recorded backfill needs)."""
    if workflow_id not in workflows:
        from calve.errors import did_you_mean

        raise BackfillError(
            f"no workflow {workflow_id!r}{did_you_mean(workflow_id, list(workflows))}; list them with "
            "`calve workflows`"
        )
    workflow = workflows[workflow_id]
    workflow.resolve_params(dict(params or {}))  # a missing or malformed param fails before anything runs
    chosen = _chosen_steps(workflow, steps)
    catalog = runner.catalog
    names: dict[str, tuple[str, RangeKind]] = {}
    for step in chosen:
        assert step.output is not None
        try:
            target = catalog.load_table(step.output.table)
        except Exception:
            raise BackfillError(
                f"step {step.id!r} has not created {step.output.table} yet: run the workflow first "
                f"(`calve run {workflow.id}`); its first run processes all the history there is"
            ) from None
        names[step.id] = resolve_range_column(step, target.schema().as_arrow(), column)
    distinct = {name for name, _ in names.values()}
    if len(distinct) > 1:
        listed = ", ".join(f"{s}: {n}" for s, (n, _) in names.items())
        raise BackfillError(
            f"the steps range over different columns ({listed}); backfill them one at a time with --step, "
            "or name the column with --column"
        )
    name, kind = next(iter(names.values()))
    low, high = parse_bound(kind, start, "--from"), parse_bound(kind, end, "--to")
    chunks = split_range(kind, low, high, chunk)
    whole = Chunk(0, low, high, kind)
    stages = tuple(_estimate_step(runner, step, name, whole) for step in chosen) if estimate else ()
    downstream = _downstream(runner, workflows, workflow, chosen, name, whole if estimate else None)
    chunk_text = chunk or ("1d" if kind is not RangeKind.INTEGER else "all")
    return BackfillPlan(
        workflow, chosen, name, kind, low, high, chunk_text, tuple(chunks), stages, downstream
    )


def _chosen_steps(workflow: Workflow, steps: tuple[str, ...]) -> tuple[StepSpec, ...]:
    if steps:
        chosen = [workflow.step(s) for s in steps]
        chosen.sort(key=list(workflow.steps).index)
    else:
        chosen = [s for s in workflow.steps if s.output is not None and s.foreach is None]
    for step in chosen:
        if step.kind in (StepKind.ICDC, StepKind.COMPACT) or step.output is None:
            raise BackfillError(f"step {step.id!r} writes no output table: there is nothing to backfill")
        if step.foreach is not None:
            raise BackfillError(
                f"step {step.id!r} is a foreach step; a backfill recomputes steps over a range of their "
                "output's range column: run it with `calve run` and the params of the range instead"
            )
    if not chosen:
        raise BackfillError(f"workflow {workflow.id!r} has no step with an output table to backfill")
    return tuple(chosen)


def _estimate(table: Table, column: str, chunk: Chunk, snapshot_id: int | None = None) -> Estimate:
    name = ".".join(table.name())
    ranged = column in table.schema().column_names
    condition = chunk.expression(column) if ranged else expression((), {}, {})
    tasks = plan_files(table, condition, snapshot_id)
    return Estimate(name, len(tasks), sum(t.file.record_count for t in tasks), ranged)


def _estimate_step(runner: Runner, step: StepSpec, column: str, whole: Chunk) -> StepPlan:
    assert step.output is not None
    target = load_table(runner.catalog, step.output.table)
    inputs = {}
    for spec in step.inputs:
        if spec.read is ReadKind.RANGES:
            continue
        inputs[spec.alias] = _estimate(load_table(runner.catalog, spec.table), column, whole)
    return StepPlan(step.id, _estimate(target, column, whole), inputs)


def _target_estimate(runner: Runner, name: str, column: str, whole: Chunk) -> Estimate:
    """A downstream target's rows and files in the range (nothing known if it does not exist yet)."""
    try:
        return _estimate(runner.catalog.load_table(name), column, whole)
    except Exception:
        return Estimate(name, 0, 0, False)


def _downstream(
    runner: Runner,
    workflows: Mapping[str, Workflow],
    workflow: Workflow,
    chosen: tuple[StepSpec, ...],
    column: str,
    whole: Chunk | None,
) -> tuple[DownstreamPlan, ...]:
    """The workflows (and steps of this one not backfilled) that read a rewritten table, transitively
    (their targets' rows and files in `whole`, unless None)."""
    from calve.workflows.scheduler import upstream_first

    rewritten = {s.output.table for s in chosen if s.output is not None}
    backfilled = {(workflow.id, s.id) for s in chosen}
    found: dict[str, tuple[list[str], set[str], list[str]]] = {}
    changed = True
    while changed:
        changed = False
        for other in upstream_first(workflows):
            for step in other.steps:
                if (other.id, step.id) in backfilled:
                    continue
                reads = {i.table for i in step.incremental_inputs} & rewritten  # sees the changes
                if not reads:
                    continue
                steps, tables, targets = found.setdefault(other.id, ([], set(), []))
                if step.id not in steps:
                    steps.append(step.id)
                    tables |= reads
                    if step.output is not None:
                        targets.append(step.output.table)
                        if step.output.table not in rewritten:
                            rewritten.add(step.output.table)
                            changed = True
    plans = []
    for other in upstream_first(workflows):
        if other.id not in found:
            continue
        steps, tables, targets = found[other.id]
        estimates = (
            [] if whole is None else [_target_estimate(runner, name, column, whole) for name in targets]
        )
        plans.append(DownstreamPlan(other.id, tuple(steps), tuple(sorted(tables)), tuple(estimates)))
    return tuple(plans)
