"""Argument types shared by the command-line tools: each rejects bad values with a clear message."""

from __future__ import annotations

import argparse
import math


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text}") from None


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def positive_int(text: str) -> int:
    value = _integer(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


def positive_float(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def beta_value(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"beta must be a non-negative number, got {text}")
    return value


def _int_list(text: str, example: str, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must look like {example}, got {text!r}") from None


def hidden_sizes(text: str) -> tuple[int, ...]:
    """``400,400`` -> (400, 400); ``none`` -> () (logistic regression)."""
    if text.strip().lower() in ("none", "0", ""):
        return ()
    sizes = _int_list(text, "400,400 or none", "hidden sizes")
    if any(size <= 0 for size in sizes):
        raise argparse.ArgumentTypeError(f"hidden sizes must be positive, got {text!r}")
    return sizes


def digit_list(text: str) -> tuple[int, ...]:
    digits = _int_list(text, "3,8", "digits")
    if any(d < 0 or d > 9 for d in digits):
        raise argparse.ArgumentTypeError(f"digits must lie in 0-9, got {text!r}")
    return digits


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends '(default: ...)' to every flag's help, except flags whose default is None (their
    help says what applies instead)."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)
