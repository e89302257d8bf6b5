"""Running a workflow: pin the sources, prepare each step's inputs, run it, commit exactly once, record.

A run, step by step:

1. Take the workflow's run lock in the state store (a killed run's lock is taken over, see StateStore).
2. Pin every source table (read by a step, written by none) at its current snapshot: every step of the
   run sees the same snapshot. A table written by a step is pinned at the snapshot that step committed.
3. For each step, in dependency order: capture each incremental input's changes since the step's
   checkpoint (stored in the step's output table) up to the pin; read them as the step declares (ICDC
   table, inserted rows, changelog, changed keys) or read the pinned table; inject the parameters;
   run the SQL or Python; write the result with the step's write mode, in the same commit that
   advances the step's checkpoints. A step whose incremental inputs hold no change is skipped.
4. Record every step (timings, CPU, rows/files/bytes read and written, snapshots) and the run status.

Because each step's output and checkpoint advance in one commit, rerunning after a failure or a kill
at any point processes exactly what is still pending: the tables end as an uninterrupted run leaves
them. `restart_of` additionally skips the steps that succeeded in the failed run (for steps that
read whole tables and are not incremental), reusing its pins.
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
import secrets
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
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
from pyiceberg.table import Table

from calve import _faults
from calve.capture.changelog import compute_changelog, read_tasks, snapshot_schema
from calve.capture.changes import ChangeSet, capture_changes
from calve.capture.icdc import IcdcTable
from calve.capture.ranges import ColumnRange, change_ranges
from calve.catalog import load_table
from calve.engines import Engine
from calve.errors import CalveError, RowLevelChangesError, RunLockedError, SqlError, StepFailedError
from calve.read.planning import plan_files, read_files
from calve.state import RunRecord, RunStatus, StateStore, StepRunRecord
from calve.workflows.model import (
    InputColumnRef,
    InputSpec,
    ParamRef,
    Predicate,
    ReadKind,
    StepKind,
    StepSpec,
    Workflow,
    WriteMode,
)
from calve.write.compaction import compact
from calve.write.consumer import Consumer
from calve.write.merge import plan_key_files, read_key_files
from calve.write.tables import conform, load_or_create

HEARTBEAT_S = 15.0


@dataclass
class StepContext:
    """What a Python step receives: its inputs as Arrow tables, the injected params, and helpers."""

    run_id: str
    workflow: str
    step: str
    trigger: str
    logical_date: dt.date
    params: dict[str, Any]
    inputs: dict[str, pa.Table]
    ranges: dict[str, dict[str, ColumnRange]]
    icdc_tables: dict[str, str]
    changes: dict[str, ChangeSet]
    catalog: Catalog
    engine: Engine

    def sql(self, query: str, **params: Any) -> pa.Table | None:
        """Run SQL over this step's inputs with the project's engine (values bound as $name)."""
        return self.engine.run(query, dict(self.inputs), {**self.params, **params})


@dataclass
class RunResult:
    run: RunRecord
    steps: list[StepRunRecord] = field(default_factory=list)

    @property
    def status(self) -> RunStatus:
        return self.run.status

    def to_dict(self) -> dict[str, Any]:
        return {**self.run.to_dict(), "steps": [s.to_dict() for s in self.steps]}


@dataclass
class _Prepared:
    """One step's inputs, ready to run."""

    tables: dict[str, pa.Table] = field(default_factory=dict)
    changes: dict[str, ChangeSet] = field(default_factory=dict)
    ranges: dict[str, dict[str, ColumnRange]] = field(default_factory=dict)
    icdc: dict[str, IcdcTable] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def has_changes(self) -> bool:
        return any(not cs.is_empty for cs in self.changes.values())


def new_run_id(now: float | None = None) -> str:
    stamp = dt.datetime.fromtimestamp(now or time.time(), dt.UTC).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{secrets.token_hex(3)}"


