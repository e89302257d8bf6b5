"""The exceptions calve raises, in one hierarchy.

    CalveError                      every error calve raises on purpose; its message names the fix
    ├── ConfigError                 a catalog, project or workflow setting is missing or wrong
    │   ├── ProjectError                calve.yaml is invalid (each problem with file:line)
    │   └── WorkflowError               a workflow file is invalid (every problem with file:line)
    ├── TableNotFoundError          a table named on the command line or in code does not exist
    ├── SnapshotError               a snapshot id does not fit the table's history
    │   ├── SnapshotNotFoundError       the id is not (or no longer) in the table's metadata
    │   └── NotAncestorError            --since is not an ancestor of --until (rollback, branch)
    ├── RowLevelChangesError        an ICDC table was asked for a range with overwrite/delete snapshots
    ├── NotAnIcdcTableError         calve refused to replace or drop a table it did not create
    ├── CheckpointConflictError     another writer advanced the consumer's checkpoint first   [transient]
    ├── SqlError                    the engine rejected a step's SQL (with the line, when known)
    ├── DataError                   a step's rows do not fit its output (types, duplicate or null keys)
    ├── RunLockedError              another run of the workflow holds its lock                 [transient]
    ├── StepFailedError             a step failed; its run recorded the failure, nothing committed
    └── StateStoreError             the state store cannot be opened or migrated

`transient` says whether retrying the same call may succeed (a concurrent writer, a busy lock, an I/O
hiccup), so that retry policy follows the type of the error, never its message text. The scheduler
retries a run whose failure was transient, with backoff; a terminal error (SQL, validation, data)
waits for a fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CalveError(Exception):
    """Base class of every error calve raises on purpose."""

    transient: bool = False


class ConfigError(CalveError):
    """A catalog, project or workflow setting is missing or wrong."""


class ProblemsError(ConfigError):
    """A file failed validation; `problems` lists each as `file:line: key.path: what; fix`."""

    what = "file"

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        count = f"{len(problems)} problem(s)" if len(problems) > 1 else "1 problem"
        super().__init__(f"invalid {self.what} ({count}):\n  " + "\n  ".join(problems))


class ProjectError(ProblemsError):
    """calve.yaml is invalid; the message lists every problem with file:line."""

    what = "project file"


class WorkflowError(ProblemsError):
    """One or more workflow files are invalid; the message lists every problem with file:line."""

    what = "workflow"


class TableNotFoundError(CalveError):
    """A table that was named does not exist in the catalog."""


class SnapshotError(CalveError):
    """A snapshot id does not fit the table's history."""


class SnapshotNotFoundError(SnapshotError):
    """The snapshot id is not (or no longer) in the table's metadata."""


class NotAncestorError(SnapshotError):
    """The from-snapshot is not an ancestor of the to-snapshot, so no linear change set exists."""


class RowLevelChangesError(CalveError):
    """The range holds overwrite/delete snapshots, which an ICDC table of added files cannot express."""


class NotAnIcdcTableError(CalveError):
    """calve refuses to replace or drop a table that it did not create as an ICDC table."""


class CheckpointConflictError(CalveError):
    """Another writer advanced the consumer's checkpoint between read and commit."""

    transient = True


class SqlError(CalveError):
    """The engine rejected a step's SQL; `line` is 1-based within the SQL text, when the engine says."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.engine_message = message
        self.line = line


class DataError(CalveError):
    """A step's rows do not fit its output: a type that does not convert, a duplicate or null key."""


class RunLockedError(CalveError):
    """Another run of the workflow holds its lock."""

    transient = True


class StepFailedError(CalveError):
    """A step failed; the run recorded the failure and committed nothing for this step."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class StateStoreError(CalveError):
    """The state store cannot be opened or migrated; the message says what to do."""


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest of `choices`, or '' when none is close."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
