"""The one place that writes result files. Every write goes to a temporary name in the same
folder and is renamed into place, so an interrupted run never leaves a half-written file."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

import torch


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _replace(temporary: Path, path: Path) -> None:
    try:
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary(path)
    try:
        temporary.write_text(text, encoding="utf-8")
        _replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def _json_safe(value):
    """Plain JSON values; NaN and infinities become null (JSON has no such numbers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _json_safe(value.tolist())
    return value


def write_json(path: str | os.PathLike, payload) -> Path:
    return write_text(path, json.dumps(_json_safe(payload), indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_csv(path: str | os.PathLike, rows: list[dict]) -> Path:
    """Rows of dicts as CSV; the header is the union of keys in first-seen order."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return write_text(path, buffer.getvalue())


def save_torch(path: str | os.PathLike, payload: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary(path)
    try:
        torch.save(payload, temporary)
        _replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def save_figure(path: str | os.PathLike, figure, dpi: int = 150) -> Path:
    """Save a matplotlib figure (format from the suffix) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        figure.savefig(temporary, dpi=dpi, bbox_inches="tight")
        _replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
        plt.close(figure)
    return path
