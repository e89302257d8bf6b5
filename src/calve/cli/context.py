"""What every command shares: the Context (project, catalog, state store, loaded on first use), the
--json option and the error handler.

Command modules import this module, never `calve.cli.app`, which imports them: the arrows point one
way (app -> command modules -> context, output). Nothing here imports pyiceberg, pyarrow or duckdb:
`calve --help` and `calve --version` stay fast, and each command pays only for what it uses.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from calve.cli.output import Output
from calve.errors import CalveError

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

    from calve.project import Project
    from calve.state import StateStore

F = TypeVar("F", bound=Callable[..., Any])


class Context:
    """What every command may need, loaded on first use: the project, its catalog and state store.

    Inside a project (a calve.yaml here or above, or --project), the catalog and state store are the
    project's; elsewhere, the embedded default in ./.calve (or $CALVE_HOME), or --catalog.
    """

    def __init__(self, catalog_name: str | None, project_dir: Path | None) -> None:
        self.catalog_name = catalog_name
        self.project_dir = project_dir
        self._catalog: Catalog | None = None

    @functools.cached_property
    def project_root(self) -> Path | None:
        from calve.project import find_project

        return self.project_dir.resolve() if self.project_dir is not None else find_project()

    @functools.cached_property
    def project(self) -> Project:
        from calve.project import open_project

        return open_project(self.project_root, self.catalog_name)

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            if self.project_root is not None:
                self._catalog = self.project.catalog
            else:
                from calve.catalog import open_catalog

                self._catalog = open_catalog(self.catalog_name)
        return self._catalog

    @property
    def state(self) -> StateStore:
        from calve.state import StateStore

        return self.project.state if self.project_root is not None else StateStore()


def json_option(func: F) -> F:
    return click.option("--json", "json_mode", is_flag=True, help="Print one JSON object (for scripts).")(
        func
    )


def handle_errors(func: F) -> F:
    """Turn calve's errors into one clear line and exit code 1; no traceback for expected errors."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        out = Output(kwargs.get("json_mode", False))
        try:
            return func(*args, out=out, **kwargs)
        except CalveError as exc:
            out.error(str(exc))
            sys.exit(1)

    return wrapper  # type: ignore[return-value]
