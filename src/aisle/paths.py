"""Folders the library writes into: checked once, up front, so a read-only folder fails with a message, not a
traceback halfway through the work."""

from __future__ import annotations

import tempfile
from pathlib import Path

__all__ = ["require_writable"]


def _nearest_existing(folder: Path) -> Path:
    """``folder`` itself, or the closest of its parents that exists (where ``mkdir`` would start)."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return candidate
    return folder  # unreachable for absolute paths: the root exists


def require_writable(folder: str | Path, what: str) -> Path:
    """Check that files can be written in ``folder`` (or, if it does not exist yet, that it can be created).

    Nothing is left behind: the check writes and removes one temporary file in the folder, or in its nearest
    existing parent when the folder is still to be made.

    Args:
        folder: the folder about to be written.
        what: what the folder is, for the message (``"run folder"``, ``"feature cache (runtime.cache_dir)"``).

    Returns:
        ``folder`` as a Path.

    Raises:
        PermissionError: the folder (or the parent it would be made in) cannot be written; the message names it.
    """
    target = Path(folder)
    base = _nearest_existing(target.absolute())
    if not base.is_dir():
        raise PermissionError(f"cannot write the {what} {target}: {base} is a file, not a folder; choose another path")
    try:
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as e:
        where = "" if base == target.absolute() else f" (it would be made in {base})"
        raise PermissionError(
            f"cannot write the {what} {target}{where}: {e.strerror or e}; choose a folder you can write to, "
            f"or fix its permissions"
        ) from None
    return target
