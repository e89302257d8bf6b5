"""Orphan files: data files in a table's data folder that no snapshot of any table lists.

A run killed after its data files were written (by pyiceberg on the driver, or by the workers of the
Daft and Ray engines) and before its commit leaves such files. No reader sees them: a table's rows
are what its snapshots' manifests list. They only take space, and `remove_orphan_files` deletes
them (`calve orphans TABLE --delete`):

- Referenced means listed, as a data or delete file, by a manifest of any snapshot (every branch,
  tag and expired-but-kept one) of the table, or of another table of the catalog whose files lie in
  this table's folder: an ICDC table lists its source's data files without copying them.
- Only Parquet files are candidates (calve, pyiceberg and Daft write data and delete files as
  Parquet): metadata, manifests and statistics are never touched, even in a data folder that holds
  them (a `write.data.path` equal to the table's location).
- Only files older than `older_than_s` (default 3 days) are deleted: a younger one may belong to a
  commit in flight (a run's workers write its files before the driver commits them). Keep the
  threshold longer than your longest run.
- Paths are compared resolved (scheme, percent-encoding, `..`, symlinks). As a fail-safe, if a file
  the table's current snapshot lists in the folder is not found by the listing, nothing is deleted:
  the two spell paths differently, and every live file could look like an orphan.
- The folder is listed before the snapshots are read, so a file committed meanwhile is seen as
  referenced; and the table is read again just before deleting.
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
from urllib.parse import unquote, urlparse

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

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
    path = resolved(location)
    if path is None:
        raise CalveError(
            f"{'.'.join(table.name())} keeps its data at {location}: calve finds orphan files on local "
            "file systems only; on object stores use the store's listing with Iceberg's "
            "remove_orphan_files procedure (docs/engines.md)"
        )
    return Path(path)


def resolved(location: str) -> str | None:
    """A local file's location as one canonical absolute path (file://, file:, percent-encoding,
    `..` and symlinks resolved); None for another scheme or a relative path."""
    parsed = urlparse(location)
    if parsed.scheme not in ("", "file"):
        return None
    path = unquote(parsed.path) if parsed.scheme else location
    if parsed.scheme and parsed.netloc not in ("", "localhost"):
        return None
    if not os.path.isabs(path):
        return None
    return os.path.realpath(path)


def find_orphan_files(
    catalog: Catalog, identifier: str, older_than_s: float = DEFAULT_OLDER_THAN_S, now: float | None = None
) -> OrphanFiles:
    """The files in `identifier`'s data folder that no snapshot lists (see the module's rules)."""
    if older_than_s < 0:
        raise CalveError(f"the age threshold must not be negative, not {older_than_s}")
    table = load_table(catalog, identifier)
    folder = data_folder(table)
    # listed first: a file a commit adds from now on is in the metadata read below
    present = (
        {os.path.realpath(p) for p in folder.rglob("*.parquet") if p.is_file()} if folder.exists() else set()
    )
    prefix = f"{folder}{os.sep}"
    table = load_table(catalog, identifier)
    referenced = _listed(table, prefix)
    _check_listing(table, prefix, present)
    for other in _other_tables(catalog, table):
        referenced |= _listed(other, prefix)
    moment = time.time() if now is None else now
    orphans, young, size = [], 0, 0
    for path in sorted(present - referenced):
        try:
            stat = os.stat(path)
        except FileNotFoundError:  # gone since the listing
            continue
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
    if dry_run or not found.files:
        return found
    # read again just before deleting: a commit since the search may list one of the files now
    table = load_table(catalog, identifier)
    still = set(found.files) - _listed(table, f"{found.folder}{os.sep}")
    for path in found.files:
        if path in still:
            Path(path).unlink(missing_ok=True)
    files = tuple(p for p in found.files if p in still)
    return OrphanFiles(**{**asdict(found), "files": files, "deleted": True})


def _listed(
    table: Table, prefix: str, snapshots: Iterable[Snapshot] | None = None, live: bool = False
) -> set[str]:
    """The local paths under `prefix` that a manifest of `snapshots` (default: every snapshot of
    `table`) lists; with `live`, only the files those snapshots hold (not the ones they removed)."""
    paths: set[str] = set()
    seen: set[str] = set()
    for snapshot in table.snapshots() if snapshots is None else snapshots:
        for manifest in snapshot.manifests(table.io):
            if manifest.manifest_path in seen:
                continue
            seen.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=live):
                path = resolved(entry.data_file.file_path)
                if path is not None and path.startswith(prefix):
                    paths.add(path)
    return paths


def _check_listing(table: Table, prefix: str, present: set[str]) -> None:
    """The fail-safe: every file the current snapshot lists in the folder must be in the listing."""
    snapshot = table.current_snapshot()
    missing = _listed(table, prefix, [snapshot], live=True) - present if snapshot is not None else set()
    if missing:
        raise CalveError(
            f"{'.'.join(table.name())}'s current snapshot lists {min(missing)}, which the listing of "
            f"{prefix} did not find: the paths are spelled differently or the file is missing, so nothing "
            "is deleted (every live file could look like an orphan)"
        )


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
