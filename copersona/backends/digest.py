"""Content digests of model files, so a cache key names the weights that made an answer, not a file name.

Hashing a whole model file takes a while (a 7B GGUF is several GB), so a file's digest is computed
once and remembered in the cache folder, keyed by its real path, size, modification time and inode:
a file replaced under the same name is hashed again (:func:`remembered`, which also keeps other
slow facts about a model file, such as a GGUF's trained context length).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Hex digits of a digest kept in model ids and folder names.
DIGEST_CHARS = 12


def cache_dir() -> Path:
    """Where CoPersona keeps derived artefacts that outlive a store (``COPERSONA_CACHE`` overrides)."""
    return Path(os.environ.get("COPERSONA_CACHE", Path.home() / ".cache" / "copersona"))


def file_digest(path: str | Path) -> str:
    """A short sha256 of a whole file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:DIGEST_CHARS]


def remembered(path: str | Path, memo_name: str, compute: Callable[[Path], Any]) -> Any:
    """``compute(path)`` (a JSON value), computed once per version of the file on this machine.

    The memo is ``memo_name`` in the cache folder, keyed by the file's real path, size,
    modification time and inode: a file replaced under the same name is computed again.
    """
    path = Path(path).resolve()
    stat = path.stat()
    identity = f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}"
    memo_path = cache_dir() / memo_name
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    if identity not in memo:
        memo[identity] = compute(path)
        try:
            memo_path.parent.mkdir(parents=True, exist_ok=True)
            partial = memo_path.with_name(f"{memo_path.name}.{os.getpid()}")
            partial.write_text(json.dumps(memo, indent=0, sort_keys=True))
            partial.replace(memo_path)  # atomic: a concurrent reader sees the old or the new memo
        except OSError:
            pass  # a read-only cache folder only costs computing again next time
    return memo[identity]


def weights_digest(path: str | Path) -> str:
    """:func:`file_digest` of a model file, computed once per version of the file on this machine."""
    return remembered(path, "weight-digests.json", file_digest)


def folder_digest(folder: str | Path, patterns: tuple[str, ...]) -> str:
    """One digest over the files of ``folder`` matching ``patterns`` (a checkpoint's weight shards)."""
    files = sorted({p for pattern in patterns for p in Path(folder).glob(pattern) if p.is_file()})
    if not files:
        raise FileNotFoundError(f"{folder}: no weight files ({', '.join(patterns)})")
    combined = ",".join(f"{p.name}={weights_digest(p)}" for p in files)
    return hashlib.sha256(combined.encode()).hexdigest()[:DIGEST_CHARS]
