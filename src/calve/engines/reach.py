"""What a step's SQL may reach, checked on its text: the early, friendly half of the rule.

A step's SQL reads the tables declared as its inputs and nothing else. The guarantee is the engine's
(the DuckDB engine runs with external access off and its configuration locked: see
`calve.engines.duckdb`); this module finds, before anything runs, the constructs that the engine
would refuse, so that `calve validate` names each one with its line and the fix:

- statements other than queries and the objects a step makes of its own inputs (SELECT / WITH /
  VALUES, CREATE [TEMP] TABLE / VIEW / MACRO, INSERT, UPDATE, DELETE, DROP, ALTER, PIVOT, EXPLAIN):
  COPY, ATTACH, DETACH, USE, INSTALL, LOAD, SET, RESET, PRAGMA, CALL, EXPORT / IMPORT DATABASE,
  CREATE SECRET, transactions, CHECKPOINT, VACUUM are refused;
- table functions that read files, URLs or other databases (`read_csv`, `read_parquet`, `glob`,
  `parquet_scan`, `iceberg_scan`, `sqlite_scan`, ...: `read_*`, `*_scan` and the families below);
- a file path used as a table (`FROM 'data.csv'`, `FROM "dir/file.parquet"`).

It is a check of the text, not a sandbox: SQL that builds its text at run time (`query(...)`) or a
function name not listed here passes it, and the engine refuses it when it runs.

    for reach in reaches(sql):
        print(reach.line, reach.construct, reach.message)
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

# DuckDB statement types a step may run (the engine needs nothing else from the SQL)
ALLOWED_KINDS = frozenset(
    {"SELECT", "CREATE", "INSERT", "UPDATE", "DELETE", "DROP", "ALTER", "MULTI", "EXPLAIN"}
)
# table functions that read files, URLs or other databases, beside every read_* and *_scan
FILE_FUNCTIONS = frozenset({"glob", "sniff_csv", "parquet_scan", "query_table"})
FILE_FAMILIES = ("read_", "parquet_", "iceberg_", "delta_", "sqlite_", "postgres_", "mysql_", "ducklake_")
_FILE_LIKE = re.compile(r"[/\\]|://|\.[A-Za-z0-9]{1,8}$")
_LEADING_COMMENTS = re.compile(r"^(\s+|--[^\n]*\n?|/\*.*?\*/)*", re.S)
_SECRET = re.compile(r"^CREATE\s+(OR\s+REPLACE\s+)?((PERSISTENT|TEMP|TEMPORARY)\s+)?SECRET\b", re.I)
_TWO_WORDS = {
    "EXPORT": "EXPORT DATABASE",
    "IMPORT": "IMPORT DATABASE",
    "FORCE": "FORCE INSTALL",
    "UPDATE": "UPDATE EXTENSIONS",  # an UPDATE of a table is an allowed kind: never reaches here
}


@dataclass(frozen=True)
class Reach:
    """One construct of a step's SQL that reaches past its inputs."""

    construct: str  # as the user wrote it, upper-cased: COPY, read_csv(...), a file path
    line: int  # 1-based, within the whole SQL text
    message: str  # what it is and the fix


@functools.lru_cache(maxsize=1024)  # the scheduler reloads every workflow file on each tick
def reaches(sql: str) -> tuple[Reach, ...]:
    """Every construct of `sql` that reaches past the step's inputs, in text order (raises
    SqlError if the SQL does not parse)."""
    from calve.engines.duckdb import REACH_HINT, statements

    found: list[Reach] = []
    for statement in statements(sql):
        body = _LEADING_COMMENTS.sub("", statement.text, count=1)
        line = statement.first_line + statement.text[: len(statement.text) - len(body)].count("\n") + 1
        if statement.kind not in ALLOWED_KINDS or _SECRET.match(body):
            construct = _construct(body)
            found.append(Reach(construct, line, f"{construct} is not allowed in a step's SQL; {REACH_HINT}"))
            continue
        for name, offset in _file_reads(statement.text):
            where = statement.first_line + statement.text[:offset].count("\n") + 1
            found.append(Reach(name, where, f"{name} reads outside the step's inputs; {REACH_HINT}"))
    return tuple(found)


def _construct(body: str) -> str:
    """The statement's leading keyword(s), as in COPY, INSTALL, IMPORT DATABASE, CREATE SECRET."""
    words = body.split(None, 6)
    if not words:
        return "(empty statement)"
    first = words[0].upper().rstrip(";")
    if _SECRET.match(body):
        return "CREATE SECRET"
    return _TWO_WORDS.get(first, first)


def _file_reads(text: str) -> list[tuple[str, int]]:
    """The file-reading table functions and file-path tables of one statement, with their offsets
    in `text` (nothing when sqlglot cannot parse the statement: the engine still refuses them)."""
    import sqlglot
    from sqlglot import exp

    try:
        trees = [t for t in sqlglot.parse(text, read="duckdb") if t is not None]
    except sqlglot.errors.SqlglotError:
        return []
    found: list[tuple[str, int]] = []
    for tree in trees:
        for node in tree.walk():
            if isinstance(node, exp.Table) and isinstance(node.this, exp.Identifier):
                name = node.this.name
                if node.this.quoted and not node.args.get("db") and _FILE_LIKE.search(name):
                    found.append((f"the file path {name!r} used as a table", _offset(text, name)))
            elif isinstance(node, exp.Func):
                name = (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()
                if _reads_files(name):
                    found.append((f"{name}(...)", _offset(text, name, call=True)))
    return sorted(found, key=lambda item: item[1])


def _reads_files(name: str) -> bool:
    return name in FILE_FUNCTIONS or name.startswith(FILE_FAMILIES) or name.endswith("_scan")


def _offset(text: str, name: str, call: bool = False) -> int:
    pattern = rf"\b{re.escape(name)}\s*\(" if call else re.escape(name)
    match = re.search(pattern, text, re.I)
    return match.start() if match else 0
