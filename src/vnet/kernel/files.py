"""Files written whole: readers see the old content or the new, never half, and the mode
is exact from the first byte (a key file is never briefly readable by others)."""

from __future__ import annotations

import os
from pathlib import Path


def write_file(path: str | Path, text: str, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` through a temporary file renamed over it."""
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have taken bits the caller asked for
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
