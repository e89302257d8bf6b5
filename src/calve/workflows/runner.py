"""Running a workflow: pin the sources, capture each step's changes once, run, commit exactly once, record.

A run, step by step:

1. `Runner.pending` pins every source table (read by a step, written by none) at its current snapshot
   and captures, once, the changes each step has pending on them since its checkpoint (stored in the
   step's output table). The scheduler decides from this very value whether to start a run, and
   hands it to `Runner.run`, which uses it as is: nothing is captured twice.
2. The run takes the workflow's run lock in the state store (a dead run's lock is taken over).
3. For each step, in dependency order: read its inputs as declared (`calve.workflows.inputs`: ICDC
   table, inserted rows, changelog, changed keys, ranges, or a pinned table), inject the parameters,
   run the SQL or Python, and write the result with the step's write mode in the same commit that
   advances the step's checkpoints (`calve.workflows.outputs`). A table written by a step is pinned
   at the snapshot that step committed; a step whose incremental inputs hold no change is skipped.
4. Every step is recorded (timings, CPU, typed metrics) and the run ends succeeded, skipped or
   failed; a failure is marked transient (a commit conflict, an I/O error: the scheduler retries it)
   or terminal (SQL, validation, data: it waits for a fix).

Because each step's output and checkpoint advance in one commit, rerunning after a failure or a kill
at any point processes exactly what is still pending: the tables end as an uninterrupted run leaves
them. `restart_of` additionally skips the steps that succeeded in the failed run (for steps that
read whole tables and are not incremental), reusing its pins.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from calve import _faults
from calve.capture.changes import ChangeSet
from calve.catalog import load_table
from calve.engines import Engine, EngineSpec, get_engine
from calve.errors import CalveError, RunLockedError, StepFailedError
from calve.observe.clock import observe_step, phase
from calve.observe.runs import run_metrics
from calve.observe.steps import complete_step, failed_step
from calve.project import DEFAULT_LOCK_STALE_AFTER_S, DEFAULT_LOOKBACK_DAYS
from calve.state import (
    RESTARTABLE,
    InputRead,
    RunRecord,
    RunStatus,
    StateStore,
    StepMetrics,
    StepRunRecord,
)
from calve.state.backfills import BackfillLog
from calve.workflows.failures import describe_failure, is_transient
from calve.workflows.injection import run_values
from calve.workflows.inputs import StepInputs, as_arrow, read_inputs
from calve.workflows.model import StepKind, StepSpec, Strategy, Workflow
from calve.workflows.outputs import write_output
from calve.workflows.pending import Pending, capture_pending, load_target, pending_changes
from calve.workflows.python_steps import StepContext, call_python
from calve.workflows.strategies import FILTER_JOIN_KEYS, Choice, choose, filter_join_inputs
from calve.workflows.versions import VERSION_PROPERTY, note_commit, written_range
from calve.write.compaction import compact
from calve.write.consumer import Consumer
from calve.write.modes import WriteMode
from calve.write.staged import StagedOutput

if TYPE_CHECKING:
    from calve.project import Project

HEARTBEAT_S = 15.0

__all__ = ["Pending", "RunResult", "Runner", "StepContext", "new_run_id"]


@dataclass
class RunResult:
    run: RunRecord
    steps: list[StepRunRecord] = field(default_factory=list)
    cpu_started: float = field(default_factory=time.process_time, repr=False)  # for RunMetrics.cpu_s

    @property
    def status(self) -> RunStatus:
        return self.run.status

    def to_dict(self) -> dict[str, Any]:
        return {**self.run.to_dict(), "steps": [s.to_dict() for s in self.steps]}


def new_run_id(now: float | None = None) -> str:
    stamp = dt.datetime.fromtimestamp(now or time.time(), dt.UTC).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{secrets.token_hex(3)}"


class _Run:
    """The mutable side of one run, kept in one place: pins and loaded tables, step results."""

    def __init__(self, record: RunRecord, pending: Pending) -> None:
        self.record = record
        self.pins: dict[str, int | None] = dict(pending.pins)
        self.tables: dict[str, Table] = dict(pending.tables)
        self.unused_changes = {step: dict(by_table) for step, by_table in pending.changes.items()}
        self.published: dict[str, StepInputs] = {}  # step id -> inputs an `icdc:` step published
        self.last_changes: dict[tuple[str, str], ChangeSet] = {}  # (step, table) -> captured for it
        self.statuses: list[RunStatus] = []

    def pin(self, name: str, table: Table | None) -> None:
        """Pin `name` at `table`'s current snapshot (None: the table does not exist yet)."""
        snapshot = table.current_snapshot() if table is not None else None
        self.pins[name] = snapshot.snapshot_id if snapshot else None
        if table is not None:
            self.tables[name] = table

    def load(self, name: str, loader: Callable[[str], Table]) -> None:
        """Load a table not loaded yet; pin it now unless it is pinned (a restart reuses its pins)."""
        if name in self.tables:
            return
        if name in self.pins:
            self.tables[name] = loader(name)
        else:
            self.pin(name, loader(name))

    def take_changes(self, step: str, table: str) -> ChangeSet | None:
        """The change set captured for `step` before the run, once (a foreach iteration recaptures)."""
        return self.unused_changes.get(step, {}).pop(table, None)


