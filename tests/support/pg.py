"""A throwaway PostgreSQL cluster for tests and benchmarks: initdb + pg_ctl on a free port in a temp directory.

The binaries are looked up on PATH, then in Debian's /usr/lib/postgresql/<major>/bin (where the packages put them).

As root (CI), initdb and postgres refuse to run, so they run as the ``postgres`` user on a directory it owns.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from tests.support.ports import free_port

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def find_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in PG_BIN_DIRS:
        if (directory / name).exists():
            return str(directory / name)
    return None


@dataclass
class Cluster:
    directory: Path
    port: int
    run_as: list[str]
    pg_ctl: str

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _ctl(self, *args: str) -> None:
        subprocess.run([*self.run_as, self.pg_ctl, "-D", str(self.directory / "data"), *args],
                       check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._ctl("-o", options, "-l", str(self.directory / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "-w", "stop")

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except (subprocess.SubprocessError, OSError):
            pass
        shutil.rmtree(self.directory, ignore_errors=True)


def start_cluster() -> Cluster:
    """Create and start a cluster; raises ``FileNotFoundError`` when the binaries are missing."""
    initdb, pg_ctl = find_binary("initdb"), find_binary("pg_ctl")
    if not initdb or not pg_ctl:
        raise FileNotFoundError("initdb/pg_ctl not found")
    directory = Path(tempfile.mkdtemp(prefix="hybridflow-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*run_as, initdb, "-D", str(directory / "data"), "-U", "postgres", "--auth=trust",
                    "-E", "UTF8", "--no-sync"], check=True, capture_output=True, timeout=120)
    cluster = Cluster(directory, free_port(), run_as, pg_ctl)
    cluster.start()
    return cluster


async def _execute(server_url: str, statement: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def fresh_database(server_url: str) -> tuple[str, str]:
    """A new, empty database on the server of ``server_url``: its URL and its name."""
    name = f"hf_{uuid.uuid4().hex[:12]}"
    await _execute(server_url, f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + f"/{name}", name


async def drop_database(server_url: str, name: str) -> None:
    """Drop the database ``name`` of that server, cutting its connections."""
    await _execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def temporary_database(server_url: str) -> AsyncIterator[str]:
    """A fresh database's URL, dropped at the end."""
    url, name = await fresh_database(server_url)
    try:
        yield url
    finally:
        await drop_database(server_url, name)
