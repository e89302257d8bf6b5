"""The web UI (`calve ui`): read-only pages over a project's state store, workflows and catalog.

    queries.py     the state store, read with parameters only, on read-only connections
    tables.py      what the catalog says about a table: snapshots, consumers' lag
    lateness.py    how late data arrives, from commit times and manifest bounds (no data read)
    schedule.py    when each trigger is next due
    svg.py         server-rendered plots and the lineage graph, as inline SVG
    formatting.py  how templates write times, durations, numbers, sizes and error messages
    actions.py     run now and restart: who may start one (flag, origin, form token), outcomes
    app.py         the Starlette application: routes and templates

The server's libraries (starlette, jinja2, uvicorn) are an optional extra, imported only when the
UI starts: `calve --help` and every other command never load them. `require_server()` fails with
the install hint when they are missing.
"""

from __future__ import annotations

import importlib.util

from calve.errors import ConfigError

SERVER_MODULES = ("starlette", "jinja2", "uvicorn")
INSTALL_HINT = "pip install 'calve[ui]'"


def require_server() -> None:
    """Raise a ConfigError with the install hint if a library of the web server is missing."""
    missing = [name for name in SERVER_MODULES if _missing(name)]
    if missing:
        raise ConfigError(
            f"the web UI needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
            f"installed: {INSTALL_HINT}"
        )


def _missing(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):  # a module set to None in sys.modules (tests), or a broken one
        return True
