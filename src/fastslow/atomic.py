"""Writing files and folders so that a crash, a kill or a full disk never leaves a half-written one.

- :func:`write_bytes` (``write_text``, ``write_json``): one file, written to a temporary name in its
  folder, flushed, then renamed over the target.
- :class:`Generation`: a whole output folder, built beside the target (``.NAME.fastslow-new-…``)
  and swapped in at the end; until then the target is exactly as it was.
- :func:`probe_writable` and :func:`writing`: a write problem found before any work, and any
  ``OSError`` while writing turned into a one-line :class:`~fastslow.errors.WriteError`.

Files get the mode the umask gives (``0o666 & ~umask``), folders ``0o777 & ~umask``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fnmatch
import glob
import json
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fastslow.errors import ConfigError, WriteError

# Called with each file's path once it is in place. A fault-injection point for the tests (a kill
# or an exception between two files of one output); None in normal use.
after_write: Callable[[Path], None] | None = None

_STALE = re.compile(r"\.fastslow-(new|old)-(\d+)-")
_TMP_PID = re.compile(r"\.(\d+)\.[^.]*\.tmp$")
_fallback_umask: int | None = None


def umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux' /proc)."""
    global _fallback_umask
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    if _fallback_umask is None:  # elsewhere: set and restore once, cached (os.umask can only be read by setting it)
        _fallback_umask = os.umask(0o022)
        os.umask(_fallback_umask)
    return _fallback_umask


