"""Running the real command line from tests, as a user would.

``cli`` runs it in the test's own interpreter (``copersona.cli.main``: the same parsing, errors and
exit codes; the imports and the cached metric models are paid once per session, not per call);
``cli_process`` in a fresh one, where a test is about the process itself (its console, a kill).
"""

from __future__ import annotations

import contextlib
import io
import socket
import subprocess
import sys

MI = "amazon2014-musical-instruments"


def cli(*args, check: bool = True) -> subprocess.CompletedProcess:
    from copersona.cli import main

    argv = list(map(str, args))
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            main(argv)
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else int(done.code is not None)
    return _checked(subprocess.CompletedProcess(argv, code, stdout.getvalue(), stderr.getvalue()), argv, check)


def cli_process(*args, check: bool = True) -> subprocess.CompletedProcess:
    argv = list(map(str, args))
    result = subprocess.run([sys.executable, "-m", "copersona.cli", *argv], capture_output=True, text=True, timeout=900)
    return _checked(result, argv, check)


def _checked(result: subprocess.CompletedProcess, argv: list[str], check: bool) -> subprocess.CompletedProcess:
    if check and result.returncode != 0:
        raise AssertionError(f"copersona {' '.join(argv)} failed:\n{result.stderr[-3000:]}")
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def copy_store(source, target):
    """A consistent copy of a store (SQLite's backup: the WAL's transactions included), at ``target``."""
    from copersona.store import Store

    with Store(source, read_only=True) as db:
        db.backup(target)
    return target


class PostgresServer:
    """A throwaway PostgreSQL server of the machine's Debian package (initdb into ``folder``,
    trust authentication on a loopback port); as root it runs as the ``postgres`` user."""

    def __init__(self, folder):
        import glob
        import os
        import shutil

        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb")]
        if not found[-1]:
            raise RuntimeError("PostgreSQL is not installed: scripts/setup.sh installs Debian's package")
        self.bin = os.path.dirname(found[-1])
        self.folder = folder
        self.port = free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        folder.mkdir(parents=True, exist_ok=True)
        if self.as_user:
            shutil.chown(folder, "postgres", "postgres")
        data = folder / "data"
        self._run("initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
        options = f"-p {self.port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", data, "-o", options, "-l", folder / "server.log", "-w", "start")
        self._data = data
        self._databases = 0

    def _run(self, program, *args):
        subprocess.run([*self.as_user, f"{self.bin}/{program}", *map(str, args)], check=True, capture_output=True)

    def database(self) -> str:
        """The URL of a new empty database."""
        import psycopg

        self._databases += 1
        name = f"store{self._databases}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self):
        self._run("pg_ctl", "-D", self._data, "-m", "immediate", "stop")
