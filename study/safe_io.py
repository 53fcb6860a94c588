"""Writes inside a study directory that never follow a symbolic link.

Anyone who can write a study directory could leave ``lock``, ``state.json``, ``report/summary.csv`` or
``cache/corrupt.log`` as a symlink to a file of the user's (``~/.bashrc``): a plain ``open(..., "w")``
would then truncate or append to that file. Every write of the study system goes through this module:

- the target itself is opened with ``O_NOFOLLOW`` (atomic writes create a fresh temporary file with
  ``O_EXCL | O_NOFOLLOW`` and rename it over the target, after refusing a target that is a symlink);
- ``no_symlink_below`` refuses a symlinked directory between the study root and the target (``report/``
  pointing elsewhere). The study root itself may be reached through symlinks (``--dir`` on a symlinked
  mount); what lies inside it may not.

A refusal is an ``UnsafePathError``: a ``UserError`` (one line, exit 2) naming the path.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from study import UserError


class UnsafePathError(UserError):
    """A write inside a study directory would follow a symbolic link."""


def _refuse(path: Path) -> UnsafePathError:
    return UnsafePathError(f"{path}: is a symbolic link; refusing to write through it (a study directory holds "
                           "no symlinks; remove it and retry)")


def no_symlink_below(root: Path, path: Path) -> None:
    """Refuse when ``path`` or a directory between ``root`` (not included) and it is a symlink."""
    root, path = Path(root), Path(path)
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        parts = (path.name,)  # outside the study: only the target itself is checked
        root = path.parent
    here = root
    for part in parts:
        here = here / part
        if here.is_symlink():
            raise _refuse(here)


def open_nofollow(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` with ``O_NOFOLLOW | O_CLOEXEC``; a symlink at ``path`` is an ``UnsafePathError``."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _refuse(Path(path)) from None
        raise


def write_bytes(path: Path, data: bytes, root: Path | None = None, mode: int = 0o644) -> None:
    """Replace ``path`` atomically by ``data`` (a temporary file beside it, then a rename), never through
    a symlink; with ``root``, no directory between it and ``path`` may be a symlink either."""
    path = Path(path)
    no_symlink_below(root if root is not None else path.parent, path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)  # replaces a file (a symlink put there since the check: the link, not its target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str, root: Path | None = None) -> None:
    """``write_bytes`` of UTF-8 text."""
    write_bytes(path, text.encode("utf-8"), root)


def append_text(path: Path, text: str, root: Path | None = None) -> None:
    """Append ``text`` to ``path`` (created if missing), never through a symlink."""
    path = Path(path)
    no_symlink_below(root if root is not None else path.parent, path)
    fd = open_nofollow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(text)


__all__ = ["UnsafePathError", "append_text", "no_symlink_below", "open_nofollow", "write_bytes", "write_text"]
