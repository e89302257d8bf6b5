"""calve: incremental processing for Apache Iceberg tables.

Change capture from snapshot metadata (change sets, change ranges, changelog rows), zero-copy ICDC
tables, consumers that commit their output together with their checkpoint (exactly once), and
workflows (projects of YAML + SQL files) with triggers, recorded runs and a scheduler.
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
from calve.project import Project, init_project, open_project
from calve.ranges import ColumnRange, change_ranges
from calve.state import RunStatus, StateStore
from calve.workflows.runner import Runner, RunResult, StepContext
from calve.workflows.spec import Workflow, WorkflowError, load_workflow

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
