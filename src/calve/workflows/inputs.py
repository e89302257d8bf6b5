"""A step's inputs, read once: the changes it declared (ICDC table, rows, keys, ranges) or pinned tables.

`read_inputs` turns a step's `InputSpec`s, the change sets the runner captured for it and the pinned
snapshots into one immutable `StepInputs`: the Arrow tables the step's SQL or Python sees, the
injected values, the ICDC tables published, and what was read (for the run record). Incremental
inputs are read first (their ranges may feed filters), then pinned tables; an input whose filter or
`match` uses another input's values comes after it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import pyarrow as pa
from pyiceberg.expressions import AlwaysTrue, BooleanExpression
from pyiceberg.schema import Schema
from pyiceberg.table import FileScanTask, Table

from calve.capture.changelog import compute_changelog, read_tasks, snapshot_schema
from calve.capture.changes import ChangeSet
from calve.capture.icdc import IcdcTable
from calve.capture.ranges import ColumnRange, change_ranges
from calve.errors import CalveError
from calve.observe.clock import note_input_files, phase
from calve.read.duckdb_scan import MatchedScan, cast_keys, read_all, read_matched, scan_matched
from calve.read.planning import plan_files, read_files
from calve.read.table_scan import TableScan, semi_join
from calve.state import InputRead, StepMetrics
from calve.workflows.filters import expression, uses_other_inputs
from calve.workflows.injection import input_values, range_union_values
from calve.workflows.model import InputSpec, ReadKind, StepSpec
from calve.workflows.values import widen
from calve.write.merge import plan_key_files, read_key_files

# an input's rows: Arrow, or rows not read yet: matched rows a DuckDB engine reads in place, or a
# table scan an engine with workers reads there (calve.read.table_scan)
Relation: TypeAlias = pa.Table | MatchedScan | TableScan


def as_arrow(rows: Relation) -> pa.Table:
    """An input's rows as an Arrow table (a `MatchedScan` or `TableScan` is read now)."""
    return rows if isinstance(rows, pa.Table) else rows.to_arrow()


def rows_decoded(rows: Relation) -> int:
    """The rows read for an input: its rows, or for a scan not read yet, the rows of its files."""
    return rows.num_rows if isinstance(rows, pa.Table) else rows.rows_scanned


# publishes a change set as the step's ICDC table (the consumer's, so it replaces the last one)
PublishIcdc = Callable[[Table, ChangeSet], IcdcTable]


@dataclass(frozen=True)
class StepInputs:
    """Everything a step reads, built once per step (or foreach iteration) and never changed."""

    tables: Mapping[str, Relation]  # input alias -> rows (what the SQL sees under that name)
    changes: Mapping[str, ChangeSet]  # incremental input alias -> its change set
    ranges: Mapping[str, Mapping[str, ColumnRange]]  # input alias -> column -> change range
    icdc: Mapping[str, IcdcTable]  # input alias -> the ICDC table published for it
    params: Mapping[str, Any]  # every injected value
    reads: StepMetrics = field(default_factory=StepMetrics)  # rows, files, bytes read; snapshots

    @property
    def has_changes(self) -> bool:
        return any(not change_set.is_empty for change_set in self.changes.values())

    def with_icdc_rows(self, step: StepSpec) -> StepInputs:
        """These inputs with the rows of their published ICDC tables read (for a step after `icdc:`)."""
        tables = dict(self.tables)
        rows_read, files_read, bytes_read = self.reads.rows_read, self.reads.files_read, self.reads.bytes_read
        columns = {i.alias: i.columns for i in step.inputs}
        for alias, icdc in self.icdc.items():
            if icdc.files and icdc.table is not None:
                rows = icdc.table.scan(selected_fields=columns[alias] or ("*",)).to_arrow()
                tables[alias] = rows
                rows_read += rows.num_rows
                files_read += icdc.files
                bytes_read += icdc.bytes
        reads = StepMetrics(
            rows_read=rows_read,
            files_read=files_read,
            bytes_read=bytes_read,
            inputs=self.reads.inputs,
            icdc_tables=self.reads.icdc_tables,
        )
        return StepInputs(tables, self.changes, self.ranges, self.icdc, self.params, reads)


