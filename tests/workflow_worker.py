"""Runs one workflow of a project, for the kill tests: `python tests/workflow_worker.py ROOT WORKFLOW`.

CALVE_CRASH_AT makes it SIGKILL itself at a named point (see calve._faults). Exit code 0 on a
succeeded or skipped run, 1 on a failed one.
"""

from __future__ import annotations

import sys
from pathlib import Path

from calve.project import Project
from calve.state import RunStatus
from calve.workflows.runner import Runner


def main() -> None:
    project = Project(Path(sys.argv[1]))
    runner = Runner.for_project(project)
    result = runner.run(project.workflow(sys.argv[2]))
    if result is None or result.status is RunStatus.FAILED:
        print(result.run.error if result else "no run", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
