"""Runs one workflow on the Ray engine and SIGKILLs the cluster's Daft workers while its step runs:
`python tests/ray_kill_worker.py ROOT WORKFLOW` (for tests/test_ray.py).

The workers killed are the `ray::RaySwordfishActor` processes (Daft's executors) descending from the
test cluster's process ($CALVE_TEST_RAY_CLUSTER_PID), found in /proc: never a process of another
cluster. Prints KILLED N once it killed some; the run may then fail or recover (Ray retries).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from calve.engines.daft import RayEngine
from calve.project import Project
from calve.workflows.runner import Runner


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def _descends_from(pid: int, ancestor: int) -> bool:
    try:
        while pid > 1:
            if pid == ancestor:
                return True
            pid = _parent(pid)
    except (OSError, ValueError):
        return False
    return False


def daft_workers(cluster_pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if title.startswith("ray::RaySwordfishActor") and _descends_from(int(entry.name), cluster_pid):
            found.append(int(entry.name))
    return found


def main() -> None:
    cluster_pid = int(os.environ["CALVE_TEST_RAY_CLUSTER_PID"])
    started = threading.Event()
    real_frame = RayEngine._frame  # the step's SQL, before its rows are computed and written

    def frame(self: RayEngine, sql: str, relations: dict[str, Any], params: dict[str, Any]) -> Any:
        started.set()
        time.sleep(0.3)  # let the killer find the workers while this step's tasks are scheduled
        return real_frame(self, sql, relations, params)

    def killer() -> None:
        started.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pids = daft_workers(cluster_pid)
            if pids:
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
                print("KILLED", len(pids), flush=True)
                return
            time.sleep(0.05)

    RayEngine._frame = frame  # type: ignore[method-assign]
    threading.Thread(target=killer, daemon=True).start()
    project = Project(Path(sys.argv[1]))
    result = Runner.for_project(project).run(project.workflow(sys.argv[2]))
    print("STATUS", result.status.value if result else None, flush=True)


if __name__ == "__main__":
    main()
