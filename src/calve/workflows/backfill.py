"""Managed backfill: recompute a workflow's outputs over a range with its current logic, chunk by chunk.

`plan_backfill` (`calve.workflows.backfill_plan`) checks everything a backfill needs before anything
runs and says what it will do:
the steps and tables it rewrites, the chunks of the range, the rows and files each step reads and
rewrites (from manifest statistics: no data is read), and the downstream workflows that will see
the change through their incremental inputs. `Backfiller` then runs it:

- A chunk takes the workflow's run lock (incremental runs interleave between chunks and neither
  loses the other's changes), and runs the chosen steps in order. Each step reads its inputs as whole
  tables restricted to the chunk's range of the range column (an input without that column is read
  whole) at a consistent snapshot: a table the step consumes incrementally at the step's checkpoint
  on it (so the next incremental run processes exactly what came after, and an append-mode step
  appends nothing twice), a table an earlier step of the backfill rewrote at that rewrite, any other
  table at its current snapshot. The injected `$range_<col>_min/max` are the chunk's bounds.
- The recomputed rows must lie in the chunk (else the chunk fails, nothing is written), pass the
  step's `checks:`, and are compared with the rows the target holds in the chunk: equal rows commit
  nothing, so an unchanged chunk costs downstream nothing. Otherwise one overwrite of the chunk's
  range commits them, its snapshot summary marked with the backfill id, chunk, step and workflow
  version. A step that reads a table an earlier step of the same backfill rewrote advances its
  checkpoint on it past that rewrite (it recomputed the range from it), if nothing else was pending.
- A killed backfill resumes at its first chunk not done; a step whose commit for the chunk is in its
  target's history (the summary marker) is not applied again.
- With `propagate`, after each chunk the downstream workflows are run until nothing is pending:
  they process the rewrite's changes (the changelog drops carry-over rows), not the whole range.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from calve import _faults
from calve.capture.changelog import CHANGE_TYPE_COLUMN, INSERT
from calve.catalog import load_table
from calve.errors import CalveError, DataError, RunLockedError
from calve.read.duckdb_scan import same_rows
from calve.read.in_range import read_in_range
from calve.state.backfills import BackfillLog, BackfillRecord, BackfillStatus, ChunkRecord
from calve.workflows.backfill_plan import BackfillError, BackfillPlan, Chunk, plan_backfill
from calve.workflows.injection import input_values, run_values
from calve.workflows.inputs import StepInputs, as_arrow, read_inputs
from calve.workflows.model import InputSpec, ReadKind, StepKind, StepSpec, Workflow
from calve.workflows.outputs import split_deletes
from calve.workflows.pending import pending_changes
from calve.workflows.versions import (
    BACKFILL_PROPERTY,
    CHUNK_PROPERTY,
    STEP_PROPERTY,
    VERSION_PROPERTY,
    RangeKind,
    encode,
    note_commit,
)
from calve.write.consumer import Consumer
from calve.write.modes import WriteMode
from calve.write.tables import conform

if TYPE_CHECKING:
    from calve.workflows.runner import Runner

__all__ = ["BackfillError", "BackfillPlan", "BackfillResult", "Backfiller", "Chunk", "plan_backfill"]

LOCK_WAIT_S = 600.0  # how long a chunk waits for a run of the workflow to release its lock


# ---- running it ----------------------------------------------------------------------------------


@dataclass
class StepOutcome:
    step: str
    status: str  # committed, unchanged, already committed
    rows_read: int = 0
    rows_written: int = 0
    rows_before: int = 0
    snapshot_id: int | None = None
    checkpoint_advanced: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class BackfillResult:
    record: BackfillRecord
    chunks: list[ChunkRecord] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**self.record.to_dict(), "chunks": [c.to_dict() for c in self.chunks]}


def new_backfill_id(now: float | None = None) -> str:
    stamp = dt.datetime.fromtimestamp(now or time.time(), dt.UTC).strftime("%Y%m%dT%H%M%S")
    return f"bf-{stamp}-{secrets.token_hex(3)}"


class Backfiller:
    """Runs backfills of one project's workflows with a runner (its catalog, engine, state store)."""

    def __init__(
        self,
        runner: Runner,
        workflows: Mapping[str, Workflow],
        progress: Callable[[str], None] = lambda _: None,
        lock_wait_s: float = LOCK_WAIT_S,
    ) -> None:
        self.runner = runner
        self.workflows = workflows
        self.progress = progress
        self.lock_wait_s = lock_wait_s
        self.log = BackfillLog(runner.state)

    def start(
        self, plan: BackfillPlan, propagate: bool = False, params: Mapping[str, str] | None = None
    ) -> BackfillRecord:
        """Record a planned backfill and its chunks (queued), with the workflow's params as given;
        `run` runs it."""
        now = time.time()
        record = BackfillRecord(
            backfill_id=new_backfill_id(now),
            workflow=plan.workflow.id,
            workflow_version=plan.workflow.version,
            steps=tuple(s.id for s in plan.steps),
            range_column=plan.column,
            range_from=encode(plan.start),
            range_to=encode(plan.end),
            chunk=plan.chunk,
            status=BackfillStatus.QUEUED,
            created_at=now,
            propagate=propagate,
            host=socket.gethostname(),
            pid=os.getpid(),
            params=dict(params or {}),
        )
        chunks = [ChunkRecord(record.backfill_id, c.index, encode(c.lo), encode(c.hi)) for c in plan.chunks]
        self.log.create(record, chunks)
        return record

    def plan_of(self, record: BackfillRecord) -> BackfillPlan:
        """The plan of a recorded backfill, with the workflow as it is now (which must be unchanged)."""
        workflow = self.workflows.get(record.workflow)
        if workflow is None:
            raise BackfillError(
                f"backfill {record.backfill_id}: workflow {record.workflow!r} no longer exists"
            )
        if workflow.version != record.workflow_version:
            raise BackfillError(
                f"backfill {record.backfill_id} computes with version {record.workflow_version} of workflow "
                f"{workflow.id!r}, whose files have changed since (now version {workflow.version}); its "
                "finished chunks stand. Start a new backfill of the range with the new logic"
            )
        chunk = None if record.chunk == "all" else record.chunk
        return plan_backfill(
            self.runner,
            self.workflows,
            record.workflow,
            record.range_from,
            record.range_to,
            steps=record.steps,
            chunk=chunk,
            column=record.range_column,
            params=record.params,
            estimate=False,  # running needs the chunks and the downstream workflows, not estimates
        )

    def run(
        self,
        backfill_id: str,
        *,
        on_chunk: Callable[[ChunkRecord], None] = lambda _: None,
        throttle_s: float = 0.0,
    ) -> BackfillResult:
        """Run (or resume) a backfill: every chunk not done yet, in order. A failed chunk stops it."""
        record = self.log.get(backfill_id)
        if record is None:
            raise BackfillError(f"no backfill {backfill_id!r}; list them with `calve backfills`")
        if record.alive_elsewhere():
            raise BackfillError(
                f"backfill {backfill_id} is running in process {record.pid} on {record.host}; wait for it, "
                f"or watch it with `calve backfills {backfill_id}`"
            )
        if record.status is BackfillStatus.SUCCEEDED:
            return BackfillResult(record, self.log.chunks(backfill_id))
        plan = self.plan_of(record)
        record = self.log.claim(backfill_id)
        result = BackfillResult(record)
        chunk_records = {c.chunk: c for c in self.log.chunks(backfill_id)}
        for index, chunk in enumerate(plan.chunks):
            done = chunk_records[chunk.index]
            if done.status.done:
                result.chunks.append(done)
                continue
            if index and throttle_s:
                time.sleep(throttle_s)
            outcome = self._chunk(plan, record, chunk, done)
            result.chunks.append(outcome)
            on_chunk(outcome)
            if outcome.status is BackfillStatus.FAILED:
                self.log.update(
                    backfill_id, status=BackfillStatus.FAILED, finished_at=time.time(), error=outcome.error
                )
                result.record = replace(record, status=BackfillStatus.FAILED, error=outcome.error)
                return result
            _faults.crash_point("backfill.between_chunks")
        self.log.update(backfill_id, status=BackfillStatus.SUCCEEDED, finished_at=time.time(), error=None)
        result.record = replace(record, status=BackfillStatus.SUCCEEDED, finished_at=time.time())
        return result

    # ---- one chunk -----------------------------------------------------------------------------

    def _chunk(
        self, plan: BackfillPlan, record: BackfillRecord, chunk: Chunk, before: ChunkRecord
    ) -> ChunkRecord:
        started = replace(before, status=BackfillStatus.RUNNING, started_at=time.time(), error=None)
        self.log.record_chunk(started)
        position = f"{chunk.index + 1}/{len(plan.chunks)}"
        self.progress(f"backfill {record.backfill_id}: chunk {position} {chunk.label}")
        cpu = time.process_time()
        outcomes: list[StepOutcome] = []
        try:
            with self._lock(plan.workflow, f"{record.backfill_id}#{chunk.index}"):
                rewritten: set[str] = set()
                for step in plan.steps:
                    outcome = self._step(plan, record, chunk, step, rewritten)
                    outcomes.append(outcome)
                    assert step.output is not None
                    rewritten.add(step.output.table)
                    self.progress(f"  step {step.id}: {_describe(outcome)}")
            downstream = self._propagate(plan, record, chunk) if record.propagate else []
        except Exception as exc:
            error = str(exc) if isinstance(exc, CalveError) else f"{type(exc).__name__}: {exc}"
            failed = replace(
                started,
                status=BackfillStatus.FAILED,
                finished_at=time.time(),
                cpu_s=time.process_time() - cpu,
                metrics={"steps": [o.to_dict() for o in outcomes]},
                error=error,
            )
            self.log.record_chunk(failed)
            self.progress(f"  chunk {chunk.label} failed: {error}")
            return failed
        committed = any(o.status != "unchanged" for o in outcomes)
        finished = replace(
            started,
            status=BackfillStatus.SUCCEEDED if committed else BackfillStatus.UNCHANGED,
            finished_at=time.time(),
            cpu_s=time.process_time() - cpu,
            metrics={"steps": [o.to_dict() for o in outcomes], "downstream_runs": downstream},
        )
        self.log.record_chunk(finished)
        return finished

    @contextmanager
    def _lock(self, workflow: Workflow, holder: str) -> Iterator[None]:
        """The workflow's run lock for a chunk, waiting for a run that holds it (up to `lock_wait_s`)."""
        state = self.runner.state
        deadline = time.monotonic() + self.lock_wait_s
        waited = False
        while True:
            lock = state.acquire_lock(workflow.id, holder, self.runner.lock_stale_after_s)
            if lock is None:
                break
            if time.monotonic() > deadline:
                raise BackfillError(
                    f"workflow {workflow.id!r} stayed locked by run {lock.run_id} for "
                    f"{self.lock_wait_s:.0f}s; the chunk did not start. Resume the backfill after that run"
                )
            if not waited:
                self.progress(f"  waiting for run {lock.run_id} of {workflow.id} to finish")
                waited = True
            time.sleep(0.5)
        try:
            with self.runner.heartbeat(workflow.id, holder):
                yield
        finally:
            state.release_lock(workflow.id, holder)

    def _step(
        self, plan: BackfillPlan, record: BackfillRecord, chunk: Chunk, step: StepSpec, rewritten: set[str]
    ) -> StepOutcome:
        assert step.output is not None
        catalog = self.runner.catalog
        workflow = plan.workflow
        target = load_table(catalog, step.output.table)
        chunk_marker = {BACKFILL_PROPERTY: record.backfill_id, CHUNK_PROPERTY: str(chunk.index)}
        marker = {**chunk_marker, STEP_PROPERTY: step.id}
        done = _marked_snapshot(target, marker)
        if done is not None:  # a killed run of this chunk committed it: note it (again), apply nothing
            self._note(plan, record, chunk, step, done)
            return StepOutcome(step.id, "already committed", snapshot_id=done)
        consumer = Consumer(catalog, workflow.consumer_name(step), self.runner.state)
        tables: dict[str, Table] = {}
        pins: dict[str, int | None] = {}
        advance = []
        incremental = {i.table for i in step.incremental_inputs}
        for spec in step.inputs:
            if spec.table in tables:
                continue
            table = tables[spec.table] = load_table(catalog, spec.table)
            current = table.current_snapshot()
            if spec.table in rewritten:  # an earlier step of this chunk rewrote it: read the rewrite
                pins[spec.table] = current.snapshot_id if current else None
                if spec.table in incremental:
                    changes = pending_changes(consumer, table, target, pins[spec.table])
                    foreign = [
                        s.snapshot_id
                        for s in changes.logical_snapshots
                        if not _has_marker(table, s.snapshot_id, chunk_marker)
                    ]
                    if foreign:
                        raise BackfillError(
                            f"step {step.id!r} has changes of {spec.table} it has not processed yet "
                            f"(snapshot {foreign[0]}, before this backfill's rewrite); run the workflow "
                            f"first (`calve run {workflow.id}`), then resume: calve backfill --resume "
                            f"{record.backfill_id}"
                        )
                    if changes.snapshots:
                        advance.append(changes)
            elif spec.table in incremental:  # what the step has processed: the next run does the rest
                checkpoint = consumer.checkpoint(target, table)
                if checkpoint is None or checkpoint.snapshot_id is None:
                    raise BackfillError(
                        f"step {step.id!r} has not processed {spec.table} yet (no checkpoint in "
                        f"{step.output.table}); run the workflow first (`calve run {workflow.id}`)"
                    )
                pins[spec.table] = checkpoint.snapshot_id
            else:
                pins[spec.table] = current.snapshot_id if current else None

        inputs = self._read(plan, record, chunk, step, tables, pins)
        output = self.runner.compute(step, inputs, workflow)  # not staged: the chunk checks its rows here
        if output is None:
            raise BackfillError(f"step {step.id!r} returned no rows table, but it has an output table")
        assert isinstance(output, pa.Table)
        _faults.crash_point("backfill.after_compute")
        data, _ = split_deletes(step, output)  # rows flagged deleted are simply not in the range any more
        data = conform(data, target, step.id)
        if step.output.sort_by:
            data = data.sort_by([(c, "ascending") for c in step.output.sort_by])
        _check_inside(step, data, plan.column, chunk)
        self._run_checks(workflow, step, inputs, data)
        condition = chunk.expression(plan.column)
        inclusive = chunk.kind is not RangeKind.TIMESTAMP
        existing = read_in_range(target, plan.column, chunk.lo, chunk.hi, condition, inclusive=inclusive)
        rows_read = inputs.reads.rows_read
        same = same_rows(data, existing)
        if same and not advance:
            return StepOutcome(step.id, "unchanged", rows_read=rows_read, rows_before=existing.num_rows)
        properties = {**marker, VERSION_PROPERTY: workflow.version}
        if same:  # nothing to rewrite; the checkpoint passes the upstream rewrite
            consumer.commit(target, advance, data.slice(0, 0), mode=WriteMode.APPEND)
            before = existing.num_rows
            return StepOutcome(step.id, "unchanged", rows_read, rows_before=before, checkpoint_advanced=True)
        result = consumer.commit(
            target, advance, data, mode=WriteMode.OVERWRITE, overwrite_filter=condition, properties=properties
        )
        _faults.crash_point("backfill.after_step_commit")
        self._note(plan, record, chunk, step, result.snapshot_id)
        return StepOutcome(
            step.id,
            "committed",
            rows_read=rows_read,
            rows_written=data.num_rows,
            rows_before=existing.num_rows,
            snapshot_id=result.snapshot_id,
            checkpoint_advanced=bool(advance),
        )

    def _note(
        self,
        plan: BackfillPlan,
        record: BackfillRecord,
        chunk: Chunk,
        step: StepSpec,
        snapshot_id: int | None,
    ) -> None:
        """Note the chunk's commit of `step` as a complete rebuild of the chunk by this version."""
        note_commit(
            self.log,
            plan.workflow.id,
            plan.workflow.version,
            step,
            snapshot_id,
            (chunk.lo, chunk.last),
            column=plan.column,
            complete=True,
            backfill_id=record.backfill_id,
            at=time.time(),
        )

    def _read(
        self,
        plan: BackfillPlan,
        record: BackfillRecord,
        chunk: Chunk,
        step: StepSpec,
        tables: Mapping[str, Table],
        pins: Mapping[str, int | None],
    ) -> StepInputs:
        """The step's inputs over the chunk: each as the whole table in the range, shaped as declared."""
        column = plan.column
        values = {f"range_{column}_min": chunk.lo, f"range_{column}_max": chunk.last}
        base = run_values(
            {**plan.workflow.resolve_params(dict(record.params), _logical_date(chunk)), **values},
            run_id=f"{record.backfill_id}#{chunk.index}",
            workflow=plan.workflow.id,
            step=step.id,
            trigger=f"backfill {record.backfill_id}",
            logical_date=_logical_date(chunk),
        )
        derived: list[InputSpec] = []
        ranges_only: list[InputSpec] = []
        for spec in step.inputs:
            if spec.read.incremental:
                base.update(input_values(spec.alias, pins[spec.table], incremental=True))
                for name in spec.ranges:
                    if name != column:
                        raise BackfillError(
                            f"step {step.id!r}: input {spec.alias!r} has change ranges of {name!r}, but the "
                            f"backfill ranges over {column!r}; backfill by that column (--column {name})"
                        )
                    base[f"{spec.alias}_{name}_min"] = chunk.lo
                    base[f"{spec.alias}_{name}_max"] = chunk.last
            if spec.read is ReadKind.RANGES:
                ranges_only.append(spec)
                continue
            in_range = chunk.predicates(column) if column in tables[spec.table].schema().column_names else ()
            filters = spec.filter + in_range
            columns = spec.keys if spec.read is ReadKind.KEYS else spec.columns
            derived.append(replace(spec, read=ReadKind.TABLE, filter=filters, columns=columns, ranges=()))
        engine = self.runner.engine_for(plan.workflow)
        lazy = step.kind is StepKind.SQL and bool(getattr(engine, "accepts_scans", False))
        inputs = read_inputs(
            replace(step, inputs=tuple(derived), strategy=None),
            base,
            tables,
            pins,
            {},
            _no_icdc,
            lazy=lazy,
        )
        shaped = dict(inputs.tables)
        for spec in step.inputs:
            if spec.read is ReadKind.KEYS:
                shaped[spec.alias] = as_arrow(shaped[spec.alias]).group_by(list(spec.keys)).aggregate([])
            elif spec.read is ReadKind.CHANGELOG:
                rows = as_arrow(shaped[spec.alias])
                shaped[spec.alias] = rows.append_column(
                    CHANGE_TYPE_COLUMN, pa.array([INSERT] * rows.num_rows, pa.string())
                )
        for spec in ranges_only:
            shaped[spec.alias] = tables[spec.table].schema().as_arrow().empty_table()
        return StepInputs(shaped, {}, {}, {}, inputs.params, inputs.reads)

    def _run_checks(self, workflow: Workflow, step: StepSpec, inputs: StepInputs, data: pa.Table) -> None:
        """The step's `checks:` on the recomputed rows (on the workflow's engine), before they commit."""
        if not step.checks:
            return
        engine = self.runner.engine_for(workflow)
        relations = {alias: as_arrow(rows) for alias, rows in inputs.tables.items()}
        relations["output"] = data
        params = dict(inputs.params)
        for check in step.checks:
            if check.sql is not None:
                offending = engine.run(check.sql, dict(relations), params)
                if offending is not None and offending.num_rows:
                    shown = offending.slice(0, 5).to_pylist()
                    raise DataError(
                        f"step {step.id!r}: check {check.name!r} failed: {offending.num_rows} row(s) where "
                        f"none may be; first ones: {shown}; nothing was committed for this chunk"
                    )
                continue
            assert check.equal is not None
            got = [_scalar(engine.run(q, dict(relations), params)) for q in check.equal]
            if got[0] != got[1]:
                raise DataError(
                    f"step {step.id!r}: check {check.name!r} failed: {got[0]!r} != {got[1]!r} "
                    f"({check.equal[0].strip()} | {check.equal[1].strip()}); nothing was committed for this "
                    "chunk"
                )

    def _propagate(self, plan: BackfillPlan, record: BackfillRecord, chunk: Chunk) -> list[dict[str, Any]]:
        """Run the downstream workflows until nothing is pending (waiting for a held lock)."""
        runs = []
        for downstream in plan.downstream:
            workflow = self.workflows[downstream.workflow]
            deadline = time.monotonic() + self.lock_wait_s
            while True:
                try:
                    result = self.runner.run(
                        workflow,
                        trigger=f"backfill {record.backfill_id} chunk {chunk.index}",
                        skip_if_no_changes=True,
                    )
                    break
                except RunLockedError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            if result is None:
                continue
            runs.append({"workflow": workflow.id, "run_id": result.run.run_id, "status": result.status.value})
            if result.status.value == "failed":
                raise BackfillError(
                    f"downstream workflow {workflow.id!r} failed in run {result.run.run_id} "
                    f"({result.run.error}); the chunk's own commits stand. Fix it, then resume: "
                    f"calve backfill --resume {record.backfill_id}"
                )
        return runs


