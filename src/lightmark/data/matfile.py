"""A small, strict reader of numeric arrays in MATLAB 5 / 7 ``.mat`` files (numpy + zlib only).

``scipy.io.loadmat`` trusts the sizes and types written in a file: a corrupt *uncompressed* file
(a data tag naming an unknown type, say) crashed the whole process with SIGSEGV. This reader
checks every tag against the bytes that are really there before it reads them, and it can only
fail with :class:`~lightmark.core.errors.DataError` naming the file. It reads what lightmark's label
files need: real, dense, numeric arrays picked by name; every other variable is skipped by its
size without being parsed. Level 5 files (MATLAB 5 to 7, compressed or not, either byte order) are
read; MATLAB 4 and 7.3 (HDF5) files are refused by name.
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Iterable, Union

import numpy as np

from lightmark.core.errors import DataError

PathLike = Union[str, Path]

#: Data types of level 5 files that hold numbers, by their type code.
_NUMERIC = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
_MATRIX, _COMPRESSED = 14, 15
#: Array classes of numeric arrays (6 double ... 15 uint64); the others, by name, for messages.
_NUMERIC_CLASSES = set(range(6, 16))
_CLASS_NAMES = {1: "a cell array", 2: "a struct", 3: "an object", 4: "a character array (text)",
                5: "a sparse matrix", 16: "a function handle", 17: "an opaque object"}
#: A variable may decompress to at most this much (a label file holds kilobytes).
MAX_VARIABLE_BYTES = 64 << 20
MAX_DIMS = 32


class _Bad(Exception):
    """A structural problem; turned into a DataError naming the file by :func:`read_mat_arrays`."""


def _tag(buf: bytes, pos: int, end: int, bo: str) -> tuple[int, int, int, int]:
    """(type, nbytes, data start, next element) of the data element at ``pos``."""
    if pos + 8 > end:
        raise _Bad(f"truncated data element tag at byte {pos}")
    first = int(np.frombuffer(buf, bo + "u4", 1, pos)[0])
    if first >> 16:  # small data element: type and size in one word, data in the next 4 bytes
        typ, n = first & 0xFFFF, first >> 16
        if n > 4:
            raise _Bad(f"small data element at byte {pos} claims {n} bytes (at most 4)")
        return typ, n, pos + 4, pos + 8
    n = int(np.frombuffer(buf, bo + "u4", 1, pos + 4)[0])
    start = pos + 8
    if start + n > end:
        raise _Bad(f"data element at byte {pos} claims {n} bytes, only {end - start} remain")
    # Elements are padded to 8 bytes, except compressed ones (MATLAB writes those unpadded).
    nxt = start + n if first == _COMPRESSED else start + n + (-n % 8)
    return first, n, start, min(nxt, end)


def _numbers(buf: bytes, typ: int, n: int, start: int, bo: str, what: str) -> np.ndarray:
    if typ not in _NUMERIC:
        raise _Bad(f"{what} has data type {typ}, not a numeric type")
    dt = np.dtype(bo + _NUMERIC[typ])
    if n % dt.itemsize:
        raise _Bad(f"{what}: {n} bytes is not a whole number of {dt.name} values")
    return np.frombuffer(buf, dt, n // dt.itemsize, start)


def _matrix(buf: bytes, start: int, end: int, bo: str, wanted: set[str]
            ) -> tuple[str, Union[np.ndarray, str, None]]:
    """(name, array or the reason it is not numeric, or None when not wanted) of a miMATRIX body."""
    typ, n, s, pos = _tag(buf, start, end, bo)
    flags = _numbers(buf, typ, n, s, bo, "array flags")
    if flags.size < 2:
        raise _Bad("array flags are too short")
    word = int(flags[0])
    cls, complex_ = word & 0xFF, bool(word & 0x0800)
    typ, n, s, pos = _tag(buf, pos, end, bo)
    dims = _numbers(buf, typ, n, s, bo, "dimensions")
    if typ not in (5, 6) or not 2 <= dims.size <= MAX_DIMS or np.any(dims < 0):
        raise _Bad(f"bad dimensions {dims.tolist()[:MAX_DIMS]}")
    typ, n, s, pos = _tag(buf, pos, end, bo)
    if typ not in (1, 2):
        raise _Bad(f"array name has data type {typ}")
    try:
        name = bytes(buf[s:s + n]).decode("ascii")
    except UnicodeDecodeError:
        raise _Bad("array name is not ASCII") from None
    if name not in wanted:
        return name, None
    if cls not in _NUMERIC_CLASSES:
        return name, _CLASS_NAMES.get(cls, f"of unknown class {cls}")
    if complex_:
        return name, "complex, not real numbers"
    count = 1
    for d in dims.tolist():
        count *= int(d)
    typ, n, s, pos = _tag(buf, pos, end, bo)
    data = _numbers(buf, typ, n, s, bo, f"{name!r}")
    if data.size != count:
        raise _Bad(f"{name!r} should hold {count} values ({'x'.join(map(str, dims.tolist()))}), "
                   f"has {data.size}")
    shape = tuple(int(d) for d in dims)
    return name, data.astype(np.float64).reshape(shape, order="F")  # MATLAB is column-major


def _inflate(data: bytes, limit: int) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, limit)
    except zlib.error as e:
        raise _Bad(f"compressed variable does not decompress ({e})") from None
    if d.unconsumed_tail:
        raise _Bad(f"a compressed variable is larger than {limit >> 20} MB")
    return out


def _header_name(prefix: bytes, bo: str) -> str:
    """The variable name at the start of a decompressed element ("" if it is not a matrix)."""
    if len(prefix) < 8:
        raise _Bad("compressed variable is truncated")
    if int(np.frombuffer(prefix, bo + "u4", 1, 0)[0]) != _MATRIX:
        return ""
    name, _ = _matrix(prefix, 8, len(prefix), bo, set())
    return name


def read_mat_arrays(path: PathLike, names: Iterable[str]) -> dict[str, Union[np.ndarray, str]]:
    """The variables ``names`` of a level 5 ``.mat`` file that are present: each a float64 array,
    or, for a variable that is there but not a real numeric array, a phrase saying what it is.

    Raises :class:`DataError` naming the file for anything malformed.
    """
    p = Path(path)
    wanted = set(names)
    try:
        buf = p.read_bytes()
    except OSError as e:
        raise DataError(f"{p}: cannot read .mat file ({e.strerror or e})") from None
    if len(buf) < 128:
        raise DataError(f"{p}: garbled or truncated .mat file ({len(buf)} bytes, less than its header)")
    text, version, endian = buf[:116], buf[124:126], buf[126:128]
    if text.startswith(b"MATLAB 7.3") or buf[:8] == b"\x89HDF\r\n\x1a\n" or buf[512:520] == b"\x89HDF\r\n\x1a\n":
        raise DataError(f"{p}: MATLAB 7.3 (HDF5) .mat files are not supported; save it with -v7")
    if endian not in (b"IM", b"MI") or not text.startswith(b"MATLAB"):
        raise DataError(f"{p}: garbled or truncated .mat file (no MATLAB 5/7 header; MATLAB 4 "
                        "files are not supported)")
    bo = "<" if endian == b"IM" else ">"
    if int(np.frombuffer(version, bo + "u2")[0]) != 0x0100:
        raise DataError(f"{p}: garbled or truncated .mat file (unknown version {version!r})")
    out: dict[str, Union[np.ndarray, str]] = {}
    pos, end = 128, len(buf)
    try:
        while pos < end and len(out) < len(wanted):
            if end - pos < 8 and not any(buf[pos:end]):
                break  # trailing padding
            typ, n, s, nxt = _tag(buf, pos, end, bo)
            if typ == _COMPRESSED:
                # Read the name from the start only; inflate the whole variable only if wanted.
                if _header_name(_inflate_prefix(buf[s:s + n]), bo) in wanted:
                    body = _inflate(buf[s:s + n], MAX_VARIABLE_BYTES)
                    btyp, bn, bs, _ = _tag(body, 0, len(body), bo)
                    if btyp == _MATRIX:
                        name, value = _matrix(body, bs, bs + bn, bo, wanted)
                        if value is not None:
                            out.setdefault(name, value)
            elif typ == _MATRIX:
                name, value = _matrix(buf, s, s + n, bo, wanted)
                if value is not None:
                    out.setdefault(name, value)
            pos = nxt
    except _Bad as e:
        raise DataError(f"{p}: garbled or truncated .mat file ({e})") from None
    return out


def _inflate_prefix(data: bytes, size: int = 4096) -> bytes:
    """The first ``size`` decompressed bytes (enough for a variable's header and name)."""
    d = zlib.decompressobj()
    try:
        return d.decompress(data, size)
    except zlib.error as e:
        raise _Bad(f"compressed variable does not decompress ({e})") from None
