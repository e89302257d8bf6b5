"""A failed step in words (with the SQL's file and line), and whether retrying it may succeed."""

from __future__ import annotations

import traceback

from pyiceberg.exceptions import CommitFailedException

from calve.errors import CalveError, SqlError
from calve.workflows.model import StepSpec, Workflow


def is_transient(exc: BaseException) -> bool:
    """Whether retrying may succeed: a concurrent commit, an I/O error; not SQL, validation or data."""
    if isinstance(exc, CalveError):
        return exc.transient
    return isinstance(exc, CommitFailedException | OSError)


def describe_failure(workflow: Workflow, step: StepSpec, exc: BaseException) -> str:
    """The run record's error: the step, the SQL's file:line for an SQL error, the message."""
    if isinstance(exc, SqlError):
        where = ""
        if step.sql_origin is not None:
            path, first = step.sql_origin
            try:
                shown = path.relative_to(workflow.path.parent.parent)
            except ValueError:
                shown = path
            where = f"{shown}:{first + (exc.line or 1) - 1}: " if exc.line else f"{shown}: "
        return f"step {step.id!r}: {where}SQL failed: {exc.engine_message}"
    if isinstance(exc, CalveError):
        return f"step {step.id!r}: {exc}"
    frames = traceback.extract_tb(exc.__traceback__)
    last = frames[-1] if frames else None
    at = f" (at {last.filename}:{last.lineno})" if last else ""
    return f"step {step.id!r}: {type(exc).__name__}: {exc}{at}"
