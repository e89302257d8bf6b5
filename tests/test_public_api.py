"""The public API is what `calve.__all__` exports: changing it must be a deliberate act."""

import calve


def test_public_names_are_pinned() -> None:
    assert sorted(calve.__all__) == sorted(
        [
            "CalveError", "ChangeSet", "Changelog", "Checkpoint", "CheckpointConflictError", "ColumnRange",
            "CommitResult", "ConfigError", "Consumer", "FileChange", "IcdcTable", "NotAnIcdcTableError",
            "NotAncestorError", "Operation", "RowLevelChangesError", "SnapshotChange", "SnapshotError",
            "SnapshotNotFoundError", "StateStore", "TableNotFoundError", "__version__", "capture_changes",
            "change_ranges", "cleanup_icdc_tables", "compute_changelog", "create_icdc_table",
            "drop_icdc_table", "embedded_catalog", "load_table", "open_catalog",
            # workflows
            "Project", "RunResult", "RunStatus", "Runner", "StepContext", "Workflow", "WorkflowError",
            "init_project", "load_workflow", "open_project",
        ]
    )  # fmt: skip
    for name in calve.__all__:
        assert hasattr(calve, name), name
