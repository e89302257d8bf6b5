"""A consumer process for the crash tests: copies db.src into db.dst one snapshot at a time.

Run as `python tests/consumer_worker.py` with CALVE_HOME set; CALVE_CRASH_AT makes it SIGKILL
itself at a named point of the commit. Exits 0 when nothing is pending.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from calve import Consumer, compute_changelog
from calve.catalog import embedded_catalog
from calve.state import StateStore


def main() -> None:
    catalog = embedded_catalog()
    source, target = catalog.load_table("db.src"), catalog.load_table("db.dst")
    consumer = Consumer(catalog, "copier", StateStore())
    while True:
        target.refresh()
        pending = consumer.pending(source, target)
        if not pending.snapshots:
            return
        one = consumer.pending(source, target, until=pending.snapshots[0].snapshot_id)
        rows = compute_changelog(source, one).inserted
        consumer.commit(target, [one], rows)


if __name__ == "__main__":
    main()
