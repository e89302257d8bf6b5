"""calve: incremental processing for Apache Iceberg tables.

Change capture from snapshot metadata (change sets, change ranges, changelog rows), zero-copy ICDC
tables, consumers that commit their output together with their checkpoint (exactly once), and
workflows (projects of YAML + SQL files) with triggers, recorded runs and a scheduler.
"""

from calve.capture.changelog import Changelog, compute_changelog
from calve.capture.changes import ChangeSet, FileChange, Operation, SnapshotChange, capture_changes
from calve.capture.icdc import IcdcTable, cleanup_icdc_tables, create_icdc_table, drop_icdc_table
from calve.capture.ranges import ColumnRange, change_ranges
from calve.catalog import embedded_catalog, load_table, open_catalog
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
    WorkflowError,
)
from calve.project import Project, init_project, open_project
from calve.state import RunStatus, StateStore
from calve.workflows.loader import load_workflow
from calve.workflows.model import Workflow
from calve.workflows.runner import Runner, RunResult, StepContext
from calve.write.consumer import Checkpoint, CommitResult, Consumer

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
    "Project",
    "RowLevelChangesError",
    "RunResult",
    "RunStatus",
    "Runner",
    "SnapshotChange",
    "SnapshotError",
    "SnapshotNotFoundError",
    "StateStore",
    "StepContext",
    "TableNotFoundError",
    "Workflow",
    "WorkflowError",
    "__version__",
    "capture_changes",
    "change_ranges",
    "cleanup_icdc_tables",
    "compute_changelog",
    "create_icdc_table",
    "drop_icdc_table",
    "embedded_catalog",
    "init_project",
    "load_table",
    "load_workflow",
    "open_catalog",
    "open_project",
]
