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


def embedded_catalog(home: Path | None = None, warehouse: str | None = None) -> SqlCatalog:
    """The zero-configuration catalog: SQLite metadata and a local warehouse under `home` (or at the
    `warehouse` URI)."""
    home = (home or calve_home()).resolve()
    if warehouse is None:
        folder = home / "warehouse"
        folder.mkdir(parents=True, exist_ok=True)
        warehouse = folder.as_uri()
    home.mkdir(parents=True, exist_ok=True)
    return SqlCatalog(EMBEDDED_CATALOG_NAME, uri=f"sqlite:///{home / 'catalog.db'}", warehouse=warehouse)


def postgresql_catalog(url: str, warehouse: str) -> SqlCatalog:
    """The embedded catalog with its tables in PostgreSQL (`catalog: postgresql://...` in calve.yaml).

    pyiceberg's `SqlCatalog` keeps each table's current metadata location in a row and commits with a
    compare-and-swap on it (an UPDATE ... WHERE metadata_location = the one the commit started
    from), so several processes and machines may commit to it; the warehouse must be a location they
    all reach. It goes through SQLAlchemy with psycopg 3 (`calve[postgresql]`).
    """
    from calve.state.backends import import_psycopg, redact

    import_psycopg("a PostgreSQL catalog")
    scheme, rest = url.split("://", 1)
    try:
        return SqlCatalog(EMBEDDED_CATALOG_NAME, uri=f"postgresql+psycopg://{rest}", warehouse=warehouse)
    except Exception as exc:  # SQLAlchemy's errors name the driver's: one line, with no password
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"cannot open the catalog {redact(url)}: {message}. Check `catalog:` in calve.yaml "
            f"({scheme}://USER@HOST:PORT/DATABASE; the password from the URL or PGPASSWORD / ~/.pgpass) "
            "and that the server is up"
        ) from None


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
