"""The scheduler: evaluates every workflow's triggers, starts the due runs, and survives restarts.

One tick, per workflow (in the order of their ids):

1. Recover: a run left queued or running by a process that is gone (a killed scheduler, a killed
   `calve run`) is marked failed and restarted from its first unfinished step, with the same pins
   and params, so that its micro-batch is neither skipped nor done twice. Manual runs included.
2. Retry: a run that failed with a transient error (a commit conflict, an I/O error) is restarted
   after a backoff (`retry_backoff_s`, doubling), at most `retry_attempts` runs in all; each retry
   is a run of its own (`trigger: retry N of RUN_ID`, `attempt: N+1`). Until then, and after a
   terminal failure (SQL, validation, data) until the workflow's files change, its triggers wait:
   a failing workflow is not run again every tick.
3. Time triggers: the latest slot at or before now; if it is newer than the last slot fired, a run
   is created for it (the slot is stored with the run, atomically). If the workflow reads changes and
   none is pending, the run is recorded as skipped.
4. Incremental triggers: fire when any (or all) of the sources has changes past the checkpoints of
   the steps that read it, and `min_interval` has passed since the trigger last fired.

Several schedulers may share one state store (docs/deployment.md): the steps above, for one
workflow, are done under the workflow's lease (calve.state.leases), which one scheduler holds at a
time, renewed while its run runs and released after; a scheduler that finds a workflow leased skips
it this tick. Table maintenance takes the `maintenance` lease the same way.

What is pending is captured once (`Runner.pending`) and the run processes exactly that. Workflows
are evaluated upstream first (one that writes a table before those that read it, then by id), tables
are loaded once per tick and a run's outputs are reloaded after it: so a chain of incremental
workflows (A writes what B reads) runs to its end within one tick. Runs execute one at a time in
the scheduler's process; `calve scheduler --once` does one tick.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from typing import TYPE_CHECKING, Any

from pyiceberg.table import Table

from calve.errors import CalveError, RunLockedError, TableNotFoundError
from calve.project import Project
from calve.state import ACTIVE, RunRecord, RunStatus
from calve.state.leases import LeaseBook, new_owner
from calve.workflows.model import TriggerKind, TriggerSpec, Workflow
from calve.workflows.runner import Runner, RunResult
from calve.workflows.triggers import CronExpression, interval_slot, parse_slot, slot_key

if TYPE_CHECKING:
    from calve.observe.prometheus import SchedulerMetrics
    from calve.write.maintenance import Maintainer

UTC = dt.UTC
RETRY_ATTEMPTS = 3  # runs in all for one micro-batch whose failures are transient
RETRY_BACKOFF_S = 30.0  # the first retry waits this long after the failure; each next one twice as long
LEASE_RENEW_S = 15.0  # a scheduler renews its leases this often (or thrice per lease lifetime if shorter)
MAINTENANCE_LEASE = "maintenance"


@dataclass
class Firing:
    """What one trigger did in a tick."""

    workflow: str
    trigger: str
    slot: str | None
    result: RunResult | None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "trigger": self.trigger,
            "slot": self.slot,
            "run_id": self.result.run.run_id if self.result else None,
            "status": self.result.status.value if self.result else None,
            "note": self.note,
        }

    def describe(self, now: dt.datetime | None = None) -> str:
        """One log line: `STAMP WORKFLOW [TRIGGER @ SLOT]: run RUN_ID STATUS (note): error`."""
        stamp = (now or dt.datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S")
        what = f"{self.workflow} [{self.trigger}" + (f" @ {self.slot}" if self.slot else "") + "]"
        if self.result is None:
            return f"{stamp} {what}: {self.note}"
        run = self.result.run
        note = f" ({self.note})" if self.note else ""
        error = f": {run.error}" if run.error else ""
        return f"{stamp} {what}: run {run.run_id} {run.status.value}{note}{error}"


class Scheduler:
    def __init__(
        self,
        project: Project,
        runner: Runner,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(UTC),
        log: Callable[[str], None] = lambda _: None,
        retry_attempts: int = RETRY_ATTEMPTS,
        retry_backoff_s: float = RETRY_BACKOFF_S,
        metrics: SchedulerMetrics | None = None,
        on_firing: Callable[[Firing], None] | None = None,
    ) -> None:
        self.project = project
        self.metrics = metrics  # the /metrics endpoint's collector: told what is pending after each tick
        self.on_firing = on_firing  # run_forever's log of a firing (default: its text line)
        self.runner = runner
        self.clock = clock
        self.log = log
        self.retry_attempts = retry_attempts
        self.retry_backoff_s = retry_backoff_s
        self._tables: dict[str, Table] = {}  # loaded once per tick
        self._maintainer: Maintainer | None = None
        self._held_notes: dict[str, str] = {}  # workflow -> why its triggers wait (logged once)
        self.owner = new_owner()  # this scheduler, in the leases it takes
        self._leases: LeaseBook | None = None

    @property
    def leases(self) -> LeaseBook:
        if self._leases is None:
            self._leases = LeaseBook(self.project.state)
        return self._leases

    @property
    def lease_ttl_s(self) -> float:
        """How long a lease outlives its holder's last renewal: calve.yaml's `lock_stale_after`."""
        return float(self.runner.lock_stale_after_s)

    def tick(self) -> list[Firing]:
        """Evaluate every trigger once and run what is due; returns what fired."""
        self._tables = {}
        self.project.state.reap_dead_runs()
        firings: list[Firing] = []
        with self._renewing_leases():
            for workflow in upstream_first(self.project.workflows()):
                with self._lease(f"workflow:{workflow.id}") as held:
                    if held:
                        self._forget_tables(workflow)  # another scheduler may have run it since
                        firings.extend(self._tick_workflow(workflow))
            with self._lease(MAINTENANCE_LEASE) as held:
                if held:
                    firings.extend(self._maintain())
        if self.metrics is not None:
            self._observe_pending()
        return firings

    def _tick_workflow(self, workflow: Workflow) -> list[Firing]:
        """Recover, retry and evaluate the triggers of one workflow (under its lease)."""
        firings: list[Firing] = []
        try:
            firings.extend(self._recover(workflow))
            retry = self._retry(workflow)
            if retry is not None:
                firings.append(retry)
            held = self._held(workflow)
            if held is not None:  # its last run failed: a retry or a fix comes first
                if self._held_notes.get(workflow.id) != held:
                    firings.append(Firing(workflow.id, "-", None, None, held))
                self._held_notes[workflow.id] = held
                return firings
            self._held_notes.pop(workflow.id, None)
            for trigger in workflow.triggers:
                firing = self._evaluate(workflow, trigger)
                if firing is not None:
                    firings.append(firing)
        except RunLockedError as exc:
            self.log(f"{workflow.id}: {exc}")
        except TableNotFoundError as exc:
            note = self._missing_table_note(workflow, exc)
            self.log(f"{workflow.id}: {note}")
            firings.append(Firing(workflow.id, "-", None, None, note))
        except CalveError as exc:  # one broken workflow does not stop the others
            self.log(f"{workflow.id}: error: {exc}")
            firings.append(Firing(workflow.id, "-", None, None, f"error: {exc}"))
        return firings

    @contextmanager
    def _lease(self, name: str) -> Iterator[bool]:
        """Hold lease `name` inside (True), or skip (False) if another live scheduler holds it."""
        if self.leases.acquire(name, self.owner, self.lease_ttl_s) is not None:
            yield False
            return
        try:
            yield True
        finally:
            self.leases.release(name, self.owner)

    @contextmanager
    def _renewing_leases(self) -> Iterator[None]:
        """Renew this scheduler's leases from a thread while inside: a run may outlast a lease's ttl."""
        stop = threading.Event()
        every = min(LEASE_RENEW_S, self.lease_ttl_s / 3)

        def renew() -> None:
            while not stop.wait(every):
                with suppress(Exception):  # a store hiccup: the next renewal tries again
                    self.leases.renew(self.owner, self.lease_ttl_s)

        thread = threading.Thread(target=renew, name="calve-scheduler-leases", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)

    def _forget_tables(self, workflow: Workflow) -> None:
        """Drop the workflow's tables from this tick's cache: another scheduler may have run it since
        they were loaded, so they are reloaded before anything is decided."""
        for name in workflow.source_tables | workflow.output_tables:
            self._tables.pop(name, None)

    def _observe_pending(self) -> None:
        """Tell the metrics what each workflow has pending now, after the tick's runs (metadata only:
        a source whose current snapshot is the checkpoint costs no manifest read)."""
        assert self.metrics is not None
        for workflow in self.project.workflows().values():
            if not any(step.incremental_inputs for step in workflow.steps):
                continue
            try:
                self.metrics.observe_pending(workflow, self.runner.pending(workflow, tables=self._tables))
            except CalveError as exc:  # a source not there yet: nothing to measure
                self.log(f"{workflow.id}: pending changes not measured: {exc}")
        self.metrics.observe_tick()

    def _maintain(self) -> list[Firing]:
        """Table maintenance by calve.yaml's `maintenance:` policy, after the runs (off their path).

        A table whose writing workflow is running is left for a later tick.
        """
        from calve.write.maintenance import Maintainer

        if self._maintainer is None:
            self._maintainer = Maintainer(self.project)
        now = self.clock()
        due = self._maintainer.due(now)
        if not due:
            return []
        running = {lock.workflow for lock in self.project.state.locks()}
        writers = {
            table: workflow.id
            for workflow in self.project.workflows().values()
            for table in workflow.output_tables
        }
        firings = []
        for table in due:
            if writers.get(table) in running:
                continue
            result = self._maintainer.run(table, now)
            note = _maintenance_note(result.to_dict())
            firings.append(Firing(table, "maintenance", None, None, note))
        return firings

    def run_forever(self, tick_s: float = 10.0, should_stop: Callable[[], bool] = lambda: False) -> None:
        self.log(f"scheduler started: {len(self.project.workflows())} workflow(s), tick every {tick_s:g}s")
        while not should_stop():
            started = time.monotonic()
            for firing in self.tick():
                if self.on_firing is not None:
                    self.on_firing(firing)
                else:
                    self.log(firing.describe())
            remaining = tick_s - (time.monotonic() - started)
            deadline = time.monotonic() + max(0.0, remaining)
            while time.monotonic() < deadline and not should_stop():
                time.sleep(min(0.5, deadline - time.monotonic()))
        self.log("scheduler stopped")

    def _run(self, workflow: Workflow, **kwargs: Any) -> RunResult | None:
        try:
            return self.runner.run(workflow, **kwargs)
        finally:  # what the run wrote is reloaded by the next evaluation (chains run to their end)
            for name in workflow.output_tables:
                self._tables.pop(name, None)

    def _recover(self, workflow: Workflow) -> list[Firing]:
        """Restart the runs of `workflow` that a dead process left queued or running."""
        state = self.project.state
        live = {lock.workflow: lock for lock in state.locks()}
        lock = live.get(workflow.id)
        firings = []
        for status in sorted(ACTIVE):
            for run in state.runs(workflow.id, limit=20, status=status):
                stale_after = self.runner.lock_stale_after_s
                if (
                    lock is not None
                    and lock.run_id == run.run_id
                    and not lock.is_stale(time.time(), stale_after, _host())
                ):
                    continue  # really running elsewhere
                state.end_run(
                    run.run_id,
                    RunStatus.FAILED,
                    "interrupted: its process stopped before the run finished; restarted by the scheduler",
                )
                firings.append(self._restart(workflow, run, f"recovery of {run.run_id}", "recovered"))
        # runs that died in another process before this tick (reaped on sight) are restarted too
        for run in state.runs(workflow.id, limit=5, status=RunStatus.FAILED):
            if run.error and run.error.startswith("interrupted") and state.restarted_by(run.run_id) is None:
                firings.append(self._restart(workflow, run, f"recovery of {run.run_id}", "recovered"))
        return firings

    def _retry(self, workflow: Workflow) -> Firing | None:
        """Restart the last run of `workflow` if it failed transiently and its backoff has passed."""
        runs = self.project.state.runs(workflow.id, limit=1)
        if not runs:
            return None
        last = runs[0]
        if last.status is not RunStatus.FAILED or not last.transient or last.attempt >= self.retry_attempts:
            return None
        backoff = self.retry_backoff_s * 2 ** (last.attempt - 1)
        if time.time() - (last.finished_at or last.created_at) < backoff:
            return None
        if self.project.state.restarted_by(last.run_id) is not None:
            return None
        note = f"retry {last.attempt} of {self.retry_attempts - 1} after a transient failure"
        return self._restart(workflow, last, f"retry {last.attempt} of {last.run_id}", note)

    def _held(self, workflow: Workflow) -> str | None:
        """Why the workflow's triggers wait, or None: its last run failed and is not retried yet
        (transient, with retries left), or failed terminally and its files did not change since."""
        runs = self.project.state.runs(workflow.id, limit=1)
        if not runs or runs[0].status is not RunStatus.FAILED:
            return None
        last = runs[0]
        if last.transient and last.attempt < self.retry_attempts:
            return f"waiting to retry run {last.run_id} (attempt {last.attempt} failed: transient)"
        if last.workflow_version == workflow.version:
            return (
                f"waiting for a fix: run {last.run_id} failed ({_first_line(last.error)}); its triggers "
                "fire again once the workflow's files change, or after a manual `calve run`"
            )
        return None

    def _restart(self, workflow: Workflow, run: RunRecord, trigger: str, note: str) -> Firing:
        result = self._run(workflow, trigger=trigger, restart_of=run.run_id, attempt=run.attempt + 1)
        return Firing(workflow.id, run.trigger, run.trigger_slot, result, note)

    def _evaluate(self, workflow: Workflow, trigger: TriggerSpec) -> Firing | None:
        now = self.clock()
        if trigger.kind is TriggerKind.INCREMENTAL:
            return self._incremental(workflow, trigger, now)
        if trigger.kind is TriggerKind.INTERVAL:
            assert trigger.interval_s is not None
            slot: dt.datetime | None = interval_slot(now, trigger.interval_s)
        else:
            assert trigger.cron is not None
            slot = CronExpression.parse(trigger.cron).latest_at_or_before(now)
        if slot is None:
            return None
        key = slot_key(slot)
        last, _ = self.project.state.last_slot(workflow.id, trigger.key)
        if last is not None and parse_slot(last) >= slot:
            return None
        note = ""
        if last is not None and trigger.kind is TriggerKind.INTERVAL:
            assert trigger.interval_s is not None
            missed = int((slot - parse_slot(last)).total_seconds() // trigger.interval_s) - 1
            if missed > 0:
                note = f"caught up {missed} missed slot(s) in this run"
        reads_changes = any(s.incremental_inputs for s in workflow.steps)
        pending = self.runner.pending(workflow, tables=self._tables) if reads_changes else None
        result = self._run(
            workflow,
            trigger=trigger.key,
            trigger_slot=key,
            logical_date=slot.date(),
            skip_if_no_changes=reads_changes,
            pending=pending,
        )
        if result is None:
            return None
        return Firing(workflow.id, trigger.key, key, result, note)

    def _incremental(self, workflow: Workflow, trigger: TriggerSpec, now: dt.datetime) -> Firing | None:
        _, last_fired = self.project.state.last_slot(workflow.id, trigger.key)
        if last_fired is not None and now.timestamp() - last_fired < trigger.min_interval_s:
            return None  # batch bursts: wait for min_interval since this trigger last fired
        pending = self.runner.pending(workflow, tables=self._tables)
        changed = [pending.source_pending(source) for source in trigger.sources]
        if not (all(changed) if trigger.when == "all" else any(changed)):
            return None
        self.project.state.mark_fired(workflow.id, trigger.key, now.timestamp())
        result = self._run(workflow, trigger=trigger.key, logical_date=now.date(), pending=pending)
        return Firing(workflow.id, trigger.key, None, result)

    def _missing_table_note(self, workflow: Workflow, exc: TableNotFoundError) -> str:
        """A source that another workflow will create is not an error: the workflow waits for it."""
        for other in self.project.workflows().values():
            for table in other.output_tables & workflow.source_tables:
                if table in str(exc):
                    return (
                        f"waiting: {table} does not exist yet; workflow {other.id!r} creates it with its "
                        "first commit"
                    )
        return f"error: {exc}"


def upstream_first(workflows: Mapping[str, Workflow]) -> list[Workflow]:
    """Workflows in an order where one that writes a table comes before those that read it.

    So a chain of incremental workflows (A writes what B reads, B what C reads) runs to its end within
    one tick. Ties, and workflows in a cycle of tables, go by id.
    """
    writers: dict[str, set[str]] = {}
    for workflow in workflows.values():
        for table in workflow.output_tables:
            writers.setdefault(table, set()).add(workflow.id)
    graph = {
        wid: {w for table in wf.source_tables for w in writers.get(table, ()) if w != wid}
        for wid, wf in workflows.items()
    }
    sorter = TopologicalSorter(graph)
    try:
        sorter.prepare()
    except CycleError:
        return [workflows[wid] for wid in sorted(workflows)]
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        order.extend(ready)
        sorter.done(*ready)
    return [workflows[wid] for wid in order]


def _maintenance_note(result: dict[str, Any]) -> str:
    parts = []
    compaction = result.get("compaction") or {}
    if compaction.get("files_removed"):
        parts.append(
            f"compacted {compaction['files_removed']} file(s) into {compaction.get('files_written', 0)}"
        )
    expiry = result.get("expiry") or {}
    if expiry.get("expired"):
        parts.append(f"expired {expiry['expired']} snapshot(s)")
    if result.get("error"):
        parts.append(f"error: {result['error']}")
    return "maintenance: " + ("; ".join(parts) or "nothing to do")


def _first_line(text: str | None) -> str:
    return (text or "").splitlines()[0][:200] if text else "no error recorded"


def _host() -> str:
    import socket

    return socket.gethostname()
