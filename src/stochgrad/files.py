"""Output files written whole or not at all: one writer for every file a command writes (JSON, reports, plots,
checkpoints, metrics).

[`write_atomic`][stochgrad.files.write_atomic] writes to a new temporary file beside the target (``PATH.tmp.PID``, created exclusively, so a
name planted in the folder is never opened), flushes it to disk and renames it over the target. A reader sees the old file or the
new one, never half of one; a kill mid-write leaves the old file; a symbolic link planted at the target's name is
*replaced* by the new file, never followed (the file it points to is left alone). A write that fails (disk full,
read-only folder, a folder that is not there) removes its temporary file and raises [`OutputError`][stochgrad.files.OutputError], whose
message says why in words.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil

#: errno values that mean "this folder cannot be written", said in words by `reason`
_WORDS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
          errno.EROFS: "the folder is on a read-only file system", errno.EACCES: "permission denied",
          errno.EPERM: "operation not permitted", errno.ENOENT: "the folder does not exist"}


class OutputError(RuntimeError):
    """An output file that could not be written; the file that was there (if any) is intact."""


def reason(err: OSError, folder: str | None = None, needed: int | None = None) -> str:
    """Words for an ``OSError`` of a write: ``"no space left on the device (12 bytes free, 40 needed)"``."""
    words = _WORDS.get(err.errno) or err.strerror or str(err)
    if err.errno in (errno.ENOSPC, errno.EDQUOT) and folder is not None:
        with contextlib.suppress(OSError):
            free = shutil.disk_usage(folder).free
            words += f" ({free} bytes free" + (f", {needed} needed)" if needed is not None else ")")
    return words


def temporary_name(path: str, pid: int | None = None) -> str:
    """The temporary file of ``path`` written by process ``pid`` (this one by default): ``PATH.tmp.PID``, so that
    the temporary files of killed writers can be told from those of live ones ([`remove_stale`][stochgrad.files.remove_stale])."""
    return f"{path}.tmp.{os.getpid() if pid is None else pid}"


@contextlib.contextmanager
def atomic_file(path: str, mode: str = "wb"):
    """Opens a new temporary file beside ``path`` (``mode``: ``"wb"`` or ``"w"``); on a clean exit flushes it to
    disk and renames it to ``path``. On any failure removes it, leaves ``path`` as it was and raises
    [`OutputError`][stochgrad.files.OutputError] (for an ``OSError``) or the original exception."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    tmp = temporary_name(path)
    with contextlib.suppress(OSError):   # a leftover of an earlier process with this pid (unlink follows no link)
        os.unlink(tmp)
    try:   # created here and now, never opened through a name planted in the folder
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as err:
        raise OutputError(f"could not write {path}: {reason(err, folder)}") from None
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(err, OSError):
            kept = f"the previous {name} is intact" if os.path.lexists(path) else "nothing was written"
            raise OutputError(f"could not write {path}: {reason(err, folder)}; the temporary file was removed and "
                              f"{kept}") from None
        raise
    with contextlib.suppress(OSError):   # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def remove_stale(folder: str) -> None:
    """Removes the temporary files ([`temporary_name`][stochgrad.files.temporary_name]) that killed writers left in ``folder``; those of live
    processes are left alone."""
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    for entry in entries:
        head, sep, pid = entry.rpartition(".tmp.")
        if sep and head and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(folder, entry))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def write_atomic(path: str, data: bytes | str) -> None:
    """Writes ``data`` (bytes, or text as UTF-8) to ``path`` atomically (module docstring)."""
    with atomic_file(path, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)


def save_figure_atomic(fig, path: str, **savefig) -> None:
    """``fig.savefig`` to ``path`` atomically, in the format of its extension."""
    fmt = os.path.splitext(path)[1].lstrip(".") or "png"
    with atomic_file(path, "wb") as fh:
        fig.savefig(fh, format=fmt, **savefig)
