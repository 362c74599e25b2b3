"""Atomic file writes and JSON: the one helper every writer in kdlib uses, so that a killed process
never leaves half a file (a result JSON, a checkpoint, a manifest, a ``.kdl`` file)."""
from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; on success it replaces ``path`` (with a new file's
    mode), on any error it is removed and ``path`` is untouched."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, data: bytes, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically; refuse to replace a file unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(errno.EEXIST, "exists; pass overwrite=True to replace it", str(path))
    if not path.parent.is_dir():
        raise FileNotFoundError(f"Cannot write {path}: folder {path.parent} does not exist")
    with atomic(path) as tmp:
        tmp.write_bytes(data)
    return path


def copy(source: str | Path, target: str | Path) -> Path:
    """Copy ``source`` to ``target`` atomically."""
    with atomic(target) as tmp:
        shutil.copyfile(source, tmp)
    return Path(target)


def strict(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (strict JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    return value


def write_json(path: str | Path, value: Any, indent: int | None = 2, sort_keys: bool = False,
               newline: bool = False) -> Path:
    """Write ``value`` as strict JSON (:func:`strict`), atomically, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(strict(value), indent=indent, sort_keys=sort_keys) + ("\n" if newline else "")
    return write_atomic(path, text.encode(), overwrite=True)


def read_json(path: str | Path, default: Any = None) -> Any:
    """The JSON in ``path``, or ``default`` when there is no such file."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else default
