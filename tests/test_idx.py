"""study.idx: IDX reading and writing, error messages for bad files, atomic writes, MD5."""

from __future__ import annotations

import gzip
import hashlib
import os

import numpy as np
import pytest

import study.idx
from study.errors import UserError
from study.idx import idx_bytes, md5_of_uncompressed, read_idx, write_atomically, write_idx

LABELS = np.array([3, 8, 0, 255, 9], dtype=np.uint8)
LABELS_HEADER = bytes.fromhex("00000801" "00000005")
IMAGES = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 10
IMAGES_HEADER = bytes.fromhex("00000803" "00000002" "00000003" "00000004")


def file_content(path) -> bytes:
    raw = path.read_bytes()
    return gzip.decompress(raw) if str(path).endswith(".gz") else raw


# --- round trip -------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize(
    "array, header",
    [(LABELS, LABELS_HEADER), (IMAGES, IMAGES_HEADER)],
    ids=["labels-1d", "images-3d"],
)
def test_round_trip_and_exact_header(tmp_path, array, header, suffix):
    path = tmp_path / f"data-idx{suffix}"
    write_idx(path, array)
    content = file_content(path)
    assert content[: len(header)] == header
    assert content[len(header):] == array.tobytes()
    assert len(content) == len(header) + array.size
    back = read_idx(path)
    assert back.dtype == np.uint8
    assert back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_gz_file_is_really_compressed(tmp_path):
    path = tmp_path / "labels.gz"
    write_idx(path, LABELS)
    assert path.read_bytes()[:2] == b"\x1f\x8b"  # gzip magic
    plain = tmp_path / "labels"
    write_idx(plain, LABELS)
    assert plain.read_bytes()[:4] == bytes.fromhex("00000801")


def test_read_handwritten_file(tmp_path):
    """A file built byte by byte (not by write_idx) reads as the expected array."""
    path = tmp_path / "two-by-two"
    path.write_bytes(bytes.fromhex("00000802" "00000002" "00000002") + bytes([1, 2, 3, 250]))
    np.testing.assert_array_equal(read_idx(path), np.array([[1, 2], [3, 250]], dtype=np.uint8))


def test_idx_bytes_rejects_wrong_dtype_and_rank():
    with pytest.raises(ValueError):
        idx_bytes(np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError):
        idx_bytes(np.zeros((1, 1, 1, 1), dtype=np.uint8))
    with pytest.raises(ValueError):
        idx_bytes(np.zeros((), dtype=np.uint8))


# --- bad files ----------------------------------------------------------------------------------

GOOD_LABELS = LABELS_HEADER + LABELS.tobytes()

BAD_FILES = {
    "empty": b"",
    "header-shorter-than-4-bytes": b"\x00\x00\x08",
    "float-type-code-0x0D": bytes.fromhex("00000d01" "00000005") + bytes(20),
    "nonzero-first-bytes": bytes.fromhex("01000801" "00000005") + LABELS.tobytes(),
    "zero-dimensions": bytes.fromhex("00000800"),
    "four-dimensions": bytes.fromhex("00000804" "00000001" "00000001" "00000001" "00000001") + b"\x00",
    "truncated-sizes": bytes.fromhex("00000803" "00000002"),
    "truncated-data": GOOD_LABELS[:-1],
    "extra-trailing-bytes": GOOD_LABELS + b"\x00",
}


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_file_raises_user_error_naming_path(tmp_path, name, suffix):
    path = tmp_path / f"bad-{name}{suffix}"
    content = BAD_FILES[name]
    path.write_bytes(gzip.compress(content) if suffix else content)
    with pytest.raises(UserError) as excinfo:
        read_idx(path)
    message = str(excinfo.value)
    assert str(path) in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "name, needle",
    [
        ("empty", "empty"),
        ("float-type-code-0x0D", "0x00000d01"),
        ("nonzero-first-bytes", "0x01000801"),
        ("truncated-data", "file holds 4"),
        ("extra-trailing-bytes", "file holds 6"),
    ],
)
def test_bad_file_message_says_what_is_wrong(tmp_path, name, needle):
    path = tmp_path / "f"
    path.write_bytes(BAD_FILES[name])
    with pytest.raises(UserError, match=needle):
        read_idx(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere" / "train-labels-idx1-ubyte"
    with pytest.raises(UserError, match="not found") as excinfo:
        read_idx(path)
    assert str(path) in str(excinfo.value)


def _corrupt_deflate(good: bytes) -> bytes:
    # Keep the 10-byte gzip header, then bytes whose first block has the invalid type 0b11.
    return good[:10] + b"\xff" * 20


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda good: b"this is not gzip data", id="not-gzip"),
        pytest.param(lambda good: good[:-12], id="truncated-stream"),
        pytest.param(lambda good: good[:-8] + bytes(8), id="bad-crc"),
        pytest.param(
            _corrupt_deflate,
            id="corrupt-deflate-stream",
        ),
    ],
)
def test_corrupt_gz(tmp_path, corrupt):
    good = gzip.compress(GOOD_LABELS)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(corrupt(good))
    with pytest.raises(UserError) as excinfo:
        read_idx(path)
    assert str(path) in str(excinfo.value)