def _no_icdc(*_: Any) -> Any:  # a backfill reads whole tables: it publishes no ICDC table
    raise AssertionError("a backfill publishes no ICDC table")


def _logical_date(chunk: Chunk) -> dt.date:
    """A chunk's logical date: its last day for date and timestamp ranges, else today."""
    if chunk.kind is RangeKind.DATE:
        return chunk.hi  # type: ignore[no-any-return]
    if chunk.kind is RangeKind.TIMESTAMP:
        return chunk.last.date()  # type: ignore[no-any-return]
    return dt.datetime.now(dt.UTC).date()


def _marked_snapshot(table: Table, marker: Mapping[str, str]) -> int | None:
    """The newest snapshot of `table`'s history whose summary carries every property of `marker`."""
    for snapshot in reversed(table.metadata.snapshots):
        if _carries(snapshot, marker):
            return snapshot.snapshot_id
    return None


def _has_marker(table: Table, snapshot_id: int, marker: Mapping[str, str]) -> bool:
    return _carries(table.metadata.snapshot_by_id(snapshot_id), marker)


def _carries(snapshot: Snapshot | None, marker: Mapping[str, str]) -> bool:
    props = snapshot.summary.additional_properties if snapshot and snapshot.summary else {}
    return all(props.get(k) == v for k, v in marker.items())


