"""Option types shared by subcommands: each refuses a bad value with argparse's usage error
(exit status 2) and a message that names the valid range."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from vmsim.constants import MAX_MAP_COUNT_LIMIT
from vmsim.machine import MAX_RAM_BYTES, MAX_SWAP_BYTES, MIN_RAM_BYTES, MIN_SWAP_BYTES, parse_size

INT_MAX = MAX_MAP_COUNT_LIMIT  # vm.max_map_count is an int sysctl (proc_dointvec_minmax)

__all__ = ["INT_MAX", "interval", "map_count", "ram_size", "rlimit_size", "swap_size"]


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def map_count(low: int) -> Callable[[str], int]:
    """A vm.max_map_count value: ``low``..INT_MAX (the sysctl takes 0..INT_MAX)."""

    def parse(text: str) -> int:
        n = _int(text)
        if not low <= n <= INT_MAX:
            raise argparse.ArgumentTypeError(f"must be within {low}..{INT_MAX}, got {n}")
        return n

    parse.__name__ = "max_map_count"
    return parse


def _human(n: int) -> str:
    for shift, unit in ((50, "P"), (40, "T"), (30, "G"), (20, "M"), (10, "K")):
        if n >= 1 << shift and not n & ((1 << shift) - 1):
            return f"{n >> shift}{unit}"
    return str(n)


def _size(text: str, low: int, high: int, zero_ok: bool) -> int:
    try:
        n = parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if (zero_ok and n == 0) or low <= n <= high:
        return n
    span = f"{_human(low)}..{_human(high)}"
    raise argparse.ArgumentTypeError(
        f"must be {'0 or ' if zero_ok else ''}within {span}, got {text!r}"
    )


def ram_size(text: str) -> int:
    """RAM of the modelled machine: 8K..4P."""
    return _size(text, MIN_RAM_BYTES, MAX_RAM_BYTES, zero_ok=False)


def swap_size(text: str) -> int:
    """Swap of the modelled machine: 0, or 8K..16T (one swap area)."""
    return _size(text, MIN_SWAP_BYTES, MAX_SWAP_BYTES, zero_ok=True)


def rlimit_size(text: str) -> int:
    """An RLIMIT_AS / RLIMIT_DATA value in bytes (rlim_t: 0..2**64-1)."""
    return _size(text, 0, (1 << 64) - 1, zero_ok=True)


def interval(text: str) -> float:
    """Seconds between refreshes: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text!r}")
    return value
