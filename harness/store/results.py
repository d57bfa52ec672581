"""The results folder: where records live, the campaign lock, atomic writing, strict JSON, event logs.

One JSON file per run at ``<results>/runs/<workload>/<engine>/<run_id>.json``, written atomically
(temporary file in the same folder, fsync, rename, fsync of the folder) so that a reader, or a
campaign resumed after a crash, sees either the whole record or none. Records are never rewritten.
Non-finite floats (a diverged loss) are stored as ``null``: strict JSON, readable by any tool.
What a record holds, and reading and writing one, is `harness.store.records`.

The event log beside a record (``<run_id>.events.jsonl``) holds one JSON object per line with
named keys (``event``, ``utc``, ``wall_s`` and the event's own fields), MLPerf-logging style.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Self, TextIO

from harness import REPO_ROOT

RECORD_SUFFIX = ".json"
EVENTS_SUFFIX = ".events.jsonl"
DRAFT_SUFFIX = ".draft.json"
RESULTS_ENV = "SLIDEBENCH_RESULTS"
LOCK_NAME = ".lock"

# A name that becomes one path component: no separator, no leading dot (so never "." or ".." and
# never a hidden file), ASCII only so that a record's path reads the same on every filesystem.
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


def default_results_dir() -> Path:
    """The results folder every command uses unless told otherwise: $SLIDEBENCH_RESULTS, else the
    repository's results/ (not ./results, so that a command works from any current folder)."""
    configured = os.environ.get(RESULTS_ENV, "").strip()
    return Path(configured).expanduser() if configured else REPO_ROOT / "results"


def check_results_dir(path: Path) -> Path:
    """`path` if it is a folder or does not exist yet; NotADirectoryError naming it otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "the results folder is a file, not a folder", str(path))
    return path


def safe_name(value: object, what: str) -> str:
    """`value` if it can be used as one path component (see _NAME); ValueError naming `what` otherwise.

    Workload, engine and run names come from workload files and records, which are data: a name
    such as ".." or "a/b" must never steer where a file is written.
    """
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} cannot be used in a file name (letters, digits, '-', '_' and '.', "
            "not starting with '.', at most 128 characters)"
        )
    return value


def inside(path: Path, root: Path, what: str = "path") -> Path:
    """`path` if it resolves to a location under `root` (symbolic links followed); ValueError otherwise."""
    if not Path(path).resolve().is_relative_to(Path(root).resolve()):
        raise ValueError(f"{what} {path} would be outside {root}")
    return Path(path)


def run_dir(results_dir: Path, workload: str, engine: str) -> Path:
    runs = Path(results_dir) / "runs"
    folder = runs / safe_name(workload, "workload name") / safe_name(engine, "engine name")
    return inside(folder, runs, "the record folder")


def record_path(results_dir: Path, workload: str, engine: str, run_id: str) -> Path:
    return run_dir(results_dir, workload, engine) / f"{safe_name(run_id, 'run id')}{RECORD_SUFFIX}"


def events_path(record: Path) -> Path:
    """The event log that belongs to a record (or a draft) path."""
    name = record.name
    for suffix in (DRAFT_SUFFIX, RECORD_SUFFIX):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return record.with_name(name + EVENTS_SUFFIX)


def jsonable(value: Any) -> Any:
    """A copy of `value` that json.dumps(allow_nan=False) accepts: NaN/inf -> None, numpy -> Python."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    # numpy scalars and arrays, without importing numpy here.
    if hasattr(value, "tolist"):
        return jsonable(value.tolist())
    raise TypeError(f"cannot store a {type(value).__name__} in a record: {value!r}")


def dumps(record: Mapping[str, Any]) -> str:
    return json.dumps(jsonable(record), indent=1, sort_keys=True, allow_nan=False) + "\n"


def _file_mode() -> int:
    """The mode an ordinary new file gets under the current umask (mkstemp would give 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def open_atomic(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file handle whose contents appear at `path` only once the block ends without error:
    `path` is then the old file or the complete new one, never a prefix (for outputs streamed in
    pieces, such as data files of hundreds of MB)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # The rename itself must survive a power cut, so the folder entry is synced too.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write `data` to `path` so that `path` is either absent, the old file, or the complete new one.

    With `open_atomic`, the one atomic writer of the project: records, plots, reports and data files
    all go through it.
    """
    with open_atomic(path) as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class EventLog:
    """Append-only JSON-lines event log; each line is flushed so a killed run keeps its events."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._t0 = time.perf_counter()
        self._fh: TextIO | None = None
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def emit(self, event: str, **fields: Any) -> None:
        if self._fh is None:
            return
        line = {"event": event, "utc": utc_now(), "wall_s": round(time.perf_counter() - self._t0, 6)}
        line.update(fields)
        self._fh.write(json.dumps(jsonable(line), sort_keys=True, allow_nan=False) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# One campaign at a time per results folder


class ResultsBusy(RuntimeError):
    """Another process holds the results folder's lock; the message names it."""


_held: dict[Path, list[Any]] = {}  # resolved lock path -> [open file, depth], for nested use


@contextmanager
def locked(results_dir: Path, command: str | None = None) -> Iterator[Path]:
    """Hold the exclusive lock on `results_dir` (``<results>/.lock``) for the duration of the block.

    Two campaigns writing one folder would both run every run and rename each other's records
    aside, so a second one is refused at once (ResultsBusy naming the holder's PID and command)
    instead of waiting. flock is released by the kernel when the holder dies, even by kill -9, so a
    stale lock file never blocks anyone. Nested use in one process (a suite holding the lock around
    its campaigns) is allowed.
    """
    results_dir = check_results_dir(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = (results_dir / LOCK_NAME).resolve()
    if path in _held:
        _held[path][1] += 1
        try:
            yield path
        finally:
            _held[path][1] -= 1
        return
    fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - closed in the finally below
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown process"
            raise ResultsBusy(
                f"{results_dir} is in use by another campaign ({holder}); wait for it to finish, or use "
                "another --results-dir"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}: {command or ' '.join(sys.argv)}\n")
        fh.flush()
        _held[path] = [fh, 1]
        try:
            yield path
        finally:
            del _held[path]
            fh.seek(0)
            fh.truncate()
    finally:
        fh.close()  # closing the last descriptor releases the flock
