"""Writing a step's output: the write mode, in the same commit that advances the step's checkpoints.

The step's rows are conformed to the target's schema (the target is created from them on the first
run), sorted by `sort_by`, split into upserts and deletes by `delete_column` (which is never
stored), and committed by the step's consumer with the change sets the step processed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from calve.capture.changes import ChangeSet
from calve.errors import CalveError
from calve.observe.clock import phase
from calve.observe.steps import files_skew, output_skew
from calve.state import MergeMetrics, StepMetrics
from calve.workflows.filters import expression
from calve.workflows.model import OutputSpec, StepSpec
from calve.write.consumer import CommitResult, Consumer
from calve.write.modes import WriteMode
from calve.write.staged import StagedOutput
from calve.write.tables import conform, load_or_create


def write_output(
    catalog: Catalog,
    step: StepSpec,
    output: pa.Table | StagedOutput,
    consumer: Consumer,
    target: Table | None,
    changes: Mapping[str, ChangeSet],
    params: Mapping[str, Any],
    tables: Mapping[str, Any],
    *,
    deletes: pa.Table | None = None,
    mode: WriteMode | None = None,
    properties: Mapping[str, str] | None = None,
) -> tuple[Table, StepMetrics]:
    """Commit `output` into the step's target with the checkpoints of `changes`: (target, metrics).

    `deletes` are more keys to delete in a merge (a strategy step's vanished groups); `mode`
    overrides the output's write mode (a strategy step's recompute overwrites the whole table);
    `properties` go into the snapshot summary. A `StagedOutput` (an engine's rows on its workers) is
    written as data files by the workers, and only committed here.
    """
    with phase("write"):  # the catalog commit inside is timed as its own phase
        return _write_output(
            catalog, step, output, consumer, target, changes, params, tables, deletes, mode, properties
        )


def _write_output(
    catalog: Catalog,
    step: StepSpec,
    output: pa.Table | StagedOutput,
    consumer: Consumer,
    target: Table | None,
    changes: Mapping[str, ChangeSet],
    params: Mapping[str, Any],
    tables: Mapping[str, Any],
    deletes: pa.Table | None,
    mode: WriteMode | None,
    properties: Mapping[str, str] | None,
) -> tuple[Table, StepMetrics]:
    spec = step.output
    assert spec is not None
    data, flagged = split_deletes(step, output)
    if deletes is not None and flagged is not None:
        deletes = pa.concat_tables([flagged, deletes.select(flagged.column_names).cast(flagged.schema)])
    elif deletes is None:
        deletes = flagged
    if target is None:
        target = load_or_create(catalog, spec.table, data.schema, spec.partition_by, dict(spec.properties))
    data = conform(data, target, step.id) if isinstance(data, pa.Table) else data.conformed(target, step.id)
    if spec.sort_by:
        missing = [c for c in spec.sort_by if c not in data.column_names]
        if missing:
            raise CalveError(
                f"step {step.id!r}: sort_by names {missing[0]!r}, which the output does not have"
            )
        if isinstance(data, pa.Table):
            data = data.sort_by([(c, "ascending") for c in spec.sort_by])
        else:
            data = data.sorted(spec.sort_by)
    # rows per partition, for the run metrics (calve.observe): of the written files when staged
    skew = output_skew(data, target) if isinstance(data, pa.Table) else None
    by_table = list({cs.table: cs for cs in changes.values()}.values())  # each source once
    result = consumer.commit(
        target,
        by_table,
        data,
        mode=mode or spec.mode,
        overwrite_filter=expression(spec.filter, params, tables),
        keys=spec.keys,
        deletes=deletes,
        properties=properties,
    )
    if skew is None and result.written_files:
        skew = files_skew(result.written_files, target)
    metrics = replace(_metrics(spec, output.num_rows, result), skew=skew)
    if result.written_by is not None:
        metrics = replace(metrics, written_by=result.written_by)
    return target, metrics


def split_deletes(
    step: StepSpec, output: pa.Table | StagedOutput
) -> tuple[pa.Table | StagedOutput, pa.Table | None]:
    """The rows to write and (with `delete_column`) the keys to delete; the flag column is dropped."""
    spec = step.output
    assert spec is not None
    if spec.delete_column is None:
        return output, None
    if spec.delete_column not in output.column_names:
        raise CalveError(
            f"step {step.id!r}: delete_column {spec.delete_column!r} is not a column of the output"
        )
    if isinstance(output, StagedOutput):
        flagged = output.where_flag(spec.delete_column, keep=True).select_arrow(list(spec.keys))
        return output.where_flag(spec.delete_column, keep=False), flagged
    flag = pc.fill_null(output.column(spec.delete_column).cast(pa.bool_()), False)
    deletes = output.filter(flag).select(list(spec.keys))
    return output.filter(pc.invert(flag)).drop_columns([spec.delete_column]), deletes


def _metrics(spec: OutputSpec, rows_out: int, result: CommitResult) -> StepMetrics:
    merge = None
    if result.merge is not None:
        merge = MergeMetrics(
            files_read=result.merge.files_read,
            rows_read=result.merge.rows_read,
            bytes_read=result.merge.bytes_read,
            rows_matched=result.merge.rows_matched,
            files_rewritten=len(result.merge.deleted_files),
        )
    return StepMetrics(
        rows_out=rows_out,
        rows_written=result.rows_written,
        rows_deleted=result.rows_deleted,
        files_written=result.files_written,
        bytes_written=result.bytes_written,
        files_removed=result.files_removed,
        committed_snapshot_id=result.snapshot_id,
        output=spec.table,
        mode=spec.mode.value,
        merge=merge,
    )
