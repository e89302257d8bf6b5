"""calve: incremental processing for Apache Iceberg tables.

Change capture from snapshot metadata (change sets, change ranges, changelog rows), zero-copy ICDC
tables, consumers that commit their output together with their checkpoint (exactly once), and
workflows (projects of YAML + SQL files) with triggers, recorded runs and a scheduler.

The public names are imported on first use (PEP 562), so that `import calve` — and with it every
`calve` command, even `calve --version` — does not pay for pyiceberg, pyarrow and duckdb up front.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same names, for type checkers and IDEs
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

# public name -> the module that defines it (kept in step with the TYPE_CHECKING imports above)
_EXPORTS: dict[str, str] = {
    "Changelog": "calve.capture.changelog",
    "compute_changelog": "calve.capture.changelog",
    "ChangeSet": "calve.capture.changes",
    "FileChange": "calve.capture.changes",
    "Operation": "calve.capture.changes",
    "SnapshotChange": "calve.capture.changes",
    "capture_changes": "calve.capture.changes",
    "IcdcTable": "calve.capture.icdc",
    "cleanup_icdc_tables": "calve.capture.icdc",
    "create_icdc_table": "calve.capture.icdc",
    "drop_icdc_table": "calve.capture.icdc",
    "ColumnRange": "calve.capture.ranges",
    "change_ranges": "calve.capture.ranges",
    "embedded_catalog": "calve.catalog",
    "load_table": "calve.catalog",
    "open_catalog": "calve.catalog",
    "CalveError": "calve.errors",
    "CheckpointConflictError": "calve.errors",
    "ConfigError": "calve.errors",
    "NotAncestorError": "calve.errors",
    "NotAnIcdcTableError": "calve.errors",
    "RowLevelChangesError": "calve.errors",
    "SnapshotError": "calve.errors",
    "SnapshotNotFoundError": "calve.errors",
    "TableNotFoundError": "calve.errors",
    "WorkflowError": "calve.errors",
    "Project": "calve.project",
    "init_project": "calve.project",
    "open_project": "calve.project",
    "RunStatus": "calve.state",
    "StateStore": "calve.state",
    "load_workflow": "calve.workflows.loader",
    "Workflow": "calve.workflows.model",
    "Runner": "calve.workflows.runner",
    "RunResult": "calve.workflows.runner",
    "StepContext": "calve.workflows.runner",
    "Checkpoint": "calve.write.consumer",
    "CommitResult": "calve.write.consumer",
    "Consumer": "calve.write.consumer",
}

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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'calve' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once imported, a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
