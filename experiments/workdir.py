"""A workdir bound to its config, held by one process, written crash-consistently.

- :func:`write` writes a file atomically (a temporary file in the same folder, then ``os.replace``), with the
  permissions the user's umask gives (``0644`` under the usual ``022``), never the ``0600`` of a bare temporary.
- :func:`to_json` writes strict JSON: a non-finite float becomes ``null`` (the caller keeps a flag beside it), and
  anything else that JSON can't hold is an error rather than ``NaN``/``Infinity``.
- :class:`Workdir` takes an exclusive lock (filelock's: an ``flock`` on POSIX) on ``workdir/.lock`` (a second
  process is refused with the pid and host of the holder) and binds the folder to a config: ``config.json``, with
  a hash of everything that changes the result, is written before anything else, and a later run with another
  config is refused, naming the keys that differ, unless it passes ``overwrite=True``.

Only the coordinating process (``jax.process_index() == 0``) of a multi-process run writes or locks; the others
only read.
"""

from __future__ import annotations

import datetime
import errno
import functools
import hashlib
import json
import logging
import math
import os
import pathlib
import shutil
import socket
import tempfile
from typing import Any

import filelock

CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"
# Keys that change no number of the result (only how often the state is saved), left out of the hash.
NOT_HASHED = ("train.checkpoint_every",)


