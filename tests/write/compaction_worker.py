"""A compaction process for the crash test: compacts db.ev (deletes folded) in CALVE_HOME's catalog.

CALVE_CRASH_AT=compaction.during_commit makes it SIGKILL itself after writing the new files and
manifests, before the catalog commit.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from calve.catalog import embedded_catalog
from calve.write.compaction import compact


def main() -> None:
    table = embedded_catalog().load_table("db.ev")
    compact(table, small_file_bytes=1 << 30, min_files=2, max_delete_files=0)


if __name__ == "__main__":
    main()
