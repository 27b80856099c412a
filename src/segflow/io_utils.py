"""File output rules: atomic writes with the umask's mode, and one rule for output folders.

Two things every writer in segflow shares:

- :func:`atomic_write` writes to a temporary name in the same folder and renames at the end,
  with the permission bits a plain ``open(path, "w")`` would give.
- :func:`claim_output_dir` is the one rule for a folder a command writes into (``train`` and
  ``demo`` run folders, ``predict --out``): a non-empty folder is refused unless the user
  passed ``--overwrite`` (clears only what segflow owns there) or the caller resumes.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from segflow.errors import ConfigError

OwnedOutputs = Sequence[str] | Callable[[Path], bool]
"""What segflow owns in an output folder: glob patterns matched against the names of the
folder's top-level entries (``"checkpoints"``, ``"*_overlay.png"``), or a predicate called with
each top-level entry's path."""

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows.

    Linux (4.7+) reports it in ``/proc/self/status``; elsewhere it is read by setting and
    restoring it under a lock (``os.umask`` has no read-only form).
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def default_file_mode(path: str | os.PathLike[str]) -> int:
    """Permission bits a plain ``open(path, "w")`` would leave on ``path``.

    An existing file keeps its mode (``open`` truncates, it does not chmod); a new file gets
    ``0o666 & ~umask`` (0o644 under the usual umask 022).
    """
    try:
        info = os.stat(path)
    except OSError:
        return 0o666 & ~current_umask()
    if stat.S_ISREG(info.st_mode):
        return stat.S_IMODE(info.st_mode)
    return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yields a temporary path next to ``path``; renames it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched, so a
    reader never sees a half-written file and an earlier complete file is never lost.
    The final file has the mode a plain ``open`` would give (see :func:`default_file_mode`),
    not ``mkstemp``'s private 0600, so other users and web servers can read outputs as the
    umask allows.

    Args:
        path: Final destination. Its parent folder is created if needed.

    Yields:
        Temporary path with the same suffix as ``path`` (libraries that pick a format
        from the suffix keep working).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    mode = default_file_mode(final)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.stem}.partial-", suffix=final.suffix, dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # chmod after the writer ran: some writers (torch.save, onnx) replace the file.
        os.chmod(tmp, mode)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def is_owned(entry: Path, owned: OwnedOutputs) -> bool:
    """Whether the top-level ``entry`` of an output folder is one segflow wrote."""
    if callable(owned):
        return bool(owned(entry))
    return any(fnmatch.fnmatchcase(entry.name, pattern) for pattern in owned)


def _remove(entry: Path) -> None:
    """Removes a file, a link (never its target) or a whole folder."""
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry)
    else:
        entry.unlink(missing_ok=True)


def claim_output_dir(
    path: str | os.PathLike[str],
    *,
    overwrite: bool,
    owned: OwnedOutputs,
    resume: bool = False,
    what: str = "output folder",
    hint: str | None = None,
) -> Path:
    """Makes ``path`` ready for a command's outputs; the one rule for every output folder.

    The rule:

    - ``path`` missing or empty: it is created and returned.
    - ``path`` is a file: refused (``ConfigError``), whatever the flags.
    - ``path`` non-empty and ``resume``: returned as it is. The caller then checks that what
      is there belongs to the same job (a ``predictions.json`` manifest, a checkpoint) and
      skips finished work.
    - ``path`` non-empty and ``overwrite``: every top-level entry matched by ``owned`` is
      removed (files, links and whole sub-folders); every other entry is the user's and is
      kept untouched. Then ``path`` is returned.
    - ``path`` non-empty otherwise: refused with a one-line ``ConfigError`` naming the folder,
      a few of its entries and the ``--overwrite`` flag, before any work is done.

    Call it before any expensive work, and only on the main process (other DDP ranks would
    see the main process's first outputs). ``overwrite`` wins over ``resume`` when both are
    set; callers that treat the two flags as exclusive should refuse that combination first.

    Args:
        path: The output folder.
        overwrite: The user passed ``--overwrite``.
        owned: What segflow owns there (see :data:`OwnedOutputs`): glob patterns for the
            names of top-level entries, or a predicate on each top-level entry's path (e.g.
            "listed in predictions.json").
        resume: The caller continues an earlier job in this folder; a non-empty folder is
            accepted as it is.
        what: How the message names the folder ("run folder", "--out folder").
        hint: What the refusal tells the user to do; default: pass ``--overwrite`` or pick
            another folder.

    Returns:
        ``Path(path)``, existing and ready to write into.

    Raises:
        ConfigError: ``path`` is a file, or is non-empty without ``overwrite`` / ``resume``.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{what} {folder} exists and is a file, not a folder; choose a folder path")
    if not folder.exists():
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    entries = sorted(folder.iterdir())
    if not entries or (resume and not overwrite):
        return folder
    if overwrite:
        for entry in entries:
            if is_owned(entry, owned):
                _remove(entry)
        return folder
    shown = ", ".join(entry.name for entry in entries[:3])
    more = f", ... ({len(entries)} entries)" if len(entries) > 3 else ""
    todo = hint or "pass --overwrite to replace the outputs segflow wrote there, or choose another folder"
    raise ConfigError(f"{what} {folder} is not empty (holds {shown}{more}); {todo}")
