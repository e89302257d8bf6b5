"""A step's output that stays where the engine computed it, and is written there.

The embedded engine hands the driver its rows as Arrow, and pyiceberg writes them. An engine with
workers (Daft on Ray) keeps them on the workers instead: a `StagedOutput` writes them as the
target's data files there and returns the files' metadata, which the driver commits with the
step's checkpoints in one Iceberg commit (`calve.write.consumer`). Only small things come back to
the driver: the row count, key columns for a merge, and the files.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
from pyiceberg.manifest import DataFile
from pyiceberg.table import FileScanTask, Table


class StagedOutput(ABC):
    """Rows not on the driver (see `calve.engines.daft_io.DaftOutput`). A base class, not a
    protocol: `isinstance` must not evaluate `num_rows` (which may run the engine) to decide."""

    @property
    @abstractmethod
    def schema(self) -> pa.Schema: ...

    @property
    @abstractmethod
    def column_names(self) -> list[str]: ...

    @property
    @abstractmethod
    def num_rows(self) -> int: ...

    @abstractmethod
    def to_arrow(self) -> pa.Table:
        """All the rows, on the driver (the fallback for writes the workers do not do)."""

    @abstractmethod
    def select_arrow(self, columns: Sequence[str]) -> pa.Table:
        """A few columns of every row, on the driver."""

    @abstractmethod
    def where_flag(self, flag: str, keep: bool) -> StagedOutput:
        """The rows whose `flag` is true (`keep`) or not, without the flag column."""

    @abstractmethod
    def sorted(self, columns: Sequence[str]) -> StagedOutput:
        """The rows to be written sorted by `columns` within each file."""

    @abstractmethod
    def column_range(self, column: str) -> tuple[Any, Any] | None:
        """The smallest and largest value of `column` (None when it has none)."""

    @abstractmethod
    def conformed(self, target: Table, step: str) -> StagedOutput:
        """The target's columns, order and types (or `CalveError` / `DataError` saying what differs)."""

    @abstractmethod
    def write_files(self, target: Table) -> list[DataFile]:
        """The rows written as data files of `target` (its partition spec), not committed."""

    @abstractmethod
    def merge_files(
        self, target: Table, tasks: Sequence[FileScanTask], keys: pa.Table
    ) -> tuple[list[DataFile], list[DataFile], int]:
        """Upsert on `keys` into the planned files: (files removed, files written, rows matched)."""