@functools.cache
def umask() -> int:
    """The process's umask, read once (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _file_mode() -> int:
    return 0o666 & ~umask()


def _replace(source: str, target: pathlib.Path) -> None:
    """``os.replace``: the one point where a written file appears (the fault-injection tests stop here)."""
    os.replace(source, target)


def appended(path: pathlib.Path) -> None:
    """The point where records appended under ``path`` (a run's TensorBoard events) have been flushed: nothing to
    do, but the fault-injection tests stop here too."""


def write(path: str | os.PathLike, data: bytes | str) -> None:
    """Writes ``data`` to ``path`` atomically: a reader (or a rerun after a crash) sees the old file or the new one."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        _replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


CHECKPOINT_MAGIC = b"gated checkpoint, sha256:"


def previous_of(path: pathlib.Path) -> pathlib.Path:
    """Where the checkpoint before ``path`` is kept: ``checkpoint.msgpack`` -> ``checkpoint.previous.msgpack``."""
    return path.with_name(f"{path.stem}.previous{path.suffix}")


def write_keeping_previous(path: str | os.PathLike, data: bytes) -> None:
    """Writes a checkpoint with the checksum of its bytes, and keeps the one it replaces as :func:`previous_of`, so
    that a checkpoint damaged later (a truncated or corrupted file) leaves the one before it to resume from."""
    path = pathlib.Path(path)
    if path.exists():
        _replace(path, previous_of(path))
    write(path, CHECKPOINT_MAGIC + hashlib.sha256(data).digest() + data)


def has_checkpoint(path: str | os.PathLike) -> bool:
    path = pathlib.Path(path)
    return path.exists() or previous_of(path).exists()


def read_checkpoint(path: str | os.PathLike) -> bytes:
    """The bytes of the newest whole checkpoint: ``path``, or the one before it where ``path`` is missing (a kill
    between the two writes) or damaged (its checksum does not match).

    Raises:
      WorkdirError: neither is whole; the message names both files and what is wrong with each.
    """
    path = pathlib.Path(path)
    problems = []
    for candidate in (path, previous_of(path)):
        if not candidate.exists():
            problems.append(f"{str(candidate)!r} is missing")
            continue
        raw = candidate.read_bytes()
        head, digest = raw[: len(CHECKPOINT_MAGIC)], raw[len(CHECKPOINT_MAGIC) : len(CHECKPOINT_MAGIC) + 32]
        data = raw[len(CHECKPOINT_MAGIC) + 32 :]
        if head == CHECKPOINT_MAGIC and len(digest) == 32 and hashlib.sha256(data).digest() == digest:
            if problems:
                logging.warning("checkpoint: %s; resuming from %s", problems[0], candidate)
            return data
        problems.append(f"{str(candidate)!r} is damaged ({len(raw)} bytes, its checksum does not match)")
    raise WorkdirError(f"no whole checkpoint to resume from: {'; '.join(problems)}; pass --overwrite to start afresh")


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _map_leaves(fn, v: Any) -> Any:
    """``fn`` on every leaf of nested dicts, lists and tuples (tuples become lists, as in JSON)."""
    if isinstance(v, dict):
        return {k: _map_leaves(fn, x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_map_leaves(fn, x) for x in v]
    return fn(v)


def to_json(value: Any, indent: int | None = 2) -> str:
    """Strict JSON (RFC 8259): non-finite floats become ``null``; the caller records which were not finite."""
    clean = _map_leaves(lambda v: finite_or_none(v) if isinstance(v, float) else v, value)
    return json.dumps(clean, indent=indent, allow_nan=False)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: tree}


def spelled(v: Any) -> Any:
    """Non-finite floats as the strings "inf", "-inf", "nan" (a study may sweep ``inf`` as "no clipping")."""
    return _map_leaves(lambda x: str(x) if isinstance(x, float) and not math.isfinite(x) else x, v)


def unspelled(v: Any) -> Any:
    """The inverse of :func:`spelled`: the strings "inf", "-inf" and "nan" as floats."""
    return _map_leaves(lambda x: float(x) if isinstance(x, str) and x in ("inf", "-inf", "nan") else x, v)


def _hashed(key: str, value: Any) -> bool:
    """Whether a flattened config key changes the result: all but :data:`NOT_HASHED` and the cell options left
    unset (None: the cell's default), so that a cell option added to gated binds no existing workdir anew."""
    return key not in NOT_HASHED and not (key.startswith("model.options.") and value is None)


def binding(config: dict, extra: dict | None = None) -> dict:
    """What ``config.json`` holds: the config (and e.g. a sweep's entries) and the hash of what changes the result.
    Non-finite numbers in them are spelled as strings."""
    config, extra = spelled(config), spelled(extra or {})
    hashed = {k: v for k, v in flatten(config).items() if _hashed(k, v)}
    payload = json.dumps({"config": hashed, **extra}, sort_keys=True, allow_nan=False)
    return {"hash": hashlib.sha256(payload.encode()).hexdigest(), "config": config, **extra}


def differences(old: dict, new: dict) -> list[str]:
    """The keys whose values differ between two bindings, as ``key: old -> new``."""
    a = {k: v for k, v in flatten(old).items() if k != "hash" and _hashed(k.removeprefix("config."), v)}
    b = {k: v for k, v in flatten(new).items() if k != "hash" and _hashed(k.removeprefix("config."), v)}
    return [
        f"{k.removeprefix('config.')}: {a.get(k, '(absent)')!r} -> {b.get(k, '(absent)')!r}"
        for k in sorted(a.keys() | b.keys())
        if a.get(k) != b.get(k)
    ]


class WorkdirError(RuntimeError):
    """A workdir that is held by another process, bound to another config, damaged or not writable."""


def describe(err: OSError) -> str:
    """An operating-system error in one line that names the path and what to do."""
    what = {
        errno.EACCES: "check its permissions",
        errno.EPERM: "check its permissions",
        errno.EROFS: "it is on a read-only file system",
        errno.ENOSPC: "free some space on its disk",
        errno.ENOTDIR: "a part of the path is a file, not a folder",
        errno.EEXIST: "a part of the path is a file, not a folder",
    }.get(err.errno, "check the path")
    name = f" {str(err.filename)!r}" if err.filename else ""
    return f"cannot write{name}: {err.strerror or err}; {what}"


class Workdir:
    """``with Workdir(path, binding(...), overwrite=...) as w:`` holds ``path`` for one run or sweep.

    Args:
      path: the folder (created if missing).
      bound: :func:`binding` of the config about to run.
      overwrite: start afresh: delete what the folder holds (under the lock) before binding it.
      writer: whether this process writes (process 0 of a multi-process run); the others neither lock, bind nor
        write.
    """

    def __init__(self, path: str | os.PathLike, bound: dict, overwrite: bool = False, writer: bool = True):
        self.path, self.bound, self.overwrite, self.writer = pathlib.Path(path), bound, overwrite, writer
        self._lock = None

    def __enter__(self) -> Workdir:
        if not self.writer:
            return self
        if self.path.exists() and not self.path.is_dir():
            raise WorkdirError(f"workdir {str(self.path)!r} is a file, not a folder; choose another workdir")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._acquire()
        except OSError as err:
            raise WorkdirError(f"workdir {str(self.path)!r}: {describe(err)}") from None
        try:
            if self.overwrite:
                for p in self.path.iterdir():
                    if p.name != LOCK_FILE:
                        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            for tmp in self.path.rglob(".*.tmp"):  # what a killed writer (see write) left half written
                tmp.unlink()
            self._bind()
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._release()

    def _acquire(self) -> None:
        lock = filelock.FileLock(self.path / LOCK_FILE, mode=_file_mode(), blocking=False)
        try:
            lock.acquire()
        except filelock.Timeout:
            holder = (self.path / LOCK_FILE).read_text(errors="replace").strip() or "another process"
            raise WorkdirError(
                f"workdir {str(self.path)!r} is in use by {holder}; wait for it to finish or stop it"
            ) from None
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        (self.path / LOCK_FILE).write_text(f"process {os.getpid()} on {socket.gethostname()} (since {started})\n")
        self._lock = lock

    def _release(self) -> None:
        if self._lock is not None:
            (self.path / LOCK_FILE).write_text("")
            self._lock.release()
            self._lock = None

    def _bind(self) -> None:
        path = self.path / CONFIG_FILE
        if path.exists():
            try:
                old = json.loads(path.read_text())
            except ValueError:  # JSONDecodeError, UnicodeDecodeError
                old = None
            if not isinstance(old, dict):
                raise WorkdirError(
                    f"workdir {str(self.path)!r}: its {CONFIG_FILE} is damaged (not the JSON object gated writes); "
                    "choose a new workdir, or pass --overwrite to delete it and start afresh"
                )
            # the stored config hashed anew: a workdir bound before a cell option was added (unset there) still binds
            extra = {k: v for k, v in old.items() if k not in ("hash", "config")}
            rehashed = binding(old["config"], extra)["hash"] if isinstance(old.get("config"), dict) else None
            if "hash" not in old or rehashed != self.bound["hash"]:
                diff = differences(old, self.bound) if "hash" in old else ["(written without a hash by older code)"]
                raise WorkdirError(
                    f"workdir {str(self.path)!r} holds a run of another config ({'; '.join(diff)}); "
                    "choose a new workdir, or pass --overwrite to delete it and start afresh"
                )
            return
        if any(not p.name.startswith(".") for p in self.path.iterdir()):  # a crash's leftover temporaries are hidden
            raise WorkdirError(
                f"workdir {str(self.path)!r} is not empty and has no {CONFIG_FILE}; choose a new workdir, or pass "
                "--overwrite to delete what it holds"
            )
        write(path, to_json(self.bound))
