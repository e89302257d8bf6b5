"""The scheduler: evaluates every workflow's triggers, starts the due runs, and survives restarts.

One tick, per workflow:

1. Recover: a run left queued or running by a process that is gone (a killed scheduler) is marked
   failed and restarted from its first unfinished step, with the same pins and params, so that its
   micro-batch is neither skipped nor done twice.
2. Time triggers: the latest slot at or before now; if it is newer than the last slot fired, a run
   is created for it (the slot is stored with the run, atomically). If the workflow reads changes and
   none is pending, the run is recorded as skipped.
3. Incremental triggers: fire when any (or all) of the sources has changes past the checkpoints of
   the steps that read it, and `min_interval` has passed since the workflow's last run started.

Runs execute one at a time in the scheduler's process; `calve scheduler --once` does one tick.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from calve.errors import CalveError, RunLockedError
from calve.project import Project
from calve.state import RunStatus
from calve.workflows.model import TriggerKind, TriggerSpec, Workflow
from calve.workflows.runner import Runner, RunResult
from calve.workflows.triggers import CronExpression, interval_slot, parse_slot, slot_key

UTC = dt.UTC


@dataclass
class Firing:
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


class Scheduler:
    def __init__(
        self,
        project: Project,
        runner: Runner,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(UTC),
        log: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.project = project
        self.runner = runner
        self.clock = clock
        self.log = log

    def tick(self) -> list[Firing]:
        """Evaluate every trigger once and run what is due; returns what fired."""
        firings: list[Firing] = []
        for workflow in self.project.workflows().values():
            try:
                firings.extend(self._recover(workflow))
                for trigger in workflow.triggers:
                    firing = self._evaluate(workflow, trigger)
                    if firing is not None:
                        firings.append(firing)
            except RunLockedError as exc:
                self.log(f"{workflow.id}: {exc}")
            except CalveError as exc:  # one broken workflow does not stop the others
                self.log(f"{workflow.id}: error: {exc}")
                firings.append(Firing(workflow.id, "-", None, None, f"error: {exc}"))
        return firings

    def run_forever(self, tick_s: float = 10.0, should_stop: Callable[[], bool] = lambda: False) -> None:
        self.log(f"scheduler started: {len(self.project.workflows())} workflow(s), tick every {tick_s:g}s")
        while not should_stop():
            started = time.monotonic()
            for firing in self.tick():
                self.log(_describe(firing))
            remaining = tick_s - (time.monotonic() - started)
            deadline = time.monotonic() + max(0.0, remaining)
            while time.monotonic() < deadline and not should_stop():
                time.sleep(min(0.5, deadline - time.monotonic()))
        self.log("scheduler stopped")

    def _recover(self, workflow: Workflow) -> list[Firing]:
        state = self.project.state
        live = {lock.workflow: lock for lock in state.locks()}
        firings = []
        for status in (RunStatus.RUNNING, RunStatus.QUEUED):
            for run in state.runs(workflow.id, limit=20, status=status):
                lock = live.get(workflow.id)
                if (
                    lock is not None
                    and lock.run_id == run.run_id
                    and not lock.is_stale(time.time(), self.runner.lock_stale_after_s, _host())
                ):
                    continue  # really running elsewhere
                state.update_run(
                    run.run_id,
                    status=RunStatus.FAILED,
                    finished_at=time.time(),
                    error="interrupted: its process stopped before the run finished; "
                    "restarted by the scheduler",
                )
                if lock is not None and lock.run_id == run.run_id:
                    state.release_lock(workflow.id, run.run_id)
                result = self.runner.run(workflow, trigger=f"recovery of {run.run_id}", restart_of=run.run_id)
                firings.append(Firing(workflow.id, run.trigger, run.trigger_slot, result, "recovered"))
        return firings

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
        result = self.runner.run(
            workflow,
            trigger=trigger.key,
            trigger_slot=key,
            logical_date=slot.date(),
            skip_if_no_changes=reads_changes,
        )
        if result is None:
            return None
        return Firing(workflow.id, trigger.key, key, result, note)

    def _incremental(self, workflow: Workflow, trigger: TriggerSpec, now: dt.datetime) -> Firing | None:
        _, last_fired = self.project.state.last_slot(workflow.id, trigger.key)
        if last_fired is not None and now.timestamp() - last_fired < trigger.min_interval_s:
            return None  # batch bursts: wait for min_interval since this trigger last fired
        pending = [self._source_pending(workflow, source) for source in trigger.sources]
        fire = all(pending) if trigger.when == "all" else any(pending)
        if not fire:
            return None
        self.project.state.mark_fired(workflow.id, trigger.key, now.timestamp())
        result = self.runner.run(workflow, trigger=trigger.key, logical_date=now.date())
        return Firing(workflow.id, trigger.key, None, result)

    def _source_pending(self, workflow: Workflow, source: str) -> bool:
        from calve.catalog import load_table

        table = load_table(self.runner.catalog, source)
        snapshot = table.current_snapshot()
        until = snapshot.snapshot_id if snapshot else None
        for step in workflow.steps:
            for spec in step.incremental_inputs:
                if (
                    spec.table == source
                    and not self.runner._pending(workflow, step, spec, until, table).is_empty
                ):
                    return True
        return False


def _host() -> str:
    import socket

    return socket.gethostname()


def _describe(firing: Firing) -> str:
    stamp = dt.datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    what = f"{firing.workflow} [{firing.trigger}" + (f" @ {firing.slot}" if firing.slot else "") + "]"
    if firing.result is None:
        return f"{stamp} {what}: {firing.note}"
    run = firing.result.run
    note = f" ({firing.note})" if firing.note else ""
    error = f": {run.error}" if run.error else ""
    return f"{stamp} {what}: run {run.run_id} {run.status.value}{note}{error}"
