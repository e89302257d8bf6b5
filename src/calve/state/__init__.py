"""The state store: run history, run locks, trigger state and a mirror of consumer checkpoints.

`schema` holds the versioned tables and their migrations, `records` the values stored, `store` the
`StateStore` that reads and writes them.
"""

from calve.state.records import (
    ACTIVE,
    FINISHED,
    RESTARTABLE,
    CheckpointRecord,
    InputRead,
    MergeMetrics,
    RunLock,
    RunRecord,
    RunStatus,
    StepMetrics,
    StepRunRecord,
)
from calve.state.store import StateStore

__all__ = [
    "ACTIVE",
    "FINISHED",
    "RESTARTABLE",
    "CheckpointRecord",
    "InputRead",
    "MergeMetrics",
    "RunLock",
    "RunRecord",
    "RunStatus",
    "StateStore",
    "StepMetrics",
    "StepRunRecord",
]
