"""A step's metrics completed at its end: phases, peak memory, skew and the newest source commit.

The runner calls `complete_step` with the `StepMetrics` the step produced and the tables of the run
(pinned sources, committed outputs). What it adds is metadata only: the skew of the output comes
from the committed snapshot's own manifests (the files it added, per partition), the skew of the
inputs from the record counts of the files the step read, and `source_commit_at` from the pinned
snapshots' commit times, which are in the table metadata already loaded.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from calve.observe.clock import StepObservation
from calve.observe.errors import classify
from calve.state.records import Skew, StepMetrics

if TYPE_CHECKING:
    from pyiceberg.table import Table


def complete_step(
    metrics: StepMetrics, observation: StepObservation | None, tables: Mapping[str, Table]
) -> StepMetrics:
    """`metrics` with the observed timings, peak memory, skew and newest source commit."""
    if observation is None:  # CALVE_OBSERVE=0
        return metrics
    return replace(
        metrics,
        timings=observation.timings(),
        peak_rss_bytes=observation.peak_rss_bytes(),
        skew=_skew(metrics, observation, tables),
        source_commit_at=source_commit_at(metrics, tables),
    )


def failed_step(exc: BaseException, observation: StepObservation | None) -> StepMetrics:
    """The metrics of a failed step: its error class, and what was observed until it failed."""
    metrics = StepMetrics(error_class=classify(exc))
    if observation is None:
        return metrics
    return replace(metrics, timings=observation.timings(), peak_rss_bytes=observation.peak_rss_bytes())


def source_commit_at(metrics: StepMetrics, tables: Mapping[str, Table]) -> float | None:
    """Epoch seconds of the newest source snapshot the step read up to (its output includes it)."""
    newest = None
    for read in metrics.inputs.values():
        snapshot_id = read.to_snapshot_id if read.snapshots is not None else read.snapshot_id
        table = tables.get(read.table)
        if snapshot_id is None or table is None:
            continue
        snapshot = table.snapshot_by_id(snapshot_id)
        if snapshot is not None:
            at = snapshot.timestamp_ms / 1000
            newest = at if newest is None else max(newest, at)
    return newest


def _skew(metrics: StepMetrics, observation: StepObservation, tables: Mapping[str, Table]) -> Skew:
    partitions = _output_partition_rows(metrics, tables)
    files = observation.input_file_rows
    return Skew(
        output_partitions=len(partitions),
        largest_partition_rows=max(partitions, default=0),
        median_partition_rows=statistics.median(partitions) if partitions else 0,
        input_files=len(files),
        largest_file_rows=max(files, default=0),
        median_file_rows=statistics.median(files) if files else 0,
    )


def _output_partition_rows(metrics: StepMetrics, tables: Mapping[str, Table]) -> list[int]:
    """Rows per partition of the data files the step's commit added (one entry per partition)."""
    if metrics.committed_snapshot_id is None or metrics.output is None:
        return []
    target = tables.get(metrics.output)
    if target is None:
        return []
    snapshot = target.snapshot_by_id(metrics.committed_snapshot_id)
    if snapshot is None:
        return []
    from calve.capture.changes import capture_changes

    changes = capture_changes(target, snapshot.parent_snapshot_id, snapshot.snapshot_id)
    rows: dict[tuple[int, tuple[tuple[str, object], ...]], int] = {}
    for change in changes.snapshots:
        for added in change.added_files:
            key = (added.spec_id, tuple(sorted(added.partition.items())))
            rows[key] = rows.get(key, 0) + added.record_count
    return sorted(rows.values())
