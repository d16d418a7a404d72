"""A private PostgreSQL server for tests: initdb in a temporary folder, a free loopback port,
trust authentication, stopped and removed afterwards. Needs PostgreSQL's server binaries on PATH
(`initdb`, `pg_ctl`); as root they run as the `postgres` user, which initdb requires."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from helpers.hang_guard import HANG_GUARD

USER = "kdprune"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One server; `database(name)` creates a database and returns its SQLAlchemy URL."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="kdprune-pg-"))
        self.data, self.log = self.root / "data", self.root / "server.log"
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.root, "postgres")
        self.port = 0

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*self.as_user, *args], capture_output=True, text=True, cwd="/")

    def start(self) -> None:
        done = self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", USER, "--no-sync")
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.strip()}")
        for _ in range(5):  # another process may take the port between our probe and the bind
            self.port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            done = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w",
                             "-t", str(HANG_GUARD), "-o", options, "start")  # fmt: skip
            if done.returncode == 0:
                return
        raise RuntimeError(f"PostgreSQL did not start: {self.log.read_text()[-2000:]}")

    def database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def url(self, database: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self.port:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t",
                      str(HANG_GUARD), "stop")  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)
