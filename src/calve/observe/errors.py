"""A failure classed for metrics: a user error (validation, SQL, data) waits for a fix; a system error
(a commit conflict, I/O, resources) may pass. The classes are `calve.state.ERROR_CLASSES`.

The class follows the exception's type, never its message text, like the transient marker
(`calve.workflows.failures.is_transient`) that the scheduler's retries follow.
"""

from __future__ import annotations

import errno

from calve.errors import (
    CalveError,
    CheckpointConflictError,
    ConfigError,
    DataError,
    SqlError,
    StateStoreError,
)

_RESOURCE_ERRNOS = frozenset({errno.ENOMEM, errno.ENFILE, errno.EMFILE, errno.ENOSPC, errno.EDQUOT})


def classify(exc: BaseException) -> str:
    """The error class of `exc`: one of `calve.state.ERROR_CLASSES`."""
    for cause in _chain(exc):
        found = _class_of(cause)
        if found is not None:
            return found
    return "system.other"


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and what caused it, outermost first (a wrapped OSError is still I/O)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _class_of(exc: BaseException) -> str | None:
    from pyiceberg.exceptions import CommitFailedException

    if isinstance(exc, SqlError):
        return "user.sql"
    if isinstance(exc, DataError):
        return "user.data"
    if isinstance(exc, CheckpointConflictError | CommitFailedException):
        return "system.commit_conflict"
    if isinstance(exc, StateStoreError):
        return "system.io"
    if isinstance(exc, ConfigError):
        return "user.validation"
    if isinstance(exc, MemoryError):
        return "system.resources"
    if isinstance(exc, OSError):
        # a resource ran out (memory, file handles, disk, quota), not a broken file or connection
        return "system.resources" if exc.errno in _RESOURCE_ERRNOS else "system.io"
    if _is_arrow_data_error(exc):
        return "user.data"
    if isinstance(exc, CalveError):  # a step's setting that does not hold for its tables
        return "user.validation"
    return None


def _is_arrow_data_error(exc: BaseException) -> bool:
    """A value that does not convert (pyarrow's ArrowInvalid, ArrowTypeError) is the data's fault."""
    module = type(exc).__module__ or ""
    return module.startswith("pyarrow") and type(exc).__name__ in ("ArrowInvalid", "ArrowTypeError")
