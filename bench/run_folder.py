"""The folders varbench writes into: can they be written, who is writing them now, and which files in them
varbench wrote.

- ``ensure_writable``: create the folder and a probe file before anything is measured, so a bad ``--out`` is
  one line up front instead of a traceback after the first cell.
- ``locked``: an exclusive ``fcntl.flock`` on ``LOCK_NAME`` inside the folder, held by the one process that
  appends to its table (with a Dask executor, the client). The lock file records the holder (pid, host, start
  time) so a second run can say who it is; the file stays (removing it would let a waiter and a newcomer lock
  two different files).
- ``claim``: ``baseline`` and ``regress`` replace what they wrote before, so they write only into a folder that
  is new, empty, or carries the marker ``MARKER_NAME`` they left there; the marker lists the files they wrote,
  and only those are ever removed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

LOCK_NAME = ".varbench.lock"
MARKER_NAME = ".varbench-run"
REPORT_TITLE = "# varbench report"  # the first line of every report.md varbench writes
REPORT_HTML_SIGNATURE = "<!-- varbench report -->"  # the second line of every report.html (after <!DOCTYPE html>)
REPORT_FILES = ("report.md", "report.html")  # written together, from the same sections


class RunFolderError(ValueError):
    """A folder varbench may not or cannot write into, or one another varbench process is writing."""


def _describe_os_error(error: OSError) -> str:
    return error.strerror or type(error).__name__


def ensure_writable(folder: Path, flag: str = "--out") -> Path:
    """Create ``folder`` (and its parents) and check that a file can be written in it; RunFolderError otherwise."""
    folder = Path(folder)
    for parent in [folder, *folder.parents]:
        if parent.exists() and not parent.is_dir():
            raise RunFolderError(f"{flag} {folder}: {parent} is a file, not a folder; choose another {flag}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".varbench-probe-"):
            pass
    except OSError as error:
        raise RunFolderError(f"{flag} {folder} cannot be written ({_describe_os_error(error)}); choose a folder "
                             "you can write to") from None  # fmt: skip
    return folder


def check_report_replaceable(folder: Path) -> None:
    """Refuse to overwrite a report.md or report.html that varbench did not write (it would be lost)."""
    for name in REPORT_FILES:
        path = Path(folder) / name
        if path.is_file() and not is_varbench_report(path):
            raise RunFolderError(f"{path} was not written by varbench and would be replaced by its report; move it away")


def is_varbench_report(path: Path) -> bool:
    """Whether ``path`` starts as varbench's report.md (its title) or report.html (its signature) does."""
    path = Path(path)
    first = [REPORT_HTML_SIGNATURE] if path.suffix == ".html" else [REPORT_TITLE]
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = [handle.readline().rstrip("\r\n") for _ in range(2 if path.suffix == ".html" else 1)]
    except OSError:
        return False
    return lines[-1:] == first


# ---------------------------------------------------------------------------------------------------------
# The lock


_HELD: dict[Path, list] = {}  # folder -> [fd, depth]: a process re-entering its own lock (cli, then run_cells)


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"varbench {info['command']} (pid {info['pid']} on {info['host']}, since {info['started_at']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another varbench process"


@contextlib.contextmanager
def locked(folder: Path, command: str = "run", *, wait: bool = False, flag: str = "--out",
           wait_hint: str = " or pass --wait") -> Iterator[None]:  # fmt: skip
    """Hold the folder's lock while the block runs. Another process holding it: RunFolderError naming the
    holder, or, with ``wait``, block until it is released (saying so once on stderr)."""
    folder = Path(folder).resolve()
    if folder in _HELD:
        _HELD[folder][1] += 1
        try:
            yield
        finally:
            _HELD[folder][1] -= 1
        return
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            if not wait:
                raise RunFolderError(f"{flag} {folder} is in use by {_holder(path)}; wait for it to finish"
                                     f"{wait_hint}") from None  # fmt: skip
            print(f"varbench: {flag} {folder} is in use by {_holder(path)}; waiting for it", file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
        holder = dict(command=command, pid=os.getpid(), host=socket.gethostname(),
                      started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode() + b"\n", 0)
        _HELD[folder] = [fd, 0]
        try:
            yield
        finally:
            del _HELD[folder]
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------------------
# Folders that a command owns


def _entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} - {LOCK_NAME, MARKER_NAME} if folder.is_dir() else set()


