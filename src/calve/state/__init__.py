"""The state store: run history, run locks, trigger state and a mirror of consumer checkpoints.

`schema` holds the versioned tables and their migrations, `records` the values stored, `store` the
`StateStore` that reads and writes them.
"""

from typing import TYPE_CHECKING, Any

from calve.state.records import (
    ACTIVE,
    ERROR_CLASSES,
    FINISHED,
    RESTARTABLE,
    CheckpointRecord,
    InputRead,
    MergeMetrics,
    RunLock,
    RunMetrics,
    RunRecord,
    RunStatus,
    Skew,
    StepMetrics,
    StepRunRecord,
    StepTimings,
)

if TYPE_CHECKING:
    from calve.state.store import StateStore


def __getattr__(name: str) -> Any:
    """`StateStore` on first use: the records stay importable without sqlite3 (the CLI's --help)."""
    if name == "StateStore":
        from calve.state.store import StateStore

        return StateStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ACTIVE",
    "ERROR_CLASSES",
    "FINISHED",
    "RESTARTABLE",
    "CheckpointRecord",
    "InputRead",
    "MergeMetrics",
    "RunLock",
    "RunMetrics",
    "RunRecord",
    "RunStatus",
    "Skew",
    "StateStore",
    "StepMetrics",
    "StepRunRecord",
    "StepTimings",
]
