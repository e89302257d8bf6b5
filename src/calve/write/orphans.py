"""Orphan files: data files in a table's data folder that no snapshot of any table lists.

A run killed after its data files were written (by pyiceberg on the driver, or by the workers of the
Daft and Ray engines) and before its commit leaves such files. No reader sees them: a table's rows
are what its snapshots' manifests list. They only take space, and `remove_orphan_files` deletes
them (`calve orphans TABLE --delete`):

- Referenced means listed, as a data or delete file, by a manifest of any snapshot (every branch,
  tag and expired-but-kept one) of the table, or of another table of the catalog whose files lie in
  this table's folder: an ICDC table lists its source's data files without copying them.
- Only files older than `older_than_s` (default 3 days) are deleted: a younger one may belong to a
  commit in flight (a run's workers write its files before the driver commits them). Keep the
  threshold longer than your longest run.
- Local file systems only (the embedded warehouse, or any path pyiceberg reads as a local file).

    found = find_orphan_files(catalog, "db.events", older_than_s=3 * 86400)
    found.files      # the paths that would be deleted
    remove_orphan_files(catalog, "db.events")   # deletes them; returns the same report
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.table import Table

from calve.catalog import load_table
from calve.errors import CalveError

DEFAULT_OLDER_THAN_S = 3 * 86400


@dataclass(frozen=True)
class OrphanFiles:
    """What `find_orphan_files` found (and `remove_orphan_files` deleted)."""

    table: str
    folder: str
    files: tuple[str, ...]  # unreferenced and older than the threshold: deleted by `remove`
    bytes: int
    young: int  # unreferenced but younger than the threshold: kept (a commit may be in flight)
    referenced: int  # files of the folder that a snapshot lists
    deleted: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["files"] = list(self.files)
        return data


def data_folder(table: Table) -> Path:
    """The table's data folder on the local file system, or a `CalveError` saying why not."""
    location = table.metadata.properties.get("write.data.path", f"{table.location().rstrip('/')}/data")
    if "://" in location and not location.startswith("file://"):
        raise CalveError(
            f"{'.'.join(table.name())} keeps its data at {location}: calve finds orphan files on local "
            "file systems only; on object stores use the store's listing with Iceberg's "
            "remove_orphan_files procedure (docs/engines.md)"
        )
    return Path(location.removeprefix("file://"))


def find_orphan_files(
    catalog: Catalog, identifier: str, older_than_s: float = DEFAULT_OLDER_THAN_S, now: float | None = None
) -> OrphanFiles:
    """The files in `identifier`'s data folder that no snapshot lists (see the module's rules)."""
    if older_than_s < 0:
        raise CalveError(f"the age threshold must not be negative, not {older_than_s}")
    table = load_table(catalog, identifier)
    folder = data_folder(table)
    present = {str(path) for path in folder.rglob("*") if path.is_file()} if folder.exists() else set()
    prefix = f"{folder}{os.sep}"
    referenced = _listed(table, prefix)
    for other in _other_tables(catalog, table):
        referenced |= _listed(other, prefix)
    moment = time.time() if now is None else now
    orphans, young, size = [], 0, 0
    for path in sorted(present - referenced):
        stat = os.stat(path)
        if moment - stat.st_mtime < older_than_s:
            young += 1
            continue
        orphans.append(path)
        size += stat.st_size
    return OrphanFiles(
        identifier, str(folder), tuple(orphans), size, young, referenced=len(present & referenced)
    )


def remove_orphan_files(
    catalog: Catalog,
    identifier: str,
    older_than_s: float = DEFAULT_OLDER_THAN_S,
    dry_run: bool = False,
    now: float | None = None,
) -> OrphanFiles:
    """Delete the orphan files `find_orphan_files` finds (with `dry_run`, only report them)."""
    found = find_orphan_files(catalog, identifier, older_than_s, now)
    if dry_run:
        return found
    for path in found.files:
        Path(path).unlink(missing_ok=True)
    return OrphanFiles(**{**asdict(found), "deleted": True})


def _listed(table: Table, prefix: str) -> set[str]:
    """The local paths under `prefix` that a manifest of any of `table`'s snapshots lists."""
    paths: set[str] = set()
    seen: set[str] = set()
    for snapshot in table.snapshots():
        for manifest in snapshot.manifests(table.io):
            if manifest.manifest_path in seen:
                continue
            seen.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False):
                path = entry.data_file.file_path.removeprefix("file://")
                if path.startswith(prefix):
                    paths.add(path)
    return paths


def _other_tables(catalog: Catalog, table: Table) -> Iterable[Table]:
    """Every other table of the catalog (an ICDC table, or any other, may list this table's files)."""
    from calve.write.maintenance import catalog_tables

    own = tuple(table.name())
    for identifier in catalog_tables(catalog, None):
        if tuple(identifier) == own:
            continue
        try:
            yield catalog.load_table(identifier)
        except NoSuchTableError:  # dropped while listing
            continue
