"""Reading and writing IDX files (the format of MNIST, Fashion-MNIST and KMNIST).

An IDX file starts with a 4-byte magic number: two zero bytes, a type code (0x08 = unsigned
byte, the only type these data sets use) and the number of dimensions; then one big-endian
uint32 per dimension; then the values in C order. Files may be gzip-compressed (``.gz``).

Reference: Y. LeCun, C. Cortes, C. Burges, "The MNIST database of handwritten digits".
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from study.errors import UserError

UBYTE = 0x08


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file of unsigned bytes (plain or ``.gz``) into a uint8 array.

    :param path: the file.
    :raises UserError: on a missing, empty, truncated or malformed file.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as error:
        raise UserError(f"{path}: cannot read ({error})") from None
    if len(raw) == 0:
        raise UserError(f"{path}: file is empty")
    if len(raw) < 4:
        raise UserError(f"{path}: truncated IDX file ({len(raw)} bytes, no header)")
    zero, type_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or type_code != UBYTE or not 1 <= ndim <= 3:
        raise UserError(
            f"{path}: not an IDX file of unsigned bytes (magic number 0x{raw[:4].hex()}, "
            "expected 0x00000801 for labels or 0x00000803 for images)"
        )
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise UserError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header_size])
    expected = int(np.prod(shape, dtype=np.int64))
    actual = len(raw) - header_size
    if actual != expected:
        raise UserError(
            f"{path}: truncated or padded IDX file: header says {shape} = {expected} values, "
            f"file holds {actual}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array with 1 to 3 dimensions."""
    if array.dtype != np.uint8 or not 1 <= array.ndim <= 3:
        raise ValueError("idx_bytes expects a uint8 array with 1 to 3 dimensions")
    header = struct.pack(">HBB", 0, UBYTE, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def write_atomically(path: str | os.PathLike, payload: bytes) -> None:
    """Write bytes to ``path`` through a temporary name in the same folder, then rename.

    A reader never sees a half-written file; an interrupted write leaves no file at ``path``.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzip-compressed when the name ends in ``.gz``)."""
    payload = idx_bytes(array)
    if str(path).endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)
    write_atomically(path, payload)


def md5_of_uncompressed(path: str | os.PathLike) -> str:
    """MD5 of a file's content, after gunzip when its name ends in ``.gz``.

    A ``.gz`` file that cannot be decompressed gets the digest ``"unreadable"``.
    """
    digest = hashlib.md5()
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except (EOFError, zlib.error, gzip.BadGzipFile):
        return "unreadable"
    return digest.hexdigest()
