"""Atomic file writes and file-name hygiene shared by the report writers."""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Union

from ..errors import LumbarEdgeError


class ReportError(LumbarEdgeError):
    """A result cannot be written as a report (incomplete findings, non-finite values, duplicates)."""


def atomic_write_bytes(path: Union[str, Path], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, flushed to disk,
    then renamed over ``path``. A reader never sees a partial file, and a failure leaves any
    previous file intact. Creates the parent folder. Raises ``OSError`` from the filesystem."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        # The rename did not happen: remove the partial temporary file, keep the error.
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: object) -> str:
    """``text`` as one file-name component: runs of characters other than letters, digits,
    ``.``, ``_`` and ``-`` become ``_``; leading dots are dropped (no hidden files, no ``..``)."""
    name = _UNSAFE.sub("_", str(text)).lstrip(".")
    return name or "_"
