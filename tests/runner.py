"""Running the real command line from tests, as a user would (a fresh interpreter per call)."""

from __future__ import annotations

import socket
import subprocess
import sys

MI = "amazon2014-musical-instruments"


def cli(*args, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "copersona.cli", *map(str, args)], capture_output=True, text=True, timeout=900
    )
    if check and result.returncode != 0:
        raise AssertionError(f"copersona {' '.join(map(str, args))} failed:\n{result.stderr[-3000:]}")
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def copy_store(source, target):
    """A consistent copy of a store (SQLite's backup: the WAL's transactions included), at ``target``."""
    from copersona.store.sqlite import Store

    with Store(source, read_only=True) as db:
        db.backup(target)
    return target
