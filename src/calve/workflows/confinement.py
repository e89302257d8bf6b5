"""Keeping what a workflow names to its project folder: `sql_file:` paths and `python:` modules.

A workflow file may name a SQL file (relative to itself) and a Python module (importable from the
project folder). Both must resolve, symbolic links followed, to a file inside the project folder:
`sql_file: ../../../../etc/passwd` and a link that points out of the project are refused before the
file is read (so nothing of it shows in an error), and a `python:` module must be a file of the
project, not one found elsewhere on `sys.path`. The loader checks this at `calve validate`; the
runner checks the module again before importing it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def inside(path: Path, root: Path) -> bool:
    """Whether `path`, symbolic links followed, is `root` or under it."""
    return path.resolve().is_relative_to(root.resolve())


def module_candidates(module: str, root: Path) -> list[Path]:
    """The files that `import module` would load from `root`: a/b.py or a/b/__init__.py."""
    base = root.joinpath(*module.split("."))
    return [base.with_name(base.name + ".py"), base / "__init__.py"]


def module_file(module: str, roots: Sequence[Path]) -> Path | None:
    """The file of `module` in the first of `roots` that has it, resolved; None if none has it
    inside that root (a file that is a link out of the project does not count)."""
    for root in roots:
        for candidate in module_candidates(module, root):
            if candidate.is_file() and inside(candidate, root):
                return candidate.resolve()
    return None


def module_outside(module: str, root: Path) -> str | None:
    """Why `module` may not be a `python:` step's module of the project at `root`, or None."""
    if module_file(module, [root]) is not None:
        return None
    tried = ", ".join(str(c.relative_to(root)) for c in module_candidates(module, root))
    linked = [c for c in module_candidates(module, root) if c.is_file()]
    why = "links outside the project folder" if linked else f"is not a file of the project (tried {tried})"
    return (
        f"python module {module!r} {why}; a Python step runs a module of the project: put "
        f"{module.replace('.', '/')}.py in the project folder"
    )