def read_inputs(
    step: StepSpec,
    base_params: Mapping[str, Any],
    tables: Mapping[str, Table],
    pins: Mapping[str, int | None],
    changes: Mapping[str, ChangeSet],
    publish_icdc: PublishIcdc,
    *,
    publish_only: bool = False,
    lazy: bool = False,
    scans: bool = False,
) -> StepInputs:
    """Read `step`'s inputs: `changes` (by table) for incremental ones, `pins` for pinned tables.

    With `publish_only`, ICDC tables are published but their rows are not read (an `icdc:` step).
    With `lazy`, a `match:` input that DuckDB can read exactly is left as a `MatchedScan` for the
    engine to run in the step's own connection (an engine with `accepts_scans`). With `scans`, a
    pinned input and an ICDC input stay a `TableScan` (planned, not read) for an engine that reads
    Iceberg on its workers (`reads_tables`). Else all is Arrow.
    """
    rows: dict[str, Relation] = {}
    by_alias: dict[str, ChangeSet] = {}
    ranges: dict[str, dict[str, ColumnRange]] = {}
    icdc: dict[str, IcdcTable] = {}
    params: dict[str, Any] = dict(base_params)
    reads: dict[str, InputRead] = {}
    union: dict[str, list[tuple[Any, Any]]] = {}
    rows_read = files_read = bytes_read = 0

    ordered = sorted(
        step.inputs,
        key=lambda i: (i.read.incremental is False, i.match is not None or uses_other_inputs(i.filter)),
    )
    for spec in ordered:
        source = tables[spec.table]
        until = pins[spec.table]
        if not spec.read.incremental:
            params.update(range_union_values(union))  # $range_<col>_*: united over the inputs so far
            params.update(input_values(spec.alias, until))
            table, files, size, decoded = _read_pinned(
                spec, source, until, params, rows, lazy=lazy, scans=scans
            )
            rows[spec.alias] = table
            rows_read += decoded
            files_read += files
            bytes_read += size
            reads[spec.alias] = InputRead(
                spec.table,
                snapshot_id=until,
                rows_read=decoded,
                files_read=files,
                bytes_read=size,
                files_skipped=_files_skipped(source, until, files),
            )
            continue

        change_set = changes[spec.table]
        by_alias[spec.alias] = change_set
        bounds: dict[str, tuple[Any, Any]] = {}
        if spec.ranges:
            with phase("plan"):  # manifest bounds, no data
                ranges[spec.alias] = _ranges(spec, source, change_set)
            for column, column_range in ranges[spec.alias].items():
                bounds[column] = _widened(spec, column, column_range)
                union.setdefault(column, []).append(bounds[column])
        published = None
        if spec.read is ReadKind.ICDC:
            published = icdc[spec.alias] = publish_icdc(source, change_set)
        params.update(
            input_values(
                spec.alias,
                until,
                from_snapshot_id=change_set.from_snapshot_id_exclusive,
                incremental=True,
                icdc_table=published.identifier if published else None,
                ranges=bounds,
            )
        )
        table, files, size = _read_changes(spec, source, change_set, published, publish_only, scans)
        rows[spec.alias] = table
        rows_read += rows_decoded(table)
        files_read += files
        bytes_read += size
        reads[spec.alias] = _change_read(
            spec, change_set, ranges.get(spec.alias), rows_decoded(table), files, size
        )
    params.update(range_union_values(union))
    metrics = StepMetrics(
        rows_read=rows_read,
        files_read=files_read,
        bytes_read=bytes_read,
        inputs=reads,
        icdc_tables={alias: t.identifier for alias, t in icdc.items()},
        read_by="workers" if any(isinstance(r, TableScan) for r in rows.values()) else None,
    )
    return StepInputs(rows, by_alias, ranges, icdc, params, metrics)


def _change_read(
    spec: InputSpec,
    change_set: ChangeSet,
    ranges: Mapping[str, ColumnRange] | None,
    rows_read: int,
    files_read: int,
    bytes_read: int,
) -> InputRead:
    """What an incremental input read: the change set's size (snapshots, files, records, ranges) and
    the rows, files and bytes decoded for it; the change set's files left unread count as skipped."""
    data_files = (*change_set.added_files, *change_set.removed_files)
    if files_read:
        read = change_set.appended_files if spec.read is ReadKind.ICDC else data_files
        note_input_files(f.record_count for f in read)
    return InputRead(
        spec.table,
        from_snapshot_id=change_set.from_snapshot_id_exclusive,
        to_snapshot_id=change_set.to_snapshot_id_inclusive,
        snapshots=len(change_set.logical_snapshots),
        files=len(data_files),
        records=change_set.added_records + change_set.removed_records,
        ranges={c: {"min": r.to_dict()["min"], "max": r.to_dict()["max"]} for c, r in (ranges or {}).items()}
        or None,
        rows_read=rows_read,
        files_read=files_read,
        bytes_read=bytes_read,
        files_skipped=max(0, len(data_files) - files_read),
    )


