"""A pyiceberg Transaction that computes its staged metadata once per change, not once per read.

pyiceberg's `Transaction.table_metadata` applies every staged update to the base metadata and
deep-copies the result on *every* access; an append reads it about twenty times, so a commit's CPU
grows with the table's history (the metadata lists every snapshot). The metadata models are frozen,
so the value computed for one (base metadata, staged updates) pair can be reused until either
changes, and with nothing staged it is the table's metadata itself: that is all this subclass does.
Stage a snapshot before other updates (as `Consumer.commit` stages the checkpoint property last) and
its producer reads the metadata without a copy. Measured in benchmarks/run_path.py.
"""

from __future__ import annotations

from pyiceberg.table import Table, Transaction
from pyiceberg.table.metadata import TableMetadata

from calve.observe.clock import phase


class CachedTransaction(Transaction):
    """`Transaction` whose `table_metadata` is recomputed only when the base or the updates change."""

    def __init__(self, table: Table, autocommit: bool = False) -> None:
        super().__init__(table, autocommit)
        self._cached: tuple[TableMetadata, tuple[object, ...], TableMetadata] | None = None

    @property
    def table_metadata(self) -> TableMetadata:
        base, updates = self._table.metadata, self._updates
        if not updates:  # nothing staged yet: the table's own (frozen) metadata, no copy
            return base
        cached = self._cached
        if cached is not None and cached[0] is base and cached[1] is updates:  # held: ids are not reused
            return cached[2]
        metadata = super().table_metadata
        self._cached = (base, updates, metadata)
        return metadata

    def commit_transaction(self) -> Table:
        with phase("commit"):  # the catalog commit, timed apart from writing the files (calve.observe)
            return super().commit_transaction()


def transaction(table: Table) -> Transaction:
    """A transaction on `table` (use as `with transaction(table) as tx:`), committed on exit."""
    return CachedTransaction(table)