class Runner:
    """Runs workflows of one project: catalog, engine and state store."""

    def __init__(
        self,
        catalog: Catalog,
        state: StateStore,
        engine: Engine,
        lock_stale_after_s: float = DEFAULT_LOCK_STALE_AFTER_S,
        progress: Callable[[str], None] = lambda _: None,
        python_path: list[str] | None = None,
        lookback_days: int = DEFAULT_LOOKBACK_DAYS,
    ) -> None:
        self.catalog = catalog
        self.state = state
        self.engine = engine  # the project's (calve.yaml); a workflow may choose its own: engine_for
        self._engines: dict[EngineSpec, Engine] = {}
        self._engines_lock = threading.Lock()
        self.lock_stale_after_s = lock_stale_after_s
        self.progress = progress
        self.python_path = python_path or []
        self.lookback_days = lookback_days  # of the run metrics' lookback estimate (calve.observe)

    @classmethod
    def for_project(cls, project: Project, progress: Callable[[str], None] = lambda _: None) -> Runner:
        """The runner of a project: its catalog, state store, engine, lock settings and Python path."""
        return cls(
            project.catalog,
            project.state,
            project.engine(),
            lock_stale_after_s=project.settings.lock_stale_after_s,
            progress=progress,
            python_path=[str(project.root)],
            lookback_days=project.settings.lookback_days,
        )

    def engine_for(self, workflow: Workflow) -> Engine:
        """The engine that runs `workflow`'s steps: its `engine:`, else the project's; one per setting."""
        if workflow.engine is None:
            return self.engine
        with self._engines_lock:
            if workflow.engine not in self._engines:
                self._engines[workflow.engine] = get_engine(workflow.engine)
            return self._engines[workflow.engine]

    # ---- what is pending ------------------------------------------------------------------

    def pending(
        self,
        workflow: Workflow,
        pins: Mapping[str, int | None] | None = None,
        tables: dict[str, Table] | None = None,
    ) -> Pending:
        """Pin the sources (now, or at `pins`) and capture each step's pending changes on them, once.

        `tables` is a cache of loaded tables shared between calls (the scheduler keeps one per tick);
        a source whose current snapshot is a step's checkpoint costs no manifest read.
        """
        return capture_pending(self.catalog, self.state, workflow, pins, {} if tables is None else tables)

    def _target(self, step: StepSpec, tables: dict[str, Table]) -> Table | None:
        return load_target(self.catalog, step, tables)

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
        pending: Pending | None = None,
        attempt: int = 1,
    ) -> RunResult | None:
        """Run `workflow` once now. Returns None if `trigger_slot` already had its run (scheduler restart).

        `pending` is what `Runner.pending` captured (the scheduler passes the value it decided on);
        without it the run captures it. With `skip_if_no_changes`, a run with nothing pending is
        recorded as skipped without running anything (a schedule fired, nothing was pending).
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
            attempt=attempt,
        )
        holder = self.state.acquire_lock(workflow.id, record.run_id, self.lock_stale_after_s)
        if holder is not None:
            raise RunLockedError(
                f"workflow {workflow.id!r} is already running (run {holder.run_id}, process {holder.pid} on "
                f"{holder.host}, since {_clock(holder.acquired_at)}); at most one run per workflow at a "
                f"time. Wait for it, or see `calve runs show {holder.run_id}`"
            )
        try:
            if not self.state.create_run(record):
                return None  # this slot already has its run
            result = RunResult(record)
            with self.heartbeat(workflow.id, record.run_id):
                self._execute(workflow, result, previous, skip_if_no_changes, pending)
            return result
        finally:
            self.state.release_lock(workflow.id, record.run_id)

    def _restart_source(self, workflow: Workflow, restart_of: str | None) -> RunRecord | None:
        if restart_of is None:
            return None
        self.state.reap_dead_runs(workflow.id)  # a killed run is failed the moment anyone looks
        previous = self.state.run(restart_of)
        if previous is None or previous.workflow != workflow.id:
            raise CalveError(
                f"no run {restart_of!r} of workflow {workflow.id!r}; list runs with `calve runs`"
            )
        if previous.status not in RESTARTABLE:
            raise CalveError(
                f"run {restart_of} is {previous.status.value}; "
                "only a failed or cancelled run can be restarted"
            )
        again = self.state.restarted_by(restart_of)
        if again is not None:
            raise CalveError(
                f"run {restart_of} was restarted already by run {again.run_id} ({again.status.value}); "
                f"restart that one if it failed"
            )
        return previous

    @contextmanager
    def heartbeat(self, workflow: str, holder: str) -> Iterator[None]:
        """Keep the workflow's run lock of `holder` (a run or a backfill chunk) fresh while inside."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(HEARTBEAT_S):
                with suppress(Exception):
                    self.state.heartbeat(workflow, holder)

        thread = threading.Thread(target=beat, name=f"calve-heartbeat-{holder}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)

    def _execute(
        self,
        workflow: Workflow,
        result: RunResult,
        previous: RunRecord | None,
        skip_if_no_changes: bool,
        pending: Pending | None,
    ) -> None:
        record = result.run
        if previous is not None:
            pending = self.pending(workflow, pins=previous.pins)
        elif pending is None:
            pending = self.pending(workflow)
        record = replace(record, status=RunStatus.RUNNING, started_at=time.time(), pins=dict(pending.pins))
        result.run = record
        self.state.update_run(
            record.run_id, status=record.status, started_at=record.started_at, pins=record.pins
        )
        self.progress(
            f"run {record.run_id} of {workflow.id} ({record.trigger}, logical date {record.logical_date})"
        )
        if skip_if_no_changes and not pending.anything:
            self._finish(result, RunStatus.SKIPPED, "no changes pending on any incremental input", workflow)
            return

        run = _Run(record, pending)
        done_before = self._succeeded_steps(previous) if previous else set()
        try:
            for step in workflow.steps:
                if step.id in done_before:
                    assert previous is not None
                    skipped = StepRunRecord(
                        record.run_id,
                        step.id,
                        RunStatus.SKIPPED,
                        metrics=StepMetrics(reason=f"succeeded in run {previous.run_id}"),
                    )
                    self.state.record_step(skipped)
                    result.steps.append(skipped)
                    run.statuses.append(RunStatus.SKIPPED)
                    continue
                self._run_step(workflow, step, run, result)
                self.state.update_run(record.run_id, pins=run.pins)
        except StepFailedError as exc:
            self._finish(result, RunStatus.FAILED, str(exc), workflow, run, transient=exc.transient)
            return
        everything_skipped = run.statuses and all(s is RunStatus.SKIPPED for s in run.statuses)
        status = RunStatus.SKIPPED if everything_skipped else RunStatus.SUCCEEDED
        self._finish(result, status, None, workflow, run)

    def _finish(
        self,
        result: RunResult,
        status: RunStatus,
        error: str | None,
        workflow: Workflow,
        run: _Run | None = None,
        transient: bool = False,
    ) -> None:
        finished_at = time.time()
        metrics = run_metrics(  # CPU, rows, freshness, lookback estimate, error class (calve.observe)
            workflow,
            result.steps,
            run.tables if run is not None else {},
            status=status,
            cpu_started=result.cpu_started,
            finished_at=finished_at,
            lookback_days=self.lookback_days,
            changes=run.last_changes if run is not None else None,
            state=self.state,
        )
        record = replace(
            result.run,
            status=status,
            error=error,
            finished_at=finished_at,
            transient=transient,
            metrics=metrics,
        )
        result.run = record
        self.state.update_run(
            record.run_id,
            status=status,
            error=error,
            finished_at=record.finished_at,
            transient=transient,
            metrics=metrics,
        )
        took = (record.finished_at or 0.0) - (record.started_at or record.created_at)
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

    # ---- one step ---------------------------------------------------------------------------

    def _run_step(self, workflow: Workflow, step: StepSpec, run: _Run, result: RunResult) -> None:
        iterations: list[tuple[int, Any]] = [(-1, None)]
        if step.foreach is not None:
            iterations = list(enumerate(run.record.params.get(step.foreach.param) or []))
        consumer = Consumer(self.catalog, workflow.consumer_name(step), self.state)
        for iteration, value in iterations:
            started = StepRunRecord(
                run.record.run_id,
                step.id,
                RunStatus.RUNNING,
                iteration=iteration,
                iteration_value=None if iteration < 0 else str(value),
                started_at=time.time(),
            )
            self.state.record_step(started)
            label = step.id if iteration < 0 else f"{step.id}[{value}]"
            self.progress(f"  step {label} ...")
            cpu = time.process_time()
            foreach = {step.foreach.alias: value} if step.foreach is not None else {}
            with observe_step() as observation:  # phases, files read, peak memory (calve.observe)
                try:
                    status, metrics = self._step_body(workflow, step, run, consumer, foreach)
                except Exception as exc:
                    error = describe_failure(workflow, step, exc)
                    failed = replace(
                        started,
                        status=RunStatus.FAILED,
                        error=error,
                        finished_at=time.time(),
                        cpu_s=time.process_time() - cpu,
                        metrics=failed_step(exc, observation),
                    )
                    self.state.record_step(failed)
                    result.steps.append(failed)
                    self.progress(f"  step {label} failed: {error}")
                    raise StepFailedError(error, transient=is_transient(exc)) from exc
            done = replace(
                started,
                status=status,
                metrics=complete_step(metrics, observation, run.tables),
                finished_at=time.time(),
                cpu_s=time.process_time() - cpu,
            )
            self.state.record_step(done)
            result.steps.append(done)
            run.statuses.append(status)
            took = (done.finished_at or 0.0) - (done.started_at or 0.0)
            self.progress(f"  step {label} {status.value} in {took:.2f}s{_summary(metrics)}")

    def _step_body(
        self, workflow: Workflow, step: StepSpec, run: _Run, consumer: Consumer, foreach: dict[str, Any]
    ) -> tuple[RunStatus, StepMetrics]:
        if step.kind is StepKind.COMPACT:
            return self._compact(step, run)
        if step.kind is StepKind.ICDC:
            assert step.icdc_for is not None
            target_step = workflow.step(step.icdc_for)
            target_consumer = Consumer(self.catalog, workflow.consumer_name(target_step), self.state)
            inputs = self._inputs(workflow, target_step, run, target_consumer, foreach, publish_only=True)
            run.published[target_step.id] = inputs
            details = {alias: t.to_dict() for alias, t in inputs.icdc.items()}
            return RunStatus.SUCCEEDED, replace(inputs.reads, icdc_tables=details)

        if step.strategy is not None:
            return self._strategy_step(workflow, step, run, consumer, foreach)
        if step.id in run.published:  # an icdc step published this step's inputs: read their rows
            inputs = run.published.pop(step.id).with_icdc_rows(step)
        else:
            inputs = self._inputs(workflow, step, run, consumer, foreach)
        if step.incremental_inputs and not inputs.has_changes:
            if step.output is not None:
                run.pin(step.output.table, self._target(step, run.tables))
            return RunStatus.SKIPPED, replace(inputs.reads, reason="no changes pending")

        output = self.compute(step, inputs, workflow, staged=step.output is not None)
        _faults.crash_point("runner.after_compute")
        if step.output is None:
            return RunStatus.SUCCEEDED, replace(inputs.reads, rows_out=output.num_rows if output else 0)
        if output is None:
            raise CalveError(f"step {step.id!r} returned no rows table, but it has an output table")
        target, written = write_output(
            self.catalog,
            step,
            output,
            consumer,
            self._target(step, run.tables),
            inputs.changes,
            inputs.params,
            inputs.tables,
            properties=_version(run),
        )
        self._note(run, step, output, inputs.params, step.output.mode, written)
        run.pin(step.output.table, target)
        return RunStatus.SUCCEEDED, _combine(inputs.reads, written)

    def _strategy_step(
        self, workflow: Workflow, step: StepSpec, run: _Run, consumer: Consumer, foreach: dict[str, Any]
    ) -> tuple[RunStatus, StepMetrics]:
        """A strategy step: its aggregate kept up to date the way `strategies.choose` picks."""
        assert step.output is not None and step.sql is not None
        spec = step.inputs[0]
        run.load(spec.table, lambda name: load_table(self.catalog, name))
        choice = choose(step, run.tables[spec.table].schema().column_names)
        self.progress(f"  step {step.id}: strategy {choice.strategy.value} ({choice.reason})")
        if choice.strategy is Strategy.AGGREGATE:
            return self._aggregate_step(step, run, consumer, choice)
        derived = filter_join_inputs(step) if choice.strategy is Strategy.FILTER_JOIN else step
        inputs = self._inputs(workflow, derived, run, consumer, foreach)
        changes = inputs.changes or {spec.alias: run.last_changes[(step.id, spec.table)]}
        reads = replace(inputs.reads, strategy=choice.strategy.value)
        if not any(not cs.is_empty for cs in changes.values()):
            run.pin(step.output.table, self._target(step, run.tables))
            return RunStatus.SKIPPED, replace(reads, reason="no changes pending")
        output = self.compute(step, inputs, workflow, staged=True)
        if output is None:
            raise CalveError(f"step {step.id!r} returned no rows table, but it has an output table")
        _faults.crash_point("runner.after_compute")
        deletes, mode = None, None
        if choice.strategy is Strategy.FILTER_JOIN:  # changed keys with no row left: their groups go
            keys = list(step.output.keys)
            changed = as_arrow(inputs.tables[FILTER_JOIN_KEYS]).select(keys)
            kept = output.select(keys) if isinstance(output, pa.Table) else output.select_arrow(keys)
            deletes = changed.join(kept.cast(changed.schema), keys=keys, join_type="left anti")
        else:
            mode = WriteMode.OVERWRITE
        target, written = write_output(
            self.catalog,
            step,
            output,
            consumer,
            self._target(step, run.tables),
            changes,
            inputs.params,
            inputs.tables,
            deletes=deletes,
            mode=mode,
            properties=_version(run),
        )
        self._note(run, step, output, inputs.params, mode or step.output.mode, written)
        run.pin(step.output.table, target)
        return RunStatus.SUCCEEDED, _combine(reads, written)

    def _aggregate_step(
        self, step: StepSpec, run: _Run, consumer: Consumer, choice: Choice
    ) -> tuple[RunStatus, StepMetrics]:
        """The aggregate strategy: the state brought up to the pin, the changed groups' rows merged."""
        from calve.workflows.aggregate_step import maintain

        assert step.output is not None and choice.plan is not None
        spec = step.inputs[0]
        source, until = run.tables[spec.table], run.pins[spec.table]
        target = self._target(step, run.tables)
        changes = run.take_changes(step.id, spec.table)
        if changes is None:
            with phase("plan"):
                changes = pending_changes(consumer, source, target, until)
        reads = StepMetrics(
            inputs={spec.alias: _read_of(spec.table, changes)}, strategy=choice.strategy.value
        )
        if changes.is_empty:
            run.pin(step.output.table, target)
            return RunStatus.SKIPPED, replace(reads, reason="no changes pending")
        with phase("compute"):
            result = maintain(
                self.catalog, self.state, step, choice.plan, consumer, source, until, changes, self.progress
            )
        _faults.crash_point("runner.after_compute")
        target, written = write_output(
            self.catalog,
            step,
            result.rows,
            consumer,
            target,
            {spec.alias: changes},
            {},
            {},
            deletes=result.deletes,
            mode=WriteMode.OVERWRITE if result.rebuilt else None,  # a rebuilt state: every group
            properties=_version(run),
        )
        mode = WriteMode.OVERWRITE if result.rebuilt else step.output.mode
        self._note(run, step, result.rows, {}, mode, written)
        run.pin(step.output.table, target)
        return RunStatus.SUCCEEDED, _combine(replace(reads, rows_read=result.changelog_rows), written)

    def _note(
        self,
        run: _Run,
        step: StepSpec,
        rows: pa.Table | StagedOutput,
        params: Mapping[str, Any],
        mode: WriteMode,
        written: StepMetrics,
    ) -> None:
        """Note which range the step's commit wrote, with which version (for `calve status`)."""
        column, span, complete = written_range(step, rows, params, mode)
        note_commit(
            BackfillLog(self.state),
            run.record.workflow,
            run.record.workflow_version,
            step,
            written.committed_snapshot_id,
            span,
            column=column,
            complete=complete,
            run_id=run.record.run_id,
            at=time.time(),
        )

    def _inputs(
        self,
        workflow: Workflow,
        step: StepSpec,
        run: _Run,
        consumer: Consumer,
        foreach: dict[str, Any],
        publish_only: bool = False,
    ) -> StepInputs:
        for spec in step.inputs:
            run.load(spec.table, lambda name: load_table(self.catalog, name))
        changes: dict[str, ChangeSet] = {}
        target = self._target(step, run.tables)
        for spec in step.incremental_inputs:
            if spec.table not in changes:
                captured = run.take_changes(step.id, spec.table)
                if captured is None:
                    with phase("plan"):
                        captured = pending_changes(
                            consumer, run.tables[spec.table], target, run.pins[spec.table]
                        )
                changes[spec.table] = captured
                run.last_changes[(step.id, spec.table)] = captured
        record = run.record
        base = run_values(
            record.params,
            run_id=record.run_id,
            workflow=workflow.id,
            step=step.id,
            trigger=record.trigger,
            logical_date=dt.date.fromisoformat(record.logical_date),
            foreach=foreach,
        )
        sql = step.kind is StepKind.SQL
        engine = self.engine_for(workflow)
        with phase("read"):
            return read_inputs(
                step,
                base,
                run.tables,
                run.pins,
                changes,
                consumer.icdc,
                publish_only=publish_only,
                lazy=sql and bool(getattr(engine, "accepts_scans", False)),
                scans=sql and bool(getattr(engine, "reads_tables", False)),
            )

    def compute(
        self, step: StepSpec, inputs: StepInputs, workflow: Workflow, staged: bool = False
    ) -> pa.Table | StagedOutput | None:
        """Run a step's SQL (any step with SQL, a strategy step's too) or Python on its inputs, on the
        workflow's engine. With `staged`, an engine that writes files on its workers (`writes_files`)
        keeps the rows there."""
        engine = self.engine_for(workflow)
        with phase("compute"):
            if step.sql is not None:
                if staged and getattr(engine, "writes_files", False):
                    output: pa.Table | StagedOutput | None = engine.stage(  # type: ignore[attr-defined]
                        step.sql, dict(inputs.tables), dict(inputs.params)
                    )
                    return output
                return engine.run(step.sql, dict(inputs.tables), dict(inputs.params))
            assert step.python is not None
            return call_python(step.python, inputs, self.catalog, engine, self.python_path)

    def _compact(self, step: StepSpec, run: _Run) -> tuple[RunStatus, StepMetrics]:
        assert step.compact is not None
        table = run.tables.get(step.compact.table) or load_table(self.catalog, step.compact.table)
        compacted = compact(table, step.compact.small_file_bytes, step.compact.min_files)
        table.refresh()
        run.pin(step.compact.table, table)
        metrics = StepMetrics(
            output=compacted.table,
            partitions=compacted.partitions,
            files_read=compacted.files_removed,
            bytes_read=compacted.bytes_read,
            rows_read=compacted.rows,
            rows_written=compacted.rows,
            files_written=compacted.files_written,
            committed_snapshot_id=compacted.snapshot_id,
        )
        if not compacted.partitions:
            return RunStatus.SKIPPED, replace(metrics, reason="nothing to compact")
        return RunStatus.SUCCEEDED, metrics


def _version(run: _Run) -> dict[str, str]:
    """The snapshot summary of a run's commits: the version of the workflow's files that made them."""
    return {VERSION_PROPERTY: run.record.workflow_version}


def _read_of(table: str, changes: ChangeSet) -> InputRead:
    return InputRead(
        table,
        from_snapshot_id=changes.from_snapshot_id_exclusive,
        to_snapshot_id=changes.to_snapshot_id_inclusive,
        snapshots=len(changes.logical_snapshots),
    )


def _combine(reads: StepMetrics, written: StepMetrics) -> StepMetrics:
    return replace(
        written,
        rows_read=reads.rows_read,
        files_read=reads.files_read,
        bytes_read=reads.bytes_read,
        inputs=reads.inputs,
        icdc_tables=reads.icdc_tables,
        strategy=reads.strategy,
        read_by=reads.read_by,
    )


def _summary(metrics: StepMetrics) -> str:
    parts = [f"{metrics.rows_read} rows read"]
    if metrics.rows_written is not None:
        parts.append(f"{metrics.rows_written} written")
    if metrics.rows_deleted:
        parts.append(f"{metrics.rows_deleted} replaced/deleted")
    if metrics.reason:
        parts.append(metrics.reason)
    return f" ({', '.join(parts)})"


def _clock(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")