def file_mode() -> int:
    """The mode a newly created file gets under the umask (``0o666 & ~umask``)."""
    return 0o666 & ~umask()


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def _remove_stale_tmp(folder: Path, name: str) -> None:
    """Temporary files a killed write of ``name`` left in ``folder`` (their writer is gone)."""
    for tmp in folder.glob(f".{glob.escape(name)}.*.tmp"):
        found = _TMP_PID.search(tmp.name)
        if found is None or not _pid_alive(int(found.group(1))):
            tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; creates parent folders. Raises ``OSError`` as it comes."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(target.parent, target.name)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())  # mkstemp makes 0600: a report is meant to be read by others where the umask says so
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    if after_write is not None:
        after_write(target)
    return target


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def check_folder(path: str | os.PathLike, option: str = "--out") -> Path:
    """``path`` as a folder to write into: refused (before any work) if it exists as something else."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{option} {folder} is a file, not a folder: pass a folder path (it is created if missing)")
    return folder


def _write_error(err: OSError, where: Path, fix: str) -> WriteError:
    reason = (err.strerror or str(err) or type(err).__name__).lower()
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = f"free some space, or {fix}"
    return WriteError(f"cannot write to {where}: {reason}: {fix}")


@contextlib.contextmanager
def writing(where: str | os.PathLike, fix: str = "choose another --out") -> Iterator[None]:
    """Turn an ``OSError`` raised inside (permission, no space, read-only file system) into a
    one-line :class:`~fastslow.errors.WriteError` naming ``where``."""
    try:
        yield
    except OSError as err:
        raise _write_error(err, Path(where), fix) from None


def probe_writable(folder: str | os.PathLike, fix: str = "choose another --out", shown: str | None = None) -> None:
    """Check, before any work, that files can be created in ``folder`` (or, where it does not
    exist yet, in its nearest existing parent): a probe file is created and removed. ``shown``:
    how the error names the place (default ``folder``)."""
    place = Path(folder).absolute()
    while not place.exists() and place != place.parent:
        place = place.parent
    with writing(shown or folder, fix):
        fd, probe = tempfile.mkstemp(dir=place, prefix=".fastslow-probe-")
        os.close(fd)
        os.unlink(probe)


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened for this
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(a))


def _clone(source: Path, dest: Path) -> None:
    """``source``'s files into ``dest`` as hard links (copies where links are refused), leftover
    temporary files skipped. Every later write replaces a file by rename, so the links never change."""
    for root, dirs, files in os.walk(source):
        here = Path(root)
        there = dest / here.relative_to(source)
        for name in dirs:
            (there / name).mkdir()
        for name in files:
            if name.startswith(".") and name.endswith(".tmp"):
                continue
            try:
                os.link(here / name, there / name)
            except OSError:
                shutil.copy2(here / name, there / name)


class Generation:
    """An output folder written as one generation.

    Created before any work: it checks that ``target`` can be replaced (a folder or nothing; with
    ``owns``, holding only files that command writes) and that the places it will write are
    writable. ``with generation as staging:`` then yields a new folder beside ``target``; on a clean
    exit it is swapped in (and the old generation removed), on any exception it is removed and
    ``target`` stays exactly as it was. ``keep=True`` starts the new folder as a copy of the old
    (hard links), for commands that rewrite some files of a folder and keep the rest.

    ``owns``: glob patterns (relative paths) of what the command writes; anything else found in an
    existing ``target`` is refused rather than deleted. ``option``/``fix`` word the errors.
    """

    def __init__(
        self,
        target: str | os.PathLike,
        *,
        owns: tuple[str, ...] = (),
        keep: bool = False,
        option: str = "--out",
        fix: str = "choose another --out",
    ) -> None:
        path = check_folder(target, option)
        self.target = path.resolve() if path.is_symlink() else path.absolute()  # a link keeps pointing at the new folder
        self.shown = Path(target)
        self.keep, self.fix = keep, fix
        self.staging: Path | None = None
        if self.target.is_dir() and os.path.ismount(self.target):
            raise ConfigError(
                f"{option} {self.shown} is a mount point, which cannot be replaced as a whole: "
                f"pass a folder inside it, e.g. {self.shown / 'out'}"
            )
        if self.target.is_dir() and not keep:
            foreign = self._foreign(owns)
            if foreign:
                shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
                raise ConfigError(
                    f"{option} {self.shown} holds files this command does not write ({shown}), and its output "
                    "replaces the whole folder: move them, or pass a new or empty folder"
                )
        # The new generation is built beside the target, in its parent.
        if self.target.exists():
            where = f"{self.target.parent} (the new {self.target.name} is built there, beside the old one)"
            probe_writable(self.target.parent, fix, where)
        else:
            probe_writable(self.target.parent, fix, str(self.shown))
        if self.target.is_dir():  # the old one is removed after the swap: every folder in it must be writable
            for root, _, _ in os.walk(self.target):
                probe = Path(root)
                with writing(self.shown, fix):
                    fd, name = tempfile.mkstemp(dir=probe, prefix=".fastslow-probe-")
                    os.close(fd)
                    os.unlink(name)

    def _foreign(self, owns: tuple[str, ...]) -> list[str]:
        """What ``target`` holds that matches none of ``owns`` (a folder that does not match is not entered)."""
        patterns = (*owns, ".*.tmp", "*/.*.tmp")
        owned = lambda path: any(fnmatch.fnmatchcase(path.relative_to(self.target).as_posix(), p) for p in patterns)  # noqa: E731
        found = []
        for root, dirs, files in os.walk(self.target):
            here = Path(root)
            found += [f"{(here / d).relative_to(self.target).as_posix()}/" for d in sorted(dirs) if not owned(here / d)]
            found += [(here / f).relative_to(self.target).as_posix() for f in sorted(files) if not owned(here / f)]
            dirs[:] = [d for d in dirs if owned(here / d)]
        return found

    def _remove_stale(self) -> None:
        """Earlier generations' leftovers beside the target whose process is gone: a new folder a
        killed run was building is removed; an old one set aside is put back if the target is missing."""
        for stale in sorted(self.target.parent.glob(f".{glob.escape(self.target.name)}.fastslow-*")):
            found = _STALE.search(stale.name)
            if found is None or _pid_alive(int(found.group(2))):
                continue
            if found.group(1) == "old" and not self.target.exists():
                os.rename(stale, self.target)
            else:
                shutil.rmtree(stale, ignore_errors=True)

    def __enter__(self) -> Path:
        with writing(self.shown, self.fix):
            self.target.parent.mkdir(parents=True, exist_ok=True)
            self._remove_stale()
            self.staging = Path(
                tempfile.mkdtemp(dir=self.target.parent, prefix=f".{self.target.name}.fastslow-new-{os.getpid()}-")
            )
            try:
                os.chmod(self.staging, 0o777 & ~umask())  # mkdtemp makes 0700: as a folder made by mkdir
                if self.keep and self.target.is_dir():
                    _clone(self.target, self.staging)
            except BaseException:
                shutil.rmtree(self.staging, ignore_errors=True)
                raise
        return self.staging

    def __exit__(self, kind, value, traceback) -> None:
        staging, self.staging = self.staging, None
        if kind is None:
            try:
                with writing(self.shown, self.fix):
                    self._commit(staging)
                return
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        shutil.rmtree(staging, ignore_errors=True)
        if issubclass(kind, OSError):
            raise _write_error(value, self.shown, self.fix) from None

    def _commit(self, staging: Path) -> None:
        for root, _, _ in os.walk(staging):  # the renames inside the new folder reach the disk first
            _fsync_folder(Path(root))
        if not self.target.exists():
            os.rename(staging, self.target)
        elif _exchange(staging, self.target):
            shutil.rmtree(staging, ignore_errors=True)  # it now holds the old generation
        else:  # no atomic exchange here: set the old aside, move the new in, put the old back on failure
            aside = self.target.parent / f".{self.target.name}.fastslow-old-{os.getpid()}-{secrets.token_hex(4)}"
            os.rename(self.target, aside)
            try:
                os.rename(staging, self.target)
            except BaseException:
                os.rename(aside, self.target)
                raise
            shutil.rmtree(aside, ignore_errors=True)
        _fsync_folder(self.target.parent)
