"""calve: incremental processing for Apache Iceberg tables.

Change capture from snapshot metadata (change sets, change ranges, changelog rows), zero-copy ICDC
tables, and consumers that commit their output together with their checkpoint (exactly once).
"""

from calve.catalog import embedded_catalog, load_table, open_catalog
from calve.changelog import Changelog, compute_changelog
from calve.changes import ChangeSet, FileChange, Operation, SnapshotChange, capture_changes
from calve.consumer import Checkpoint, CommitResult, Consumer
from calve.errors import (
    CalveError,
    CheckpointConflictError,
    ConfigError,
    NotAncestorError,
    NotAnIcdcTableError,
    RowLevelChangesError,
    SnapshotError,
    SnapshotNotFoundError,
    TableNotFoundError,
)
from calve.icdc import IcdcTable, cleanup_icdc_tables, create_icdc_table, drop_icdc_table
from calve.ranges import ColumnRange, change_ranges
from calve.state import StateStore

__version__ = "0.1.0"

__all__ = [
    "CalveError",
    "ChangeSet",
    "Changelog",
    "Checkpoint",
    "CheckpointConflictError",
    "ColumnRange",
    "CommitResult",
    "ConfigError",
    "Consumer",
    "FileChange",
    "IcdcTable",
    "NotAnIcdcTableError",
    "NotAncestorError",
    "Operation",
    "RowLevelChangesError",
    "SnapshotChange",
    "SnapshotError",
    "SnapshotNotFoundError",
    "StateStore",
    "TableNotFoundError",
    "__version__",
    "capture_changes",
    "change_ranges",
    "cleanup_icdc_tables",
    "compute_changelog",
    "create_icdc_table",
    "drop_icdc_table",
    "embedded_catalog",
    "load_table",
    "open_catalog",
]
