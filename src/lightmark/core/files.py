"""Atomic file writes and checksums: nothing half-written is ever left at a final path.

A write goes to a hidden temporary beside the final file, named ``.NAME.HOST-PID.RANDOM.tmp``,
and replaces the final file in one rename. A process killed mid-write (SIGKILL, power loss) leaves
only such a temporary; the next write into the same folder by any lightmark process removes the
temporaries whose writer (same host, that pid) no longer runs.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import socket
import tempfile
import threading
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, Path]

_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32] or "host"
_TMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9-]+)-(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")
_swept: set[str] = set()  # folders this process has already cleaned (one listing per folder)
_sweep_lock = threading.Lock()

# Test hook for fault injection: with LIGHTMARK_TEST_KILL_AT_WRITE=k the process SIGKILLs itself
# at the k-th write step (a temporary written, a file replaced, a pointer switched). Zero: off.
_KILL_AT = int(os.environ.get("LIGHTMARK_TEST_KILL_AT_WRITE", "0") or 0)
_write_steps = 0


def write_step() -> None:
    """Count one step of a multi-file write; the fault-injection hook kills the process here."""
    global _write_steps
    if not _KILL_AT:
        return
    _write_steps += 1
    if _write_steps == _KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def clean_stale_temporaries(folder: PathLike) -> list[Path]:
    """Remove the temporaries of writers on this host that no longer run; returns what was removed."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for e in entries:
        m = _TMP_NAME.match(e.name) if e.name.endswith(".tmp") else None
        if m is None or m["host"] != _HOST or _pid_alive(int(m["pid"])):
            continue
        try:
            if e.is_dir(follow_symlinks=False):
                import shutil

                shutil.rmtree(e.path, ignore_errors=True)
            else:
                os.unlink(e.path)
            removed.append(Path(e.path))
        except OSError:
            pass  # gone already, or not ours to remove
    return removed


def _sweep_once(folder: Path) -> None:
    key = str(folder.resolve())
    with _sweep_lock:
        if key in _swept:
            return
        _swept.add(key)
    clean_stale_temporaries(folder)


def temp_name(final: Path) -> str:
    """The prefix of a temporary for ``final`` (``mkstemp`` adds the random part and ``.tmp``)."""
    return f".{final.name}.{_HOST}-{os.getpid()}."


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _renamed(e: OSError, final: Path) -> OSError:
    """The same error, naming the final path instead of the temporary."""
    out = type(e)(e.errno, e.strerror or str(e), str(final)) if e.errno else OSError(f"{final}: {e}")
    return out


@contextlib.contextmanager
def atomic_path(path: PathLike, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step.

    ``fsync``: flush the file and the folder to disk too (checkpoints; not worth it per photo).
    Errors name ``path``, never the temporary.
    """
    final = Path(path)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        _sweep_once(final.parent)
        fd, tmp = tempfile.mkstemp(prefix=temp_name(final), suffix=".tmp", dir=final.parent)
        os.close(fd)
    except OSError as e:
        raise _renamed(e, final) from None
    tmp_path = Path(tmp)
    # Files get the permissions a plain open() would give (mkstemp makes them 0600).
    umask = os.umask(0)
    os.umask(umask)
    try:
        try:
            yield tmp_path
        except OSError as e:
            raise _renamed(e, final) from None
        try:
            # After the writer: some (safetensors) replace the file and make it private again.
            os.chmod(tmp_path, 0o666 & ~umask)
            if fsync:
                with open(tmp_path, "rb+") as f:
                    os.fsync(f.fileno())
            write_step()
            os.replace(tmp_path, final)
            write_step()
            if fsync:
                _fsync_dir(final.parent)
        except OSError as e:
            raise _renamed(e, final) from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: PathLike, data: bytes, fsync: bool = False) -> None:
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)


def write_text(path: PathLike, text: str, fsync: bool = False) -> None:
    write_bytes(path, text.encode("utf-8"), fsync=fsync)


def sha256(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
