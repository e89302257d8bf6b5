"""Catalog resolution: a named pyiceberg catalog, or the embedded default.

With no catalog name, calve uses the embedded default: a SQLite `SqlCatalog` and a `file://`
warehouse in `.calve/` under the current directory (or under `$CALVE_HOME`), created on first use.
A name selects a catalog from the standard pyiceberg configuration (`.pyiceberg.yaml` in the home
or current directory, or `PYICEBERG_CATALOG__<NAME>__*` environment variables).
"""

from __future__ import annotations

import os
from pathlib import Path

from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.table import Table

from calve.errors import ConfigError, TableNotFoundError

EMBEDDED_CATALOG_NAME = "calve"


def calve_home(cwd: Path | None = None) -> Path:
    """The folder that holds the embedded catalog, warehouse and state store."""
    if env := os.environ.get("CALVE_HOME"):
        return Path(env).resolve()
    return (cwd or Path.cwd()).resolve() / ".calve"


def embedded_catalog(home: Path | None = None) -> SqlCatalog:
    """The zero-configuration catalog: SQLite metadata and a local warehouse under `home`."""
    home = (home or calve_home()).resolve()
    warehouse = home / "warehouse"
    warehouse.mkdir(parents=True, exist_ok=True)
    return SqlCatalog(
        EMBEDDED_CATALOG_NAME,
        uri=f"sqlite:///{home / 'catalog.db'}",
        warehouse=warehouse.as_uri(),
    )


def open_catalog(name: str | None = None) -> Catalog:
    """The catalog called `name` in the pyiceberg configuration, or the embedded default."""
    if name is None:
        return embedded_catalog()
    try:
        return load_catalog(name)
    except (ValueError, KeyError) as exc:
        raise ConfigError(
            f"cannot load catalog {name!r}: {exc}. Configure it in .pyiceberg.yaml (home or current "
            f"directory) or with PYICEBERG_CATALOG__{name.upper()}__URI=..., or omit --catalog to use "
            "the embedded default in .calve/"
        ) from exc


def load_table(catalog: Catalog, identifier: str) -> Table:
    """Load `namespace.name`, with an error that says how to list the tables that do exist."""
    try:
        return catalog.load_table(identifier)
    except NoSuchTableError as exc:
        raise TableNotFoundError(
            f"table {identifier!r} does not exist in catalog {catalog.name!r}; "
            "names are NAMESPACE.TABLE (check the spelling, or the --catalog option)"
        ) from exc