class Runner:
    """Runs workflows of one project: catalog, engine and state store."""

    def __init__(
        self,
        catalog: Catalog,
        state: StateStore,
        engine: Engine,
        lock_stale_after_s: float = 600.0,
        progress: Callable[[str], None] = lambda _: None,
        python_path: list[str] | None = None,
    ) -> None:
        self.catalog = catalog
        self.state = state
        self.engine = engine
        self.lock_stale_after_s = lock_stale_after_s
        self.progress = progress
        self.python_path = python_path or []

    # ---- the run ----------------------------------------------------------------------------

    def run(
        self,
        workflow: Workflow,
        params: dict[str, Any] | None = None,
        *,
        trigger: str = "manual",
        trigger_slot: str | None = None,
        logical_date: dt.date | None = None,
        restart_of: str | None = None,
        skip_if_no_changes: bool = False,
    ) -> RunResult | None:
        """Run `workflow` once now. Returns None if `trigger_slot` already had its run (scheduler restart).

        With `skip_if_no_changes`, a run whose incremental inputs hold no change at all is recorded as
        skipped without running anything (a schedule fired, nothing was pending).
        """
        previous = self._restart_source(workflow, restart_of)
        if previous is not None:
            params = {**previous.params, **(params or {})}
            logical_date = logical_date or dt.date.fromisoformat(previous.logical_date)
        logical_date = logical_date or dt.datetime.now(dt.UTC).date()
        values = workflow.resolve_params(params or {}, logical_date)
        now = time.time()
        record = RunRecord(
            run_id=new_run_id(now),
            workflow=workflow.id,
            workflow_version=workflow.version,
            trigger=trigger,
            logical_date=logical_date.isoformat(),
            params=values,
            status=RunStatus.QUEUED,
            created_at=now,
            trigger_slot=trigger_slot,
            restart_of=restart_of,
            host=socket.gethostname(),
            pid=os.getpid(),
        )
        holder = self.state.acquire_lock(workflow.id, record.run_id, self.lock_stale_after_s)
        if holder is not None:
            raise RunLockedError(
                f"workflow {workflow.id!r} is already running (run {holder.run_id}, process {holder.pid} on "
                f"{holder.host}, since {_ago(holder.acquired_at)}); at most one run per workflow at a time. "
                "Wait for it, or see `calve runs show " + holder.run_id + "`"
            )
        try:
            if not self.state.create_run(record):
                return None  # this slot already has its run
            result = RunResult(record)
            with self._heartbeat(workflow.id, record.run_id):
                self._execute(workflow, record, result, previous, skip_if_no_changes)
            return result
        finally:
            self.state.release_lock(workflow.id, record.run_id)

    def _restart_source(self, workflow: Workflow, restart_of: str | None) -> RunRecord | None:
        if restart_of is None:
            return None
        previous = self.state.run(restart_of)
        if previous is None or previous.workflow != workflow.id:
            raise CalveError(
                f"no run {restart_of!r} of workflow {workflow.id!r}; list runs with `calve runs`"
            )
        if previous.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
            raise CalveError(
                f"run {restart_of} {previous.status.value}; only a failed or cancelled run can be restarted"
            )
        return previous

    @contextmanager
    def _heartbeat(self, workflow: str, run_id: str) -> Iterator[None]:
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(HEARTBEAT_S):
                with suppress(Exception):
                    self.state.heartbeat(workflow, run_id)

        thread = threading.Thread(target=beat, name=f"calve-heartbeat-{run_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)

    def _execute(
        self,
        workflow: Workflow,
        record: RunRecord,
        result: RunResult,
        previous: RunRecord | None,
        skip_if_no_changes: bool,
    ) -> None:
        record.status = RunStatus.RUNNING
        record.started_at = time.time()
        pins = dict(previous.pins) if previous else self._pin_sources(workflow)
        record.pins = pins
        self.state.update_run(record.run_id, status=record.status, started_at=record.started_at, pins=pins)
        done_before = self._succeeded_steps(previous) if previous else set()
        self.progress(
            f"run {record.run_id} of {workflow.id} ({record.trigger}, logical date {record.logical_date})"
        )

        if skip_if_no_changes and not self._anything_pending(workflow, pins):
            self._finish(record, RunStatus.SKIPPED, "no changes pending on any incremental input")
            self.progress("  nothing pending: skipped")
            return

        published: dict[str, _Prepared] = {}
        statuses: list[RunStatus] = []
        try:
            for step in workflow.steps:
                if step.id in done_before:
                    step_record = StepRunRecord(
                        record.run_id,
                        step.id,
                        RunStatus.SKIPPED,
                        metrics={"reason": f"succeeded in run {previous.run_id if previous else ''}"},
                    )
                    self.state.record_step(step_record)
                    result.steps.append(step_record)
                    statuses.append(RunStatus.SKIPPED)
                    continue
                for step_record in self._run_step(workflow, step, record, pins, published):
                    result.steps.append(step_record)
                    statuses.append(step_record.status)
                self.state.update_run(record.run_id, pins=pins)
        except StepFailedError as exc:
            self._finish(record, RunStatus.FAILED, str(exc))
            return
        everything_skipped = statuses and all(s is RunStatus.SKIPPED for s in statuses)
        self._finish(record, RunStatus.SKIPPED if everything_skipped else RunStatus.SUCCEEDED, None)

    def _finish(self, record: RunRecord, status: RunStatus, error: str | None) -> None:
        record.status = status
        record.error = error
        record.finished_at = time.time()
        self.state.update_run(record.run_id, status=status, error=error, finished_at=record.finished_at)
        took = record.finished_at - (record.started_at or record.created_at)
        self.progress(f"run {record.run_id} {status.value} in {took:.1f}s" + (f": {error}" if error else ""))

    def _succeeded_steps(self, previous: RunRecord) -> set[str]:
        """Steps whose every iteration succeeded (or had nothing to do) in `previous`."""
        by_step: dict[str, list[StepRunRecord]] = {}
        for r in self.state.step_runs(previous.run_id):
            by_step.setdefault(r.step_id, []).append(r)
        return {
            step
            for step, rs in by_step.items()
            if all(r.status in (RunStatus.SUCCEEDED, RunStatus.SKIPPED) for r in rs)
        }

    def _pin_sources(self, workflow: Workflow) -> dict[str, Any]:
        pins: dict[str, Any] = {}
        for name in sorted(workflow.source_tables):
            table = load_table(self.catalog, name)
            snapshot = table.current_snapshot()
            pins[name] = snapshot.snapshot_id if snapshot else None
        return pins

    def _anything_pending(self, workflow: Workflow, pins: dict[str, Any]) -> bool:
        """Whether some step has a change pending on an incremental input (or reads whole tables)."""
        for step in workflow.steps:
            if not step.incremental_inputs:
                if step.kind is not StepKind.ICDC:
                    return True
                continue
            for spec in step.incremental_inputs:
                if spec.table not in pins:
                    return True  # written by an upstream step of this run: decided when it runs
                if not self._pending(workflow, step, spec, pins[spec.table]).is_empty:
                    return True
        return False

    # ---- one step ---------------------------------------------------------------------------

    def _run_step(
        self,
        workflow: Workflow,
        step: StepSpec,
        record: RunRecord,
        pins: dict[str, Any],
        published: dict[str, _Prepared],
    ) -> list[StepRunRecord]:
        iterations: list[tuple[int, Any]] = [(-1, None)]
        if step.foreach is not None:
            values = record.params.get(step.foreach.param) or []
            iterations = list(enumerate(values))
        records = []
        for iteration, value in iterations:
            step_record = StepRunRecord(
                record.run_id,
                step.id,
                RunStatus.RUNNING,
                iteration=iteration,
                iteration_value=None if iteration < 0 else str(value),
                started_at=time.time(),
            )
            self.state.record_step(step_record)
            label = step.id if iteration < 0 else f"{step.id}[{value}]"
            self.progress(f"  step {label} ...")
            cpu = time.process_time()
            try:
                extra = {step.foreach.alias: value} if step.foreach is not None else {}
                status, metrics = self._step_body(workflow, step, record, pins, published, extra)
            except Exception as exc:
                step_record.status = RunStatus.FAILED
                step_record.error = _describe_failure(workflow, step, exc)
                step_record.finished_at = time.time()
                step_record.cpu_s = time.process_time() - cpu
                self.state.record_step(step_record)
                self.progress(f"  step {label} failed: {step_record.error}")
                raise StepFailedError(step_record.error) from exc
            step_record.status = status
            step_record.metrics = metrics
            finished = step_record.finished_at = time.time()
            step_record.cpu_s = time.process_time() - cpu
            self.state.record_step(step_record)
            self.progress(
                f"  step {label} {status.value} in {finished - (step_record.started_at or finished):.2f}s"
                f"{_summary(metrics)}"
            )
            records.append(step_record)
        return records

    def _step_body(
        self,
        workflow: Workflow,
        step: StepSpec,
        record: RunRecord,
        pins: dict[str, Any],
        published: dict[str, _Prepared],
        extra: dict[str, Any],
    ) -> tuple[RunStatus, dict[str, Any]]:
        if step.kind is StepKind.COMPACT:
            assert step.compact is not None
            table = load_table(self.catalog, step.compact.table)
            result = compact(table, step.compact.small_file_bytes, step.compact.min_files)
            table.refresh()
            snapshot = table.current_snapshot()
            pins[step.compact.table] = snapshot.snapshot_id if snapshot else None
            metrics = {
                "table": result.table,
                "partitions": result.partitions,
                "files_read": result.files_removed,
                "bytes_read": result.bytes_read,
                "rows_read": result.rows,
                "rows_written": result.rows,
                "files_written": result.files_written,
                "committed_snapshot_id": result.snapshot_id,
            }
            if not result.partitions:
                return RunStatus.SKIPPED, {**metrics, "reason": "nothing to compact"}
            return RunStatus.SUCCEEDED, metrics
        if step.kind is StepKind.ICDC:
            assert step.icdc_for is not None
            target = workflow.step(step.icdc_for)
            prepared = self._prepare(workflow, target, record, pins, extra, publish_only=True)
            published[target.id] = prepared
            return RunStatus.SUCCEEDED, {
                **prepared.metrics,
                "icdc_tables": {a: t.to_dict() for a, t in prepared.icdc.items()},
            }

        if step.id in published:  # an icdc step prepared (and published) this step's inputs: read them
            prepared = published.pop(step.id)
            columns = {i.alias: i.columns or ("*",) for i in step.inputs}
            for alias, icdc in prepared.icdc.items():
                if icdc.files:
                    scan = self.catalog.load_table(icdc.identifier).scan(selected_fields=columns[alias])
                    rows = scan.to_arrow()
                    prepared.tables[alias] = rows
                    prepared.metrics["rows_read"] += rows.num_rows
                    prepared.metrics["files_read"] += icdc.files
                    prepared.metrics["bytes_read"] += icdc.bytes
        else:
            prepared = self._prepare(workflow, step, record, pins, extra)
        metrics = dict(prepared.metrics)
        if step.incremental_inputs and not prepared.has_changes:
            metrics["reason"] = "no changes pending"
            self._pin_output(step, pins)
            return RunStatus.SKIPPED, metrics

        if step.kind is StepKind.SQL:
            assert step.sql is not None
            output = self.engine.run(step.sql, prepared.tables, prepared.params)
        else:
            assert step.python is not None
            output = self._call_python(step.python, workflow, step, record, prepared)
        _faults.crash_point("runner.after_compute")

        if step.output is None:
            metrics["rows_out"] = output.num_rows if output is not None else 0
            return RunStatus.SUCCEEDED, metrics
        if output is None:
            raise CalveError(f"step {step.id!r} returned no rows table, but it has an output table")
        metrics.update(self._write(workflow, step, output, prepared, pins))
        return RunStatus.SUCCEEDED, metrics

    def _pin_output(self, step: StepSpec, pins: dict[str, Any]) -> None:
        if step.output is None:
            return
        try:
            table = self.catalog.load_table(step.output.table)
        except NoSuchTableError:
            pins[step.output.table] = None
            return
        snapshot = table.current_snapshot()
        pins[step.output.table] = snapshot.snapshot_id if snapshot else None

    def _pending(
        self,
        workflow: Workflow,
        step: StepSpec,
        spec: InputSpec,
        until: int | None,
        source: Table | None = None,
    ) -> ChangeSet:
        """The changes of an input since the step's checkpoint (in its output table) up to `until`."""
        source = source or load_table(self.catalog, spec.table)
        consumer = Consumer(self.catalog, workflow.consumer_name(step), self.state)
        assert step.output is not None
        try:
            target = self.catalog.load_table(step.output.table)
        except NoSuchTableError:
            return capture_changes(source, None, until)
        return consumer.pending(source, target, until)

    def _prepare(
        self,
        workflow: Workflow,
        step: StepSpec,
        record: RunRecord,
        pins: dict[str, Any],
        extra: dict[str, Any],
        publish_only: bool = False,
    ) -> _Prepared:
        prepared = _Prepared()
        prepared.params = {
            **record.params,
            "run_id": record.run_id,
            "workflow": workflow.id,
            "step": step.id,
            "trigger": record.trigger,
            "logical_date": dt.date.fromisoformat(record.logical_date),
            **extra,
        }
        rows_read = files_read = bytes_read = 0
        snapshots: dict[str, Any] = {}
        union: dict[str, list[ColumnRange]] = {}

        def publish_union() -> None:  # $range_<column>_min/max: the union over the inputs so far
            for column, ranges_of_column in union.items():
                known = [r for r in ranges_of_column if r.min is not None]
                prepared.params[f"range_{column}_min"] = min((r.min for r in known), default=None)
                prepared.params[f"range_{column}_max"] = max((r.max for r in known), default=None)

        # changes (and their ranges) first, then whole tables, whose filters may use them; an input
        # whose filter uses another input's values comes last
        ordered = sorted(
            step.inputs,
            key=lambda i: (
                i.read.incremental is False,
                i.match is not None or any(isinstance(_ref(p), InputColumnRef) for p in i.filter),
            ),
        )
        for spec in ordered:
            if not spec.read.incremental:
                publish_union()
            source = load_table(self.catalog, spec.table)
            if spec.table not in pins:
                snapshot = source.current_snapshot()
                pins[spec.table] = snapshot.snapshot_id if snapshot else None
            until = pins[spec.table]
            prepared.params[f"{spec.alias}_snapshot_id"] = until
            if not spec.read.incremental:
                expression = self._expression(spec.filter, prepared)
                keys = prepared.tables[spec.match] if spec.match is not None else None
                fields = spec.columns or ("*",)
                if until is None:
                    table = source.schema().as_arrow().empty_table()
                    files = []
                else:
                    projection = source.scan(snapshot_id=until, selected_fields=fields).projection()
                    if keys is None:
                        files = plan_files(source, expression, until)
                        table = read_files(source, files, expression, projection)
                    else:  # the files that may hold one of the keys, pruned by their bounds
                        files = plan_key_files(source, keys, until, expression)
                        table = read_key_files(source, files, keys, expression, projection)
                rows_read += table.num_rows  # rows decoded from the files, before exact key matching
                if keys is not None and keys.num_rows:  # the file pruning is coarse: keep exact tuples
                    table = _semi_join(table, keys)
                elif keys is not None:
                    table = table.slice(0, 0)
                prepared.tables[spec.alias] = table
                files_read += len(files)
                bytes_read += sum(t.file.file_size_in_bytes for t in files)
                snapshots[spec.alias] = {"table": spec.table, "snapshot_id": until}
                continue

            change_set = self._pending(workflow, step, spec, until, source)
            prepared.changes[spec.alias] = change_set
            prepared.params[f"{spec.alias}_from_snapshot_id"] = change_set.from_snapshot_id_exclusive
            snapshots[spec.alias] = {
                "table": spec.table,
                "from_snapshot_id": change_set.from_snapshot_id_exclusive,
                "to_snapshot_id": change_set.to_snapshot_id_inclusive,
                "snapshots": len(change_set.logical_snapshots),
            }
            if spec.ranges:
                ranges = change_ranges(change_set, source.schema(), list(spec.ranges))
                for column, column_range in ranges.items():
                    if not column_range.complete:
                        raise CalveError(
                            f"input {spec.alias!r}: the change range of {spec.table}.{column} is unknown for "
                            f"{column_range.files_without_bounds} file(s) without column bounds; enable "
                            "column metrics on the table, or drop `ranges` and filter on the data instead"
                        )
                    prepared.params[f"{spec.alias}_{column}_min"] = column_range.min
                    prepared.params[f"{spec.alias}_{column}_max"] = column_range.max
                    union.setdefault(column, []).append(column_range)
                prepared.ranges[spec.alias] = ranges
            table, read = self._read_changes(workflow, step, spec, source, change_set, prepared, publish_only)
            prepared.tables[spec.alias] = table
            rows_read += table.num_rows
            files_read += read[0]
            bytes_read += read[1]
        publish_union()
        prepared.metrics = {
            "rows_read": rows_read,
            "files_read": files_read,
            "bytes_read": bytes_read,
            "inputs": snapshots,
        }
        if prepared.icdc:
            prepared.metrics["icdc_tables"] = {a: t.identifier for a, t in prepared.icdc.items()}
        return prepared

    def _read_changes(
        self,
        workflow: Workflow,
        step: StepSpec,
        spec: InputSpec,
        source: Table,
        change_set: ChangeSet,
        prepared: _Prepared,
        publish_only: bool,
    ) -> tuple[pa.Table, tuple[int, int]]:
        schema = (
            source.schema()
            if change_set.to_snapshot_id_inclusive is None
            else snapshot_schema(source, change_set.to_snapshot_id_inclusive)
        )
        if spec.read is ReadKind.RANGES:
            return schema.as_arrow().empty_table(), (0, 0)
        if spec.read is ReadKind.ICDC:
            if not change_set.is_append_only:
                ops = ", ".join(
                    f"{s.snapshot_id} ({s.operation.value})" for s in change_set.row_level_snapshots
                )
                raise RowLevelChangesError(
                    f"input {spec.alias!r}: {spec.table} has row-level changes in snapshots {ops}, which an "
                    "ICDC table of appended files cannot hold; read it with read: inserted (new rows) or "
                    "read: changelog (inserted and deleted rows)"
                )
            consumer = Consumer(self.catalog, workflow.consumer_name(step), self.state)
            icdc = consumer.icdc(source, change_set)
            prepared.icdc[spec.alias] = icdc
            prepared.params[f"{spec.alias}_icdc_table"] = icdc.identifier
            if publish_only:
                return schema.as_arrow().empty_table(), (0, 0)
            icdc_table = self.catalog.load_table(icdc.identifier)
            fields = spec.columns or ("*",)
            empty = (schema.select(*spec.columns) if spec.columns else schema).as_arrow().empty_table()
            rows = icdc_table.scan(selected_fields=fields).to_arrow() if icdc.files else empty
            return rows, (icdc.files, icdc.bytes)
        if spec.read is ReadKind.KEYS and change_set.is_append_only:
            # new keys are in the appended files: read just the key columns
            files = change_set.appended_files
            from pyiceberg.table import FileScanTask

            key_schema = schema.select(*spec.keys)
            rows = read_tasks(source, key_schema, [FileScanTask(f.data_file) for f in files])
            distinct = rows.group_by(list(spec.keys)).aggregate([])
            return distinct, (len(files), sum(f.file_size_in_bytes for f in files))
        log = compute_changelog(source, change_set)
        read = (log.files_read, log.bytes_read)
        if spec.read is ReadKind.INSERTED:
            return log.inserted, read
        if spec.read is ReadKind.CHANGELOG:
            return log.to_arrow(), read
        both = pa.concat_tables([log.inserted.select(list(spec.keys)), log.deleted.select(list(spec.keys))])
        return both.group_by(list(spec.keys)).aggregate([]), read

    def _call_python(
        self, target: str, workflow: Workflow, step: StepSpec, record: RunRecord, prepared: _Prepared
    ) -> pa.Table | None:
        module_name, _, function_name = target.partition(":")
        for path in self.python_path:
            if path not in sys.path:
                sys.path.insert(0, path)
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise CalveError(
                f"step {step.id!r}: cannot import {module_name!r} ({exc}); put the module in the project "
                "folder or install it"
            ) from None
        function = getattr(module, function_name, None)
        if not callable(function):
            raise CalveError(f"step {step.id!r}: {module_name} has no function {function_name!r}")
        context = StepContext(
            run_id=record.run_id,
            workflow=workflow.id,
            step=step.id,
            trigger=record.trigger,
            logical_date=dt.date.fromisoformat(record.logical_date),
            params=prepared.params,
            inputs=prepared.tables,
            ranges=prepared.ranges,
            icdc_tables={a: t.identifier for a, t in prepared.icdc.items()},
            changes=prepared.changes,
            catalog=self.catalog,
            engine=self.engine,
        )
        output = function(context)
        if output is None or isinstance(output, pa.Table):
            return output
        if isinstance(output, pa.RecordBatchReader):
            return output.read_all()
        raise CalveError(
            f"step {step.id!r}: {target} returned {type(output).__name__}; return a pyarrow.Table (or None)"
        )

    # ---- writing ----------------------------------------------------------------------------

    def _write(
        self, workflow: Workflow, step: StepSpec, output: pa.Table, prepared: _Prepared, pins: dict[str, Any]
    ) -> dict[str, Any]:
        spec = step.output
        assert spec is not None
        deletes = None
        if spec.delete_column is not None:
            if spec.delete_column not in output.column_names:
                raise CalveError(
                    f"step {step.id!r}: delete_column {spec.delete_column!r} is not a column of the output"
                )
            flag = pc.fill_null(output.column(spec.delete_column).cast(pa.bool_()), False)
            deletes = output.filter(flag).select(list(spec.keys))
            output = output.filter(pc.invert(flag)).drop_columns([spec.delete_column])
        target = load_or_create(
            self.catalog, spec.table, output.schema, spec.partition_by, dict(spec.properties)
        )
        data = conform(output, target, step.id)
        if spec.sort_by:
            missing = [c for c in spec.sort_by if c not in data.column_names]
            if missing:
                raise CalveError(
                    f"step {step.id!r}: sort_by names {missing[0]!r}, which the output does not have"
                )
            data = data.sort_by([(c, "ascending") for c in spec.sort_by])
        consumer = Consumer(self.catalog, workflow.consumer_name(step), self.state)
        changes = [prepared.changes[i.alias] for i in step.incremental_inputs]
        # each source once, at the end of its range
        by_table = {cs.table: cs for cs in changes}
        if spec.mode is WriteMode.OVERWRITE:
            result = consumer.commit(
                target,
                list(by_table.values()),
                data,
                mode="overwrite",
                overwrite_filter=self._expression(spec.filter, prepared),
            )
        elif spec.mode is WriteMode.MERGE:
            result = consumer.commit(
                target, list(by_table.values()), data, mode="merge", keys=spec.keys, deletes=deletes
            )
        else:
            result = consumer.commit(target, list(by_table.values()), data, mode="append")
        target.refresh()
        snapshot = target.current_snapshot()
        pins[spec.table] = snapshot.snapshot_id if snapshot else None
        metrics: dict[str, Any] = {
            "rows_out": output.num_rows,
            "rows_written": result.rows_written,
            "rows_deleted": result.rows_deleted,
            "files_written": result.files_written,
            "bytes_written": result.bytes_written,
            "files_removed": result.files_removed,
            "committed_snapshot_id": result.snapshot_id,
            "output": spec.table,
            "mode": spec.mode.value,
        }
        if result.merge is not None:
            metrics["merge"] = {
                "files_read": result.merge.files_read,
                "rows_read": result.merge.rows_read,
                "bytes_read": result.merge.bytes_read,
                "rows_matched": result.merge.rows_matched,
                "files_rewritten": len(result.merge.deleted_files),
            }
            metrics["files_read"] = metrics.get("files_read", 0)
        return metrics

    def _expression(self, predicates: tuple[Predicate, ...], prepared: _Prepared) -> BooleanExpression:
        expression: BooleanExpression = AlwaysTrue()
        for predicate in predicates:
            term = _term(predicate, lambda ref: _resolve(ref, prepared))
            expression = term if isinstance(expression, AlwaysTrue) else And(expression, term)
        return expression


def _semi_join(table: pa.Table, keys: pa.Table) -> pa.Table:
    names = keys.column_names
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise CalveError(f"match: the input has no column {missing[0]!r} (select it in `columns`)")
    numbered = table.select(names).append_column("__calve_row", pa.array(range(table.num_rows), pa.int64()))
    kept = numbered.join(keys.cast(table.select(names).schema), keys=names, join_type="left semi")
    row_ids = kept.column("__calve_row")
    return table.take(pc.take(row_ids, pc.sort_indices(row_ids)))


def _ref(predicate: Predicate) -> Any:
    value = predicate.value
    if isinstance(value, list):
        return next((v for v in value if isinstance(v, InputColumnRef)), None)
    return value


def _resolve(value: Any, prepared: _Prepared) -> Any:
    if isinstance(value, ParamRef):
        return prepared.params.get(value.name)
    if isinstance(value, InputColumnRef):
        table = prepared.tables.get(value.alias)
        if table is None or value.column not in table.column_names:
            raise CalveError(
                f"filter value ${value.alias}.{value.column}: input {value.alias!r} has no such column"
            )
        return pc.unique(table.column(value.column)).drop_null().to_pylist()
    if isinstance(value, list):
        return [_resolve(v, prepared) for v in value]
    return value


def _term(predicate: Predicate, resolve: Callable[[Any], Any]) -> BooleanExpression:
    """One predicate as a pyiceberg expression; comparing with a missing value (NULL) matches nothing."""
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
    comparisons: dict[str, type[BooleanExpression]] = {
        "eq": EqualTo,
        "ne": NotEqualTo,
        "lt": LessThan,
        "lte": LessThanOrEqual,
        "gt": GreaterThan,
        "gte": GreaterThanOrEqual,
    }
    return _compare(comparisons[op], column, value)


def _compare(kind: type[BooleanExpression], column: str, value: Any) -> BooleanExpression:
    return kind(column, value)  # type: ignore[call-arg]  # pyiceberg's predicates take (term, literal)


def _describe_failure(workflow: Workflow, step: StepSpec, exc: BaseException) -> str:
    if isinstance(exc, SqlError):
        where = ""
        if step.sql_origin is not None:
            path, first = step.sql_origin
            try:
                shown = path.relative_to(workflow.path.parent.parent)
            except ValueError:
                shown = path
            where = f"{shown}:{first + (exc.line or 1) - 1}: " if exc.line else f"{shown}: "
        return f"step {step.id!r}: {where}SQL failed: {exc.engine_message}"
    if isinstance(exc, CalveError):
        return f"step {step.id!r}: {exc}"
    frames = traceback.extract_tb(exc.__traceback__)
    last = frames[-1] if frames else None
    at = f" (at {last.filename}:{last.lineno})" if last else ""
    return f"step {step.id!r}: {type(exc).__name__}: {exc}{at}"


def _summary(metrics: dict[str, Any]) -> str:
    parts = []
    if "rows_read" in metrics:
        parts.append(f"{metrics['rows_read']} rows read")
    if "rows_written" in metrics:
        parts.append(f"{metrics['rows_written']} written")
    if metrics.get("rows_deleted"):
        parts.append(f"{metrics['rows_deleted']} replaced/deleted")
    if "reason" in metrics:
        parts.append(str(metrics["reason"]))
    return f" ({', '.join(parts)})" if parts else ""


def _ago(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")