# --- atomic writes ---------------------------------------------------------------------------------


def test_write_atomically_leaves_only_the_target(tmp_path):
    target = tmp_path / "out.bin"
    write_atomically(target, b"hello")
    assert target.read_bytes() == b"hello"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
    write_atomically(target, b"replaced")
    assert target.read_bytes() == b"replaced"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_write_idx_leaves_only_the_target(tmp_path):
    write_idx(tmp_path / "a.gz", IMAGES)
    write_idx(tmp_path / "b", LABELS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gz", "b"]


def test_failed_rename_leaves_nothing(tmp_path, monkeypatch):
    seen = []

    def failing_replace(source, destination):
        seen.append(os.path.exists(source))  # the temporary file was written...
        raise OSError("disk on fire")

    monkeypatch.setattr(study.idx.os, "replace", failing_replace)
    target = tmp_path / "out.bin"
    with pytest.raises(OSError, match="disk on fire"):
        write_atomically(target, b"payload")
    assert seen == [True]
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


class ExplodingPayload:
    """Not a bytes-like object: writing it to a binary file raises TypeError."""


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(TypeError):
        write_atomically(target, ExplodingPayload())
    assert not target.exists()
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_previous_content(tmp_path, monkeypatch):
    target = tmp_path / "out.bin"
    write_atomically(target, b"old")

    def failing_replace(source, destination):
        raise OSError("no")

    monkeypatch.setattr(study.idx.os, "replace", failing_replace)
    with pytest.raises(OSError):
        write_atomically(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


# --- MD5 ---------------------------------------------------------------------------------------------


def test_md5_same_for_file_and_gz_twin(tmp_path):
    plain, packed = tmp_path / "images", tmp_path / "images.gz"
    write_idx(plain, IMAGES)
    write_idx(packed, IMAGES)
    assert plain.read_bytes() != packed.read_bytes()
    expected = hashlib.md5(IMAGES_HEADER + IMAGES.tobytes()).hexdigest()
    assert md5_of_uncompressed(plain) == expected
    assert md5_of_uncompressed(packed) == expected


def test_md5_differs_for_different_content(tmp_path):
    write_idx(tmp_path / "a", IMAGES)
    write_idx(tmp_path / "b", IMAGES + 1)
    assert md5_of_uncompressed(tmp_path / "a") != md5_of_uncompressed(tmp_path / "b")


def test_md5_of_large_file_spans_blocks(tmp_path):
    """More than one 1 MiB read block: the digest still covers the whole content."""
    payload = np.random.default_rng(0).integers(0, 256, size=(3 << 20) + 17, dtype=np.uint8).tobytes()
    (tmp_path / "big").write_bytes(payload)
    (tmp_path / "big.gz").write_bytes(gzip.compress(payload, compresslevel=1))
    expected = hashlib.md5(payload).hexdigest()
    assert md5_of_uncompressed(tmp_path / "big") == expected
    assert md5_of_uncompressed(tmp_path / "big.gz") == expected
