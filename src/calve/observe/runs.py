"""A run's metrics at its end (`RunMetrics`, stored in `runs.metrics`): CPU, peak memory, rows,
freshness, the lookback estimate and the error class, from its step records and tables."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from calve.observe.clock import enabled
from calve.state.records import RunMetrics, RunStatus, StepRunRecord

if TYPE_CHECKING:
    from pyiceberg.table import Table

    from calve.capture.changes import ChangeSet
    from calve.state.store import StateStore
    from calve.workflows.model import Workflow


def run_metrics(
    workflow: Workflow,
    steps: list[StepRunRecord],
    tables: Mapping[str, Table],
    *,
    status: RunStatus,
    cpu_started: float,
    finished_at: float,
    lookback_days: int,
    changes: Mapping[tuple[str, str], ChangeSet] | None = None,
    state: StateStore | None = None,
) -> RunMetrics:
    """The metrics of a run that ends with `status` now (CPU counted since `cpu_started`); `changes`
    are the change sets its steps captured, by (step id, table), and `state` the state store that
    keeps the lookback estimate's state between processes.

    With CALVE_OBSERVE=0 only what costs nothing is kept: CPU, rows and the error class.
    """
    failed = [s for s in steps if s.status is RunStatus.FAILED]
    metrics = RunMetrics(
        cpu_s=round(time.process_time() - cpu_started, 6),
        rows_read=sum(s.metrics.rows_read for s in steps),
        rows_written=sum(s.metrics.rows_written or 0 for s in steps),
        error_class=failed[0].metrics.error_class if failed else None,
    )
    if not enabled():
        return metrics
    peaks = [s.metrics.peak_rss_bytes for s in steps if s.metrics.peak_rss_bytes is not None]
    commits = [s.metrics.source_commit_at for s in steps if s.metrics.source_commit_at is not None]
    estimate, days = None, None
    if status is not RunStatus.FAILED and lookback_days > 0:
        from calve.observe.lookback import run_lookback_rows

        by_id = {step.id: step for step in workflow.steps}
        latest = {s.step_id: s for s in steps if s.step_id in by_id}  # a foreach's last iteration
        pairs = [(by_id[step_id], record.metrics) for step_id, record in latest.items()]
        estimate = run_lookback_rows(pairs, tables, lookback_days, changes, state)
        days = lookback_days if estimate is not None else None
    return RunMetrics(
        cpu_s=metrics.cpu_s,
        peak_rss_bytes=max(peaks) if peaks else None,
        freshness_s=round(finished_at - max(commits), 3)
        if commits and status is not RunStatus.FAILED
        else None,
        lookback_rows_estimate=estimate,
        lookback_days=days,
        rows_read=metrics.rows_read,
        rows_written=metrics.rows_written,
        error_class=metrics.error_class,
    )
