"""Writing files safely: atomic writes, durable renames, free-space preflight, OS errors as one line.

Every file convlens writes goes through ``atomic_write`` (a temp file beside the target,
fsynced, renamed, then the folder fsynced), so a kill at any moment leaves either the old file
or the new one, plus at worst a ``.NAME.*.tmp`` that readers ignore and the next save removes.
``os_error_text`` is the one place that turns an ``OSError`` into the line a face prints.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import threading
from pathlib import Path

from convlens.errors import ConvlensError, printable

# errno → what the user reads; everything else falls back to the system's own wording
OS_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOTDIR: "not a folder (a file stands where a folder is needed)",
    errno.EISDIR: "is a folder, not a file",
    errno.ENOENT: "no such file or folder",
    errno.EEXIST: "already exists",
    errno.ENAMETOOLONG: "file name too long",
    errno.EIO: "input/output error (failing disk or lost network share?)",
}
if hasattr(errno, "EDQUOT"):
    OS_REASONS[errno.EDQUOT] = "disk quota exceeded"

MiB = 1 << 20


def os_reason(exc: OSError) -> str:
    """The reason part of an OSError, in plain words (``no space left on the device``)."""
    if exc.errno in OS_REASONS:
        return OS_REASONS[exc.errno]
    return (exc.strerror or str(exc) or type(exc).__name__).rstrip(".").lower()


def os_error_text(exc: OSError) -> str:
    """One line for an OSError: ``PATH: reason`` (both paths for a failed rename)."""
    reason = os_reason(exc)
    if exc.filename is None:
        return reason
    if exc.filename2 is not None:
        return f"{exc.filename} → {exc.filename2}: {reason}"
    return f"{exc.filename}: {reason}"


def with_path(exc: OSError, path: str | Path) -> OSError:
    """``exc`` with ``path`` as its file name when the system did not say which file failed."""
    if exc.filename is None:
        exc.filename = str(path)
    return exc


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux ``/proc``).

    Elsewhere it is set and restored under a lock, so two writers in this process never race.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file: ``0o666`` less the umask."""
    return 0o666 & ~current_umask()


def fsync_dir(folder: str | Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename itself is still atomic
    finally:
        os.close(fd)


def remove_quietly(path: str | Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def temp_name(path: Path) -> str:
    """The prefix of ``path``'s temp files: ``.NAME.`` (they end in ``.tmp``)."""
    return f".{path.name}."


def atomic_write(path: str | Path, data: bytes, durable: bool = True) -> None:
    """Write to a temp file beside ``path`` and rename it: readers never see half a file.

    The temp file is created 0600 and gets the mode the user's umask asks for before the
    rename; it is fsynced first and the folder after (``durable``), and removed on any failure,
    so an OSError (no space, read-only) leaves the old file and no temp file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=temp_name(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            if hasattr(os, "fchmod"):  # POSIX; Windows has no mode bits to honour
                os.fchmod(tmp.fileno(), new_file_mode())
            if durable:
                os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException as exc:
        remove_quietly(tmp_name)
        if isinstance(exc, OSError):
            with_path(exc, path)
        raise
    if durable:
        fsync_dir(path.parent)


def remove_stale_temp_files(folder: Path, name: str) -> None:
    """Remove ``.NAME.*.tmp`` files a killed write left in ``folder`` (callers hold the run lock)."""
    for stale in folder.glob(f".{name}.*.tmp"):
        remove_quietly(stale)


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def format_bytes(size: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover


def preflight(
    folder: str | Path, needed: int = 16 * MiB, why: str = "", parameter: str | None = "run_dir"
) -> None:
    """Check, without leaving anything behind, that ``folder`` can be created and written and
    has ``needed`` bytes free; a ConvlensError naming ``parameter`` says what is wrong.
    """
    folder = Path(folder)
    name = f"{parameter} {printable(folder)}" if parameter else printable(folder)
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise ConvlensError(f"{name}: {printable(existing)} is a file, not a folder", parameter=parameter)
    try:
        if existing == folder.absolute():
            fd, probe = tempfile.mkstemp(dir=existing, prefix=".convlens-preflight.", suffix=".tmp")
            os.close(fd)
            os.unlink(probe)
        else:
            os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".convlens-preflight."))
        free = shutil.disk_usage(existing).free
    except OSError as exc:
        raise ConvlensError(f"{name}: cannot write here ({os_reason(exc)})", parameter=parameter) from None
    if free < needed:
        raise ConvlensError(
            f"{name}: only {format_bytes(free)} free, {why or 'writing here'} needs about "
            f"{format_bytes(needed)}",
            parameter=parameter,
        )
