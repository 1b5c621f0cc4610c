"""MNIST-format data: loading a split and building the study's data selections.

A *selection* says which images of a split a run uses and with which labels. Every selection
is a pure function of (split, selection): the same inputs always give the same indices and
labels.

- ``first_n``: the first n images, in dataset order (after the digit filter, if any).
- ``digits``: keep the images whose label is in the list and relabel them by position,
  e.g. ``digits=(3, 8)`` maps 3 -> class 0 and 8 -> class 1.
- ``random_labels``: replace the labels by Bernoulli(1/2) draws (a binary task). The draws
  come from a generator seeded by ``(label_seed, split)``, so training and test labels are
  independent streams and the same seed always gives the same labels.

The test selection that matches a training selection (``matching_test_selection``) keeps the
digit filter and drops ``first_n`` (all test images of those digits). For random labels the
test images get their own fresh Bernoulli(1/2) labels: nothing about them can be learned from
the training set, so the honest expectation of test accuracy is 50%.

Normalisation: ``unit`` maps bytes to [0, 1] (x / 255); ``standard`` then subtracts the
training-pixel mean 0.1307 and divides by the standard deviation 0.3081 (MNIST's constants,
used for every data set so that a model sees inputs on the scale it was trained on).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from study.errors import UserError
from study.idx import md5_of_uncompressed, read_idx
from study.mnist import FETCH_COMMAND, FILES, LAYOUTS, MD5, TRAIN_PIXEL_MEAN, TRAIN_PIXEL_STD, locate_idx_file

SPLITS = ("train", "test")
NORMALIZATIONS = ("unit", "standard")
_SPLIT_STREAM = {"train": 0, "test": 1}


@dataclass(frozen=True)
class Split:
    """One split of an MNIST-format data set, as stored on disk."""

    name: str  # "train" or "test"
    images: np.ndarray  # (N, 28, 28) uint8
    labels: np.ndarray  # (N,) uint8
    source: str  # human-readable origin, e.g. "data/ (MNIST, MD5 verified)"
    is_mnist: bool  # True when the files are byte-identical to MNIST's

    def __len__(self) -> int:
        return len(self.labels)


def load_split(data_dir: str | Path, split: str, require_mnist: bool = False) -> Split:
    """Load the images and labels of ``split`` from an IDX data folder.

    Files may be plain or ``.gz``, flat in ``data_dir`` or in torchvision's ``MNIST/raw/``
    layout. When the files are MNIST's (MD5 match) the split is marked verified; other data
    sets of the same format (Fashion-MNIST, KMNIST) load too, with checksums skipped.

    :param data_dir: the folder holding the IDX files.
    :param split: ``"train"`` or ``"test"``.
    :param require_mnist: when True, a checksum mismatch is an error instead of a note.
    :raises UserError: missing folder or files, bad files, checksum mismatch (if required).
    """
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"data folder {data_dir}/ does not exist; fetch MNIST with: {FETCH_COMMAND}")
    paths = {}
    for kind in ("images", "labels"):
        name = FILES[(split, kind)]
        path = locate_idx_file(data_dir, name)
        if path is None:
            places = ", ".join(str(data_dir / layout / name) + "[.gz]" for layout in LAYOUTS)
            raise UserError(f"{name} not found in {data_dir}/ (looked for {places}); "
                            f"fetch MNIST with: {FETCH_COMMAND}")
        paths[kind] = path
    images, labels = read_idx(paths["images"]), read_idx(paths["labels"])
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise UserError(f"{paths['images']}: expected images of shape (N, 28, 28), got {images.shape}")
    if labels.ndim != 1:
        raise UserError(f"{paths['labels']}: expected a 1-D label file, got shape {labels.shape}")
    if len(images) != len(labels):
        raise UserError(f"{paths['images'].parent}/: {len(images)} images but {len(labels)} labels")
    if len(labels) == 0:
        raise UserError(f"{paths['labels']}: holds no examples")
    if labels.max() > 9:
        raise UserError(f"{paths['labels']}: label {int(labels.max())} outside 0-9")
    is_mnist = all(md5_of_uncompressed(p) == MD5[FILES[(split, k)]] for k, p in paths.items())
    if not is_mnist and require_mnist:
        raise UserError(f"{paths['images'].parent}/: the {split} files do not have MNIST's MD5 sums; "
                        f"delete them and fetch again with: {FETCH_COMMAND}")
    note = "MNIST, MD5 verified" if is_mnist else "not MNIST's files: checksums skipped"
    return Split(split, images, labels, f"{paths['images'].parent}/ ({note})", is_mnist)


@dataclass(frozen=True)
class Selection:
    """Which images of a split are used, and with which labels.

    :param digits: keep only these labels, relabelled 0..k-1 in the order given; None = all.
    :param first_n: keep the first n images (after the digit filter); None = all of them.
    :param random_labels: replace the labels by Bernoulli(1/2) draws (binary task).
    :param label_seed: seed of the random labels (ignored unless ``random_labels``).
    """

    digits: tuple[int, ...] | None = None
    first_n: int | None = None
    random_labels: bool = False
    label_seed: int = 0

    def __post_init__(self):
        if self.digits is not None:
            digits = tuple(int(d) for d in self.digits)
            object.__setattr__(self, "digits", digits)
            if any(d < 0 or d > 9 for d in digits):
                raise UserError(f"digits must lie in 0-9, got {list(digits)}")
            if len(set(digits)) != len(digits) or len(digits) < 2:
                raise UserError(f"a digit subset needs at least two distinct digits, got {list(digits)}")
        if self.label_seed < 0:
            raise UserError(f"the label seed must be a non-negative integer, got {self.label_seed}")
        if self.first_n is not None and self.first_n <= 0:
            raise UserError(f"the number of images must be positive, got {self.first_n}")

    @property
    def num_classes(self) -> int:
        if self.random_labels:
            return 2
        return len(self.digits) if self.digits is not None else 10

    def describe(self) -> str:
        parts = [f"first {self.first_n}" if self.first_n else "all"]
        parts.append("images labelled " + " or ".join(map(str, self.digits)) if self.digits else "images")
        if self.random_labels:
            parts.append(f"with Bernoulli(1/2) labels (seed {self.label_seed})")
        return " ".join(parts)

    def to_dict(self) -> dict:
        return {"digits": list(self.digits) if self.digits else None, "first_n": self.first_n,
                "random_labels": self.random_labels, "label_seed": self.label_seed}

    @classmethod
    def from_dict(cls, values: dict) -> Selection:
        digits = values.get("digits")
        return cls(tuple(digits) if digits else None, values.get("first_n"),
                   bool(values.get("random_labels", False)), int(values.get("label_seed", 0)))


def matching_test_selection(train: Selection) -> Selection:
    """The test selection that matches a training selection (see the module docstring)."""
    return dataclasses.replace(train, first_n=None)


def select(split: Split, selection: Selection) -> tuple[np.ndarray, np.ndarray]:
    """Indices into ``split`` and the labels (int64) of ``selection``; a pure function."""
    indices = np.arange(len(split))
    labels = split.labels.astype(np.int64)
    if selection.digits is not None:
        keep = np.isin(labels, selection.digits)
        indices = indices[keep]
        relabel = np.full(10, -1, dtype=np.int64)
        relabel[list(selection.digits)] = np.arange(len(selection.digits))
        labels = relabel[labels[keep]]
    if selection.first_n is not None:
        if selection.first_n > len(indices):
            raise UserError(f"asked for the first {selection.first_n} images of "
                            f"'{selection.describe()}' but the {split.name} split holds {len(indices)}")
        indices, labels = indices[: selection.first_n], labels[: selection.first_n]
    if len(indices) == 0:
        raise UserError(f"'{selection.describe()}' selects no {split.name} images")
    if selection.random_labels:
        rng = np.random.default_rng([selection.label_seed, _SPLIT_STREAM[split.name]])
        labels = rng.integers(0, 2, size=len(indices), dtype=np.int64)
    return indices, labels


def to_tensors(split: Split, indices: np.ndarray, labels: np.ndarray, normalization: str = "standard",
               device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Flattened, normalised float32 inputs ``(n, 784)`` and int64 labels ``(n,)``."""
    if normalization not in NORMALIZATIONS:
        raise UserError(f"unknown normalisation {normalization!r}; choose from {', '.join(NORMALIZATIONS)}")
    x = torch.from_numpy(split.images[indices].reshape(len(indices), -1).astype(np.float32) / 255.0)
    if normalization == "standard":
        x = (x - TRAIN_PIXEL_MEAN) / TRAIN_PIXEL_STD
    return x.to(device), torch.from_numpy(labels).to(device)


def load_selection(data_dir: str | Path, split: str, selection: Selection, normalization: str = "standard",
                   device: str | torch.device = "cpu", require_mnist: bool = False):
    """Load a split and return ``(x, y, split)`` for a selection; the usual entry point."""
    data = load_split(data_dir, split, require_mnist=require_mnist)
    indices, labels = select(data, selection)
    x, y = to_tensors(data, indices, labels, normalization, device)
    return x, y, data