def _check_inside(step: StepSpec, data: pa.Table, column: str, chunk: Chunk) -> None:
    """Refuse recomputed rows outside the chunk: an overwrite of the chunk would add them twice."""
    if column not in data.column_names or data.num_rows == 0:
        return
    mask = chunk.outside(data.column(column))
    outside = data.filter(mask)
    if outside.num_rows:
        values = sorted({str(v) for v in outside.column(column).to_pylist()})[:5]
        raise DataError(
            f"step {step.id!r} computed {outside.num_rows} row(s) outside the chunk {chunk.label} of "
            f"{column} (values {', '.join(values)}); a step backfilled by {column} must compute the rows of "
            f"a range from the inputs' rows of that range (filter on $range_{column}_min/max if it reads "
            "other days); nothing was committed"
        )


def _scalar(table: pa.Table | None) -> Any:
    if table is None or table.num_rows != 1 or table.num_columns != 1:
        raise DataError("an `equal` check query must return exactly one row with one column")
    return table.column(0)[0].as_py()


def _describe(outcome: StepOutcome) -> str:
    if outcome.status == "committed":
        return (
            f"rewrote {outcome.rows_before} rows as {outcome.rows_written} ({outcome.rows_read} read), "
            f"snapshot {outcome.snapshot_id}"
        )
    if outcome.status == "unchanged":
        equal = f"{outcome.rows_before} rows equal"
        return f"unchanged ({outcome.rows_read} rows read, {equal}): nothing committed"
    return f"committed before (snapshot {outcome.snapshot_id}), not applied again"
