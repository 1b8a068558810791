"""Fixtures for the differential tests (vmsim against the live kernel).

Every test here needs Linux x86-64, root, working process_vm_readv/writev and a readable
/proc/sys/vm/max_map_count; otherwise it is skipped with the reason.  Nothing here changes a
sysctl: tests that need the limit fill a child process up to it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from .harness import SimTarget, infer_mmap_base, spawn_sim, vmsim_ready
from .live import LiveChild, max_map_count, unavailable_reason

_reason: list[str | None] = []


def _live_reason() -> str | None:
    if not _reason:
        _reason.append(unavailable_reason())
    return _reason[0]


@pytest.fixture(autouse=True)
def _require_live_kernel() -> None:
    reason = _live_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def live_max_map_count() -> int:
    return max_map_count()


@pytest.fixture(scope="session")
def require_vmsim() -> None:
    reason = vmsim_ready()
    if reason:
        pytest.skip(reason)


def mmap_base_mode() -> str:
    """VMSIM_MMAP_BASE=infer (default: pass the end of the highest mapping below [stack]) or
    VMSIM_MMAP_BASE=auto (let vmsim infer it from the smaps text)."""
    return os.environ.get("VMSIM_MMAP_BASE", "infer")


@pytest.fixture(scope="session")
def make_sim(require_vmsim: None, live_max_map_count: int) -> Callable[[LiveChild, str], SimTarget]:
    """Factory: a vmsim process rebuilt from a live child's smaps text."""

    def factory(child: LiveChild, smaps: str) -> SimTarget:
        base = infer_mmap_base(smaps) if mmap_base_mode() == "infer" else None
        return spawn_sim(smaps, live_max_map_count, base)

    return factory


@pytest.fixture(scope="session")
def make_twin() -> Callable[[LiveChild, str], Any]:
    """Factory: a second live child with the same layout (kernel-vs-kernel sanity runs)."""

    def factory(child: LiveChild, smaps: str) -> LiveChild:
        twin = LiveChild()
        twin.map_floor()
        return twin

    return factory
