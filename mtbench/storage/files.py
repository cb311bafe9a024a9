"""Writing result files so that a full disk or a kill never leaves half a file where a whole one was.

Every file is first written under a temporary name beside it, and renamed over the old one only
once all of a group are complete (a checkpoint and its config, the tables of the Parquet mirror).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from mtbench.errors import MtbenchError

Writer = Callable[[Path], None]
"""Writes the content to the path it is given (a temporary name, not the final one)."""


def temp_name(path: Path) -> Path:
    """Hidden, beside its target (same file system, so the rename is atomic)."""
    return path.with_name(f".{path.name}.tmp")


def follow_umask(path: Path, mode: int = 0o666) -> None:
    """Give ``path`` the permissions a plain ``open`` (files, 0o666) or ``mkdir`` (folders, 0o777) would
    under this process's umask: writers that create private files (mkdtemp, safetensors) would otherwise
    keep results from the user's group on a shared cluster."""
    mask = os.umask(0o022)  # read by setting it, then put back
    os.umask(mask)
    Path(path).chmod(mode & ~mask)


def write_files(writers: Mapping[Path, Writer], what: str, error: type[MtbenchError] = MtbenchError) -> None:
    """Write every file to a temporary name, then rename them all into place.

    On an error (disk full, file too large, permission) the temporary files are removed, the old
    files are left as they were, and ``error`` says which file and why. ``what`` names the content
    in the message, e.g. "the checkpoint"."""
    temps = {path: temp_name(Path(path)) for path in writers}
    current = None
    try:
        for path, write in writers.items():
            current = path
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            write(temps[path])
        for path, tmp in temps.items():
            current = path
            os.replace(tmp, path)
    except OSError as exc:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
        raise error(f"{current}: cannot write {what} ({exc.strerror or exc}): is the disk full? "
                    "The previous file, if any, is unchanged") from None


def write_text(path: Path, text: str, what: str, error: type[MtbenchError] = MtbenchError) -> None:
    """One text file, atomically."""
    write_files({Path(path): lambda tmp: tmp.write_text(text)}, what, error)


__all__ = ["follow_umask", "temp_name", "write_files", "write_text"]