def _files_skipped(source: Table, snapshot_id: int | None, files_read: int) -> int | None:
    """Data files of the pinned snapshot that the read left out (pruned by a filter or a match)."""
    snapshot = source.snapshot_by_id(snapshot_id) if snapshot_id is not None else None
    total = snapshot.summary.get("total-data-files") if snapshot and snapshot.summary else None
    return max(0, int(total) - files_read) if total is not None else None


def _ranges(spec: InputSpec, source: Table, change_set: ChangeSet) -> dict[str, ColumnRange]:
    ranges = change_ranges(change_set, source.schema(), list(spec.ranges), table=source)
    for column, column_range in ranges.items():
        if not column_range.complete:
            raise CalveError(
                f"input {spec.alias!r}: the change range of {spec.table}.{column} is unknown for "
                f"{column_range.files_without_bounds} file(s) without column bounds; enable column metrics "
                "on the table, or drop `ranges` and filter on the data instead"
            )
    return ranges


def _widened(spec: InputSpec, column: str, column_range: ColumnRange) -> tuple[Any, Any]:
    """A change range as injected: widened to whole days, months or years when the input says so."""
    low, high = column_range.min, column_range.max
    grain = spec.range_grain(column)
    if grain is None or low is None or high is None:
        return low, high
    try:
        return widen(low, grain)[0], widen(high, grain)[1]
    except TypeError:
        raise CalveError(
            f"input {spec.alias!r}: ranges: {{{column}: {grain}}} widens dates and timestamps only, but "
            f"{spec.table}.{column} holds {type(low).__name__} values; list the column without a grain"
        ) from None


def _read_pinned(
    spec: InputSpec,
    source: Table,
    until: int | None,
    params: Mapping[str, Any],
    rows: Mapping[str, Relation],
    lazy: bool = False,
    scans: bool = False,
) -> tuple[Relation, int, int, int]:
    """A table at its pinned snapshot, filtered (and matched on another input's keys): rows, files,
    bytes, rows decoded. With `lazy`, matched rows DuckDB can read exactly stay a `MatchedScan`;
    with `scans`, the input stays a `TableScan` (its rows decoded: its files')."""
    keys = as_arrow(rows[spec.match]) if spec.match is not None else None
    if until is None:
        return source.schema().as_arrow().empty_table(), 0, 0, 0
    condition = expression(spec.filter, params, rows)
    projection = source.scan(snapshot_id=until, selected_fields=spec.columns or ("*",)).projection()
    if keys is None:
        with phase("plan"):
            tasks = plan_files(source, condition, until)
        note_input_files(t.file.record_count for t in tasks)
        if scans:
            planned = TableScan(source, until, condition, projection, tuple(tasks))
            return planned, len(tasks), _size(tasks), planned.rows_scanned
        table = read_files(source, tasks, condition, projection)
        return table, len(tasks), _size(tasks), table.num_rows
    # the files that may hold one of the keys, pruned by their bounds
    with phase("plan"):
        tasks = plan_key_files(source, keys, until, condition)
    note_input_files(t.file.record_count for t in tasks)
    if keys.num_rows:
        _check_match_columns(keys, projection.column_names)
    if scans and tasks and keys.num_rows:  # read and matched on the engine's workers
        planned = TableScan(
            source, until, condition, projection, tuple(tasks), cast_keys(source.schema(), keys)
        )
        return planned, len(tasks), _size(tasks), planned.rows_scanned
    if lazy and isinstance(condition, AlwaysTrue) and tasks and keys.num_rows:
        scan = scan_matched(source, tasks, keys, projection)
        if scan is not None:
            return scan, len(tasks), _size(tasks), scan.rows_scanned
    table, decoded = _read_matched(source, tasks, keys, condition, projection)
    return table, len(tasks), _size(tasks), decoded


def _read_matched(
    source: Table, tasks: list[FileScanTask], keys: pa.Table, condition: BooleanExpression, projection: Schema
) -> tuple[pa.Table, int]:
    """The rows of the planned files whose key tuple is in `keys` exactly, and how many rows were
    decoded for them: with DuckDB when that is exact (calve.read.duckdb_scan), else with ArrowScan
    (second key pushed into Arrow's filter) and an Arrow semi-join."""
    matched = read_matched(source, tasks, keys, condition, projection)
    if matched is not None:
        return matched.rows, matched.rows_scanned
    table = read_key_files(source, tasks, keys, condition, projection)
    decoded = table.num_rows  # rows decoded from the files, before exact key matching
    # the file pruning is coarse: keep the exact key tuples
    return (_semi_join(table, keys) if keys.num_rows else table.slice(0, 0)), decoded