def _read_marker(folder: Path) -> dict | None:
    path = folder / MARKER_NAME
    if not path.exists():
        return None
    try:
        marker = json.loads(path.read_text())
        if isinstance(marker, dict) and isinstance(marker.get("command"), str) and isinstance(marker.get("files"), list):
            return marker
    except (OSError, ValueError):
        pass
    raise RunFolderError(f"{path} is not a marker varbench can read; move the folder away or choose another --out")


def replace_whole(path: Path, data: bytes) -> None:
    """Write ``path`` via a temporary file and a rename, so it is never seen (or left) half-written."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _write_marker(folder: Path, command: str, files: set[str]) -> None:
    marker = dict(command=command, files=sorted(files),
                  note=f"written by `varbench {command}`: it replaces only the files listed here")  # fmt: skip
    replace_whole(folder / MARKER_NAME, (json.dumps(marker, indent=1) + "\n").encode())


@dataclass(frozen=True)
class Claim:
    """A folder ``command`` may write into; ``others`` are files in it that it did not write (left alone)."""

    folder: Path
    command: str
    others: frozenset[str]

    def record(self) -> None:
        """List every file now in the folder that was not there before the claim as written by this command."""
        _write_marker(self.folder, self.command, _entries(self.folder) - self.others)


# (folder, the names in it) -> whether it is this command's output from before markers existed
Adopt = Callable[[Path, set[str]], bool]


def _never(folder: Path, entries: set[str]) -> bool:
    return False


def check_not_claimed(folder: Path, command: str, flag: str = "--out") -> None:
    """RunFolderError if another command's marker claims ``folder`` (``run`` must not append to a baseline)."""
    marker = _read_marker(Path(folder)) if Path(folder).is_dir() else None
    if marker is not None and marker["command"] != command:
        raise RunFolderError(f"{flag} {folder} holds the output of `varbench {marker['command']}`; choose another "
                             f"folder for `varbench {command}`")  # fmt: skip


def check_claimable(folder: Path, command: str, *, adopt: Adopt = _never, flag: str = "--out") -> None:
    """RunFolderError unless ``command`` may write into ``folder`` (see ``claim``); reads only."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"{flag} {folder} is a file, not a folder; choose another {flag}")
    entries = _entries(folder)
    marker = _read_marker(folder) if folder.is_dir() else None
    if marker is not None:
        if marker["command"] != command:
            raise RunFolderError(f"{flag} {folder} holds the output of `varbench {marker['command']}`; "
                                 f"choose a new or empty folder for `varbench {command}`")  # fmt: skip
        return
    if entries and not adopt(folder, entries):
        shown = ", ".join(sorted(entries)[:5]) + (", …" if len(entries) > 5 else "")
        raise RunFolderError(f"{flag} {folder} is not empty and was not written by `varbench {command}` (it holds "
                             f"{shown}); choose a new or empty folder")  # fmt: skip


def claim(folder: Path, command: str, will_write: tuple[str, ...], *, adopt: Adopt = _never,
          flag: str = "--out") -> Claim:  # fmt: skip
    """Make ``folder`` ready for ``command``: it must be new, empty, marked by ``command`` before, or one that
    ``adopt`` recognises as this command's output from before markers existed. The files the marker lists
    are removed; ``will_write`` (the fixed names the command writes) are listed at once, so an interrupted
    command's files are replaced next time. Call under ``locked``."""
    folder = Path(folder)
    check_claimable(folder, command, adopt=adopt, flag=flag)
    marker = _read_marker(folder)
    ours = set(marker["files"]) if marker is not None else _entries(folder)  # adopted, or empty
    for name in ours:
        path = folder / name
        if Path(name).name == name and path.is_file():  # plain names only: a marker cannot point elsewhere
            path.unlink()
    others = _entries(folder)
    clash = sorted(set(will_write) & others)
    if clash:
        raise RunFolderError(f"{folder / clash[0]} was not written by `varbench {command}`; move it away")
    _write_marker(folder, command, set(will_write))
    return Claim(folder, command, frozenset(others))
