"""Shared fixtures: the repository on sys.path, and real MNIST fetched the way a user fetches it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The repository's data folder, holding the four verified MNIST IDX files.

    Runs the user's command (``python -m study.mnist --data-dir data``): on a fresh clone it
    downloads once (a few seconds); afterwards it only verifies the MD5 sums.
    """
    data_dir = REPO / "data"
    subprocess.run([sys.executable, "-m", "study.mnist", "--data-dir", str(data_dir)], check=True, cwd=REPO)
    return data_dir


@pytest.fixture(scope="session", autouse=True)
def pyro_validation():
    """Pyro's validation checks on for the whole test session (``fit`` turns them off only inside its loop)."""
    import pyro

    pyro.enable_validation(True)
    yield
