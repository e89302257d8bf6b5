"""A real PostgreSQL server for the tests marked `postgresql`, from Debian's `postgresql` package.

The server runs from a temporary folder on a free 127.0.0.1 port, for the whole test session, with
trust authentication (no password on the loopback address only). Each test gets a database of its
own (`postgres_url`). initdb refuses to run as root: as root (CI), the server runs as the `postgres`
OS user (`runuser`), which the package creates. Without the binaries the tests skip locally (install
them with `apt-get install postgresql`) and fail in CI (CI=true), where .ci/run installs them.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

USER = "calve"


@dataclass(frozen=True)
class PostgresServer:
    port: int
    folder: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh database on this server; returns its postgresql:// URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')  # a generated name, not input
        return self.url(name)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_server_user(command: list[str]) -> list[str]:
    """`command` as the `postgres` OS user when we are root (initdb refuses root), else as is."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bin_dir = _binaries()
    problem = None
    if bin_dir is None:
        problem = "PostgreSQL's binaries are missing (apt-get install postgresql)"
    elif os.geteuid() == 0 and shutil.which("runuser") is None:
        problem = "running as root needs runuser to start PostgreSQL as the postgres user"
    if problem is not None or bin_dir is None:
        if in_ci():
            pytest.fail(f"postgresql tests must run in CI (CI=true), but {problem}")
        pytest.skip(f"postgresql test skipped: {problem}")
    folder = Path(tempfile.mkdtemp(prefix="calve-pg-"))
    data, log = folder / "data", folder / "server.log"
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    port = _free_port()
    run = {"check": True, "capture_output": True, "text": True, "timeout": 120}
    subprocess.run(
        _as_server_user([str(bin_dir / "initdb"), "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8"]),
        **run,  # type: ignore[call-overload]
    )
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    try:
        subprocess.run(
            _as_server_user(
                [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start"]
            ),
            **run,  # type: ignore[call-overload]
        )
    except subprocess.CalledProcessError as exc:
        detail = log.read_text() if log.exists() else exc.stderr
        pytest.fail(f"PostgreSQL did not start: {detail}")
    try:
        yield PostgresServer(port, folder)
    finally:
        subprocess.run(
            _as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
            capture_output=True,
            timeout=120,
        )
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database of the session's server, as a postgresql:// URL."""
    return postgres_server.new_database()