def _size(tasks: list[FileScanTask]) -> int:
    return sum(t.file.file_size_in_bytes for t in tasks)


def _read_changes(
    spec: InputSpec,
    source: Table,
    change_set: ChangeSet,
    published: IcdcTable | None,
    publish_only: bool,
    scans: bool = False,
) -> tuple[pa.Table | TableScan, int, int]:
    """The rows of a change set, as the input declares: rows, files read, bytes read (with `scans`,
    an ICDC input's rows stay a `TableScan` of the ICDC table, for the engine's workers)."""
    schema = (
        source.schema()
        if change_set.to_snapshot_id_inclusive is None
        else snapshot_schema(source, change_set.to_snapshot_id_inclusive)
    )
    if spec.read is ReadKind.RANGES:
        return schema.as_arrow().empty_table(), 0, 0
    if spec.read is ReadKind.ICDC:
        assert published is not None
        empty = (schema.select(*spec.columns) if spec.columns else schema).as_arrow().empty_table()
        if publish_only or not published.files or published.table is None:
            return empty, 0, 0
        if scans:
            icdc = published.table
            projection = icdc.schema().select(*spec.columns) if spec.columns else icdc.schema()
            snapshot_id = icdc.metadata.current_snapshot_id
            tasks = tuple(FileScanTask(f.data_file) for f in change_set.appended_files)
            scan = TableScan(icdc, snapshot_id, AlwaysTrue(), projection, tasks)
            return scan, published.files, published.bytes
        return _read_icdc(spec, published.table, change_set), published.files, published.bytes
    if spec.read is ReadKind.KEYS and change_set.is_append_only:
        # new keys are in the appended files: read just the key columns
        files = change_set.appended_files
        key_schema = schema.select(*spec.keys)
        rows = read_tasks(source, key_schema, [FileScanTask(f.data_file) for f in files])
        distinct = rows.group_by(list(spec.keys)).aggregate([])
        return distinct, len(files), sum(f.file_size_in_bytes for f in files)
    log = compute_changelog(source, change_set)
    if spec.read is ReadKind.INSERTED:
        return log.inserted, log.files_read, log.bytes_read
    if spec.read is ReadKind.CHANGELOG:
        return log.to_arrow(), log.files_read, log.bytes_read
    keys = list(spec.keys)
    both = pa.concat_tables([log.inserted.select(keys), log.deleted.select(keys)])
    return both.group_by(keys).aggregate([]), log.files_read, log.bytes_read


def _check_match_columns(keys: pa.Table, columns: list[str]) -> None:
    missing = [n for n in keys.column_names if n not in columns]
    if missing:
        raise CalveError(f"match: the input has no column {missing[0]!r} (select it in `columns`)")


def _read_icdc(spec: InputSpec, icdc: Table, change_set: ChangeSet) -> pa.Table:
    """The rows of a published ICDC table, its appended files (no deletes apply to them): read by
    DuckDB where that is exact (about twice as fast as ArrowScan), else through the ICDC table."""
    schema = icdc.schema().select(*spec.columns) if spec.columns else icdc.schema()
    tasks = [FileScanTask(f.data_file) for f in change_set.appended_files]
    rows = read_all(icdc, tasks, schema)
    if rows is None:
        rows = icdc.scan(selected_fields=spec.columns or ("*",)).to_arrow()
    return rows


def _semi_join(table: pa.Table, keys: pa.Table) -> pa.Table:
    """The rows of `table` whose key tuple (the columns of `keys`) is in `keys`, in table order."""
    _check_match_columns(keys, table.column_names)
    return semi_join(table, keys)


def read_rows_of_keys(table: Table, keys: pa.Table) -> pa.Table:
    """Every row of `table` (at its current snapshot) whose values in `keys`' columns are a row of `keys`."""
    snapshot = table.current_snapshot()
    spec = InputSpec("rows", ".".join(table.name()), ReadKind.TABLE, match="keys")
    rows, *_ = _read_pinned(spec, table, snapshot.snapshot_id if snapshot else None, {}, {"keys": keys})
    return as_arrow(rows)
