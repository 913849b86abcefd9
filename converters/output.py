"""Writing a model folder all-or-nothing.

Everything is written into a hidden staging folder next to the destination and renamed into place at the
end, so a full disk, a crash or Ctrl+C never leaves a half-written model where edgevl would find it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from collections.abc import Iterator

from edgevl.errors import EdgevlError
from edgevl.manifest import MANIFEST_NAME


@contextlib.contextmanager
def staged_folder(destination: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder; on success it becomes `destination`, on any error it is removed."""
    destination = destination.expanduser().absolute()
    check_destination(destination, overwrite)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=destination.parent))
    staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private; a model folder is an ordinary folder
    try:
        yield staging
        _replace(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def check_destination(destination: Path, overwrite: bool = False) -> None:
    """Raise unless a model folder may be written at `destination` (checked early too, before long downloads)."""
    destination = destination.expanduser().absolute()
    if destination.exists() and not overwrite:
        raise EdgevlError(f"{destination} already exists; choose another output folder or pass --force")
    if destination.exists() and not _replaceable(destination):
        raise EdgevlError(f"{destination} is not an edgevl model folder (no {MANIFEST_NAME}) and not empty; "
                          "--force replaces only those: choose another output folder")


def _replaceable(destination: Path) -> bool:
    """Only an edgevl model folder or an empty folder may be replaced: never a file, a home folder, a project."""
    if not destination.is_dir() or destination.is_symlink():
        return False
    return (destination / MANIFEST_NAME).is_file() or not any(destination.iterdir())


def _replace(staging: Path, destination: Path) -> None:
    """Rename staging to destination; an existing destination is moved aside first and removed after."""
    if not destination.exists():
        staging.rename(destination)
        return
    old = destination.with_name(f".{destination.name}.old-{staging.name.rsplit('-', 1)[-1]}")
    destination.rename(old)
    try:
        staging.rename(destination)
    except BaseException:
        old.rename(destination)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
