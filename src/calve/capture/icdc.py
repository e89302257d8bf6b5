"""ICDC tables: zero-copy Iceberg tables that hold exactly a change set's appended data files.

An ICDC table is a real Iceberg table, readable by any Iceberg engine from its metadata file. Its
metadata is a clone of the source's (schemas with their field ids, partition specs, sort orders,
properties such as the name mapping) with one snapshot whose manifests reference the source's data
files: no data file is read or written. The source keeps owning the files: the ICDC table carries
`gc.enabled=false` and `calve.capture.icdc=true`, calve never purges it, and dropping it deletes only the
ICDC table's own metadata files.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from pyiceberg.avro.codecs import AvroCompressionCodec
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError, NoSuchTableError
from pyiceberg.manifest import (
    DataFile,
    ManifestEntry,
    ManifestEntryStatus,
    ManifestFile,
    write_manifest,
    write_manifest_list,
)
from pyiceberg.serializers import ToOutputFile
from pyiceberg.table import Table, TableProperties
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.refs import MAIN_BRANCH, SnapshotRef, SnapshotRefType
from pyiceberg.table.snapshots import (
    Operation,
    Snapshot,
    SnapshotLogEntry,
    SnapshotSummaryCollector,
    Summary,
    update_snapshot_summaries,
)

from calve.capture.changes import ChangeSet, FileChange
from calve.errors import CalveError, NotAnIcdcTableError, RowLevelChangesError

ICDC_NAMESPACE = "calve_icdc"
ICDC_PROPERTY = "calve.capture.icdc"
SOURCE_PROPERTY = "calve.icdc.source"
SOURCE_UUID_PROPERTY = "calve.icdc.source-uuid"
FROM_PROPERTY = "calve.icdc.from-snapshot-id"
TO_PROPERTY = "calve.icdc.to-snapshot-id"
CONSUMER_PROPERTY = "calve.icdc.consumer"


@dataclass(frozen=True)
class IcdcTable:
    """The result of publishing a change set as an ICDC table."""

    identifier: str
    metadata_location: str
    source: str
    from_snapshot_id_exclusive: int | None
    to_snapshot_id_inclusive: int | None
    files: int
    records: int
    bytes: int
    complete: bool  # False when row-level snapshots were left out (appends_only=True)
    row_level_snapshot_ids: tuple[int, ...]
    table: Table | None = field(default=None, compare=False, repr=False)  # the registered table, loaded

    def to_dict(self) -> dict[str, Any]:
        return {
            "icdc_table": self.identifier,
            "metadata_location": self.metadata_location,
            "source": self.source,
            "from_snapshot_id_exclusive": self.from_snapshot_id_exclusive,
            "to_snapshot_id_inclusive": self.to_snapshot_id_inclusive,
            "files": self.files,
            "records": self.records,
            "bytes": self.bytes,
            "complete": self.complete,
            "row_level_snapshot_ids": list(self.row_level_snapshot_ids),
        }


def default_icdc_identifier(source: str, consumer: str | None = None) -> str:
    """`calve_icdc.<source ns>__<source name>` (prefixed by the consumer's name for a consumer)."""
    stem = source.replace(".", "__")
    return f"{ICDC_NAMESPACE}.{consumer}__{stem}" if consumer else f"{ICDC_NAMESPACE}.{stem}"


def create_icdc_table(
    catalog: Catalog,
    source: Table,
    change_set: ChangeSet,
    identifier: str | None = None,
    *,
    appends_only: bool = False,
    consumer: str | None = None,
) -> IcdcTable:
    """Publish the change set's appended data files as an ICDC table (created or replaced).

    Ranges with overwrite/delete snapshots raise RowLevelChangesError: their change is rows, not
    files; use `compute_changelog`. Pass `appends_only=True` to publish the appended files anyway
    (the result says `complete=False`).
    """
    row_level = tuple(s.snapshot_id for s in change_set.row_level_snapshots)
    if row_level and not appends_only:
        ops = ", ".join(f"{s.snapshot_id} ({s.operation.value})" for s in change_set.row_level_snapshots)
        raise RowLevelChangesError(
            f"{change_set.table}: snapshots {ops} changed rows in place, which an ICDC table of added "
            "files cannot express. Read the changed rows instead: in a workflow, `read: inserted` (new "
            "rows) or `read: changelog` (inserted and deleted rows); from the command line, `calve changes "
            "--changelog`; in Python, calve.compute_changelog. Or publish only the appended files "
            "(--appends-only, appends_only=True)."
        )
    identifier = identifier or default_icdc_identifier(change_set.table, consumer)
    files = list(change_set.appended_files)
    _ensure_namespace(catalog, identifier)
    old = _existing_icdc(catalog, identifier)
    location = _table_location(catalog, identifier)
    metadata = _icdc_metadata(source, change_set, files, location, consumer)
    metadata_location = f"{location}/metadata/00000-{uuid.uuid4()}.metadata.json"
    ToOutputFile.table_metadata(metadata, source.io.new_output(metadata_location))
    if old is not None:
        _drop(catalog, identifier, old)
    registered = catalog.register_table(identifier, metadata_location)
    return IcdcTable(
        identifier=identifier,
        metadata_location=metadata_location,
        source=change_set.table,
        from_snapshot_id_exclusive=change_set.from_snapshot_id_exclusive,
        to_snapshot_id_inclusive=change_set.to_snapshot_id_inclusive,
        files=len(files),
        records=sum(f.record_count for f in files),
        bytes=sum(f.file_size_in_bytes for f in files),
        complete=not row_level,
        row_level_snapshot_ids=row_level,
        table=registered,
    )


def is_icdc_table(table: Table) -> bool:
    return table.metadata.properties.get(ICDC_PROPERTY) == "true"


def drop_icdc_table(catalog: Catalog, identifier: str) -> None:
    """Drop an ICDC table and delete its own metadata files; the source's data files are never touched."""
    table = _existing_icdc(catalog, identifier)
    if table is not None:
        _drop(catalog, identifier, table)


def _drop(catalog: Catalog, identifier: str, table: Table) -> None:
    """Drop a loaded ICDC table and delete the metadata files under its own location."""
    own_prefix = table.metadata.location.rstrip("/") + "/metadata/"
    own_files = [table.metadata_location]
    for snapshot in table.metadata.snapshots:
        own_files.append(snapshot.manifest_list)
        own_files.extend(m.manifest_path for m in snapshot.manifests(table.io))
    catalog.drop_table(identifier)  # never purge_table: it would delete the source's data files
    for path in own_files:
        if path.startswith(own_prefix):
            with contextlib.suppress(FileNotFoundError, OSError):
                table.io.delete(path)


def cleanup_icdc_tables(catalog: Catalog, consumer: str, keep: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    """Drop the consumer's ICDC tables other than `keep`; returns the identifiers dropped."""
    dropped = []
    try:
        identifiers = catalog.list_tables(ICDC_NAMESPACE)
    except Exception:  # no ICDC namespace yet
        return []
    for ident in identifiers:
        name = ".".join(ident)
        if name in keep:
            continue
        try:
            table = catalog.load_table(name)
        except NoSuchTableError:
            continue
        if is_icdc_table(table) and table.metadata.properties.get(CONSUMER_PROPERTY) == consumer:
            drop_icdc_table(catalog, name)
            dropped.append(name)
    return dropped


def _existing_icdc(catalog: Catalog, identifier: str) -> Table | None:
    try:
        table = catalog.load_table(identifier)
    except NoSuchTableError:
        return None
    if not is_icdc_table(table):
        raise NotAnIcdcTableError(
            f"{identifier} exists and is not an ICDC table (no {ICDC_PROPERTY}=true property); calve "
            "will not replace or drop it. Choose another name with --name."
        )
    return table


def _ensure_namespace(catalog: Catalog, identifier: str) -> None:
    namespace = tuple(identifier.split(".")[:-1])
    if not namespace:
        raise CalveError(f"ICDC table name {identifier!r} needs a namespace: NAMESPACE.NAME")
    with contextlib.suppress(NamespaceAlreadyExistsError):
        catalog.create_namespace(namespace)


def _table_location(catalog: Catalog, identifier: str) -> str:
    *namespace, name = identifier.split(".")
    suffix = uuid.uuid4().hex[:12]  # a fresh folder per version: readers of the old one are not disturbed
    resolve = getattr(catalog, "_resolve_table_location", None)
    if resolve is not None:
        return f"{resolve(None, '.'.join(namespace), name).rstrip('/')}-{suffix}"
    warehouse = catalog.properties.get("warehouse")
    if not warehouse or "://" not in warehouse:
        raise CalveError(
            f"catalog {catalog.name!r} gives no warehouse location for ICDC tables; set its "
            "`warehouse` property to a URI (for example s3://bucket/warehouse)"
        )
    return f"{warehouse.rstrip('/')}/{'/'.join(namespace)}.db/{name}-{suffix}"


def _icdc_metadata(
    source: Table, change_set: ChangeSet, files: list[FileChange], location: str, consumer: str | None
) -> TableMetadata:
    """Clone the source metadata (field ids, specs, properties) with one snapshot of `files`."""
    src = source.metadata
    if src.format_version > 2:
        raise CalveError(
            f"{change_set.table} is an Iceberg v{src.format_version} table; ICDC tables support v1 and v2"
        )
    snapshot_id = src.new_snapshot_id()
    sequence_number = 1
    manifests = _write_manifests(source, files, location, snapshot_id)
    manifest_list = f"{location}/metadata/snap-{snapshot_id}-1-{uuid.uuid4()}.avro"
    with write_manifest_list(
        format_version=src.format_version,
        output_file=source.io.new_output(manifest_list),
        snapshot_id=snapshot_id,
        parent_snapshot_id=None,
        sequence_number=sequence_number,
        avro_compression=avro_codec(src),
    ) as writer:
        writer.add_manifests(manifests)
    collector = SnapshotSummaryCollector()
    for f in files:
        collector.add_file(f.data_file, schema=src.schema(), partition_spec=src.specs()[f.spec_id])
    summary = update_snapshot_summaries(
        Summary(Operation.APPEND, **collector.build(), **{ICDC_PROPERTY: "true"}), previous_summary=None
    )
    now_ms = int(time.time() * 1000)
    snapshot = Snapshot.model_validate(
        {
            "snapshot-id": snapshot_id,
            "sequence-number": sequence_number,
            "timestamp-ms": now_ms,
            "manifest-list": manifest_list,
            "summary": summary,
            "schema-id": src.current_schema_id,
        }
    )
    properties = {
        **src.properties,
        ICDC_PROPERTY: "true",
        "gc.enabled": "false",  # the data files belong to the source
        SOURCE_PROPERTY: change_set.table,
        SOURCE_UUID_PROPERTY: change_set.table_uuid,
        FROM_PROPERTY: str(change_set.from_snapshot_id_exclusive or ""),
        TO_PROPERTY: str(change_set.to_snapshot_id_inclusive or ""),
    }
    if consumer:
        properties[CONSUMER_PROPERTY] = consumer
    return src.model_copy(
        update={
            "location": location,
            "table_uuid": uuid.uuid4(),
            "last_updated_ms": now_ms,
            "last_sequence_number": sequence_number,
            "properties": properties,
            "snapshots": [snapshot],
            "current_snapshot_id": snapshot_id,
            "snapshot_log": [
                SnapshotLogEntry.model_validate({"snapshot-id": snapshot_id, "timestamp-ms": now_ms})
            ],
            "metadata_log": [],
            "refs": {
                MAIN_BRANCH: SnapshotRef.model_validate(
                    {"snapshot-id": snapshot_id, "type": SnapshotRefType.BRANCH}
                )
            },
            "statistics": [],
            "partition_statistics": [],
        }
    )


def avro_codec(metadata: TableMetadata) -> AvroCompressionCodec:
    codec = metadata.properties.get(
        TableProperties.WRITE_AVRO_COMPRESSION, TableProperties.WRITE_AVRO_COMPRESSION_DEFAULT
    )
    return codec  # type: ignore[return-value]


def added_entry(snapshot_id: int, data_file: DataFile) -> ManifestEntry:
    """A manifest entry for a file that `snapshot_id` adds; it inherits that snapshot's sequence number."""
    return ManifestEntry.from_args(
        status=ManifestEntryStatus.ADDED,
        snapshot_id=snapshot_id,
        sequence_number=None,
        file_sequence_number=None,
        data_file=data_file,
    )


def _write_manifests(
    source: Table, files: list[FileChange], location: str, snapshot_id: int
) -> list[ManifestFile]:
    """One manifest per partition spec: files keep the spec they were written with."""
    src = source.metadata
    by_spec: dict[int, list[FileChange]] = defaultdict(list)
    for f in files:
        by_spec[f.spec_id].append(f)
    manifests = []
    for spec_id, spec_files in sorted(by_spec.items()):
        path = f"{location}/metadata/{uuid.uuid4()}-m{spec_id}.avro"
        with write_manifest(
            format_version=src.format_version,
            spec=src.specs()[spec_id],
            schema=src.schema(),
            output_file=source.io.new_output(path),
            snapshot_id=snapshot_id,
            avro_compression=avro_codec(src),
        ) as writer:
            for f in spec_files:
                writer.add(added_entry(snapshot_id, f.data_file))
        manifests.append(writer.to_manifest_file())
    return manifests
