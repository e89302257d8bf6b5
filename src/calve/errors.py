"""The exceptions calve raises, in one hierarchy.

    CalveError                      every error calve raises on purpose; its message names the fix
    ├── ConfigError                 a catalog or project setting is missing or wrong
    ├── TableNotFoundError          a table named on the command line or in code does not exist
    ├── SnapshotError               a snapshot id does not fit the table's history
    │   ├── SnapshotNotFoundError       the id is not (or no longer) in the table's metadata
    │   └── NotAncestorError            --since is not an ancestor of --until (rollback, branch)
    ├── RowLevelChangesError        an ICDC table was asked for a range with overwrite/delete snapshots
    ├── NotAnIcdcTableError         calve refused to replace or drop a table it did not create
    └── CheckpointConflictError     another writer advanced the consumer's checkpoint first

`transient` says whether retrying the same call may succeed (a concurrent writer), so that retry
policy follows the type of the error, never its message text.
"""

from __future__ import annotations


class CalveError(Exception):
    """Base class of every error calve raises on purpose."""

    transient: bool = False


class ConfigError(CalveError):
    """A catalog or project setting is missing or wrong."""


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
