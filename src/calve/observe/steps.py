"""A step's metrics completed at its end: phases, peak memory, skew and the newest source commit.

The runner calls `complete_step` with the `StepMetrics` the step produced and the tables of the run
(pinned sources, committed outputs). No file is read for it: the skew of the output is counted on
the rows the step wrote, grouped by the target's partition spec (`output_partition_rows`, called by
the output's writer before its commit: reading the committed snapshot's manifests instead cost a
small run 5% more CPU), the skew of the inputs from the record counts of the files the step read,
and `source_commit_at` from the pinned snapshots' commit times, in the table metadata already loaded.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from calve.observe.clock import StepObservation, enabled
from calve.observe.errors import classify
from calve.state.records import Skew, StepMetrics

if TYPE_CHECKING:
    import pyarrow as pa
    from pyiceberg.manifest import DataFile
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
    output = metrics.skew or Skew()  # its output half, counted by the writer
    files = observation.input_file_rows
    return Skew(
        output_partitions=output.output_partitions,
        largest_partition_rows=output.largest_partition_rows,
        median_partition_rows=output.median_partition_rows,
        input_files=len(files),
        largest_file_rows=max(files, default=0),
        median_file_rows=statistics.median(files) if files else 0,
    )


def output_skew(rows: pa.Table, target: Table) -> Skew | None:
    """The output half of a step's skew: `rows` (as written) per partition of `target`'s spec (an
    unpartitioned table is one partition); None with CALVE_OBSERVE=0 or no rows."""
    if not enabled() or rows.num_rows == 0:
        return None
    counts = _partition_rows(rows, target)
    return Skew(
        output_partitions=len(counts),
        largest_partition_rows=max(counts),
        median_partition_rows=statistics.median(counts),
    )


def files_skew(files: Iterable[DataFile], target: Table) -> Skew | None:
    """`output_skew` from the data files an engine's workers wrote (their record counts summed per
    partition): the rows did not come to the driver."""
    if not enabled():
        return None
    counts: dict[str, int] = {}
    for data_file in files:
        key = "" if target.spec().is_unpartitioned() else repr(data_file.partition)
        counts[key] = counts.get(key, 0) + data_file.record_count
    if not counts:
        return None
    return Skew(
        output_partitions=len(counts),
        largest_partition_rows=max(counts.values()),
        median_partition_rows=statistics.median(counts.values()),
    )


def _partition_rows(rows: pa.Table, target: Table) -> list[int]:
    import pyarrow as pa
    from pyiceberg.transforms import IdentityTransform

    spec, schema = target.spec(), target.schema()
    if spec.is_unpartitioned():
        return [rows.num_rows]
    keys = {}
    for i, field in enumerate(spec.fields):
        name = schema.find_column_name(field.source_id)
        if name is None or name not in rows.column_names:
            return [rows.num_rows]
        column = rows.column(name)
        if not isinstance(field.transform, IdentityTransform):
            source_type = schema.find_field(field.source_id).field_type
            column = field.transform.pyarrow_transform(source_type)(column)
        keys[f"p{i}"] = column
    grouped = pa.table(keys).group_by(list(keys)).aggregate([([], "count_all")])
    return sorted(grouped.column("count_all").to_pylist())
