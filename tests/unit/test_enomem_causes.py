"""Why an ENOMEM happened: map count, overcommit, RLIMIT_AS, RLIMIT_DATA or no room.

Each case is built so that exactly one kernel check refuses; the expected cause follows from
which check that is (mm/mmap.c, mm/util.c __vm_enough_memory, may_expand_vm).
"""

from __future__ import annotations

import errno

import pytest

import vmsim
from vmsim.errors import (
    CAUSE_ADDRESS_SPACE,
    CAUSE_MAP_COUNT,
    CAUSE_OVERCOMMIT,
    CAUSE_RLIMIT_AS,
    CAUSE_RLIMIT_DATA,
)
from vmsim.trace import read_strace
from vmsim.trace.replay import replay

P = 4096
RW = vmsim.PROT_READ | vmsim.PROT_WRITE
ANON = vmsim.MAP_PRIVATE | vmsim.MAP_ANONYMOUS


def cause_of(call) -> str | None:  # type: ignore[no-untyped-def]
    with pytest.raises(OSError) as e:
        call()
    assert e.value.errno == errno.ENOMEM
    return getattr(e.value, "cause", None)


def test_map_count() -> None:
    p = vmsim.Machine(max_map_count=3).spawn()
    base = p.mmap(0, 8 * P, RW, ANON)
    p.mprotect(base + P, P, vmsim.PROT_READ)  # 3 VMAs
    assert cause_of(lambda: p.munmap(base + 5 * P, P)) == CAUSE_MAP_COUNT


def test_overcommit_heuristic_refuses_more_than_ram_plus_swap() -> None:
    p = vmsim.Machine(ram="1G", swap="1G").spawn()
    assert cause_of(lambda: p.mmap(0, 3 << 30, RW, ANON)) == CAUSE_OVERCOMMIT
    # MAP_NORESERVE is not charged, and 2 GiB is not more than RAM + swap
    p.mmap(0, 3 << 30, RW, ANON | vmsim.MAP_NORESERVE)
    p.mmap(0, 2 << 30, RW, ANON)


def test_overcommit_never_counts_every_commit() -> None:
    # mode 2: CommitLimit = 1 GiB * 50% + 0 swap = 512 MiB
    p = vmsim.Machine(ram="1G", overcommit_memory=2).spawn()
    p.mmap(0, 300 << 20, RW, ANON)
    assert cause_of(lambda: p.mmap(0, 300 << 20, RW, ANON)) == CAUSE_OVERCOMMIT
    p.mmap(0, 300 << 20, vmsim.PROT_READ, ANON)  # read-only private: not charged


def test_rlimit_as() -> None:
    p = vmsim.Machine(rlimit_as="16M").spawn()
    p.mmap(0, 8 << 20, vmsim.PROT_READ, ANON)
    assert cause_of(lambda: p.mmap(0, 9 << 20, vmsim.PROT_READ, ANON)) == CAUSE_RLIMIT_AS


def test_rlimit_data_only_counts_private_writable() -> None:
    p = vmsim.Machine(rlimit_data="4M").spawn()
    p.mmap(0, 8 << 20, vmsim.PROT_READ, ANON)  # not a data mapping
    assert cause_of(lambda: p.mmap(0, 8 << 20, RW, ANON)) == CAUSE_RLIMIT_DATA


def test_no_room_in_the_address_space() -> None:
    p = vmsim.Machine().spawn()
    big = 64 << 40  # 64 TiB: the second one cannot fit below 128 TiB next to the first
    p.mmap(0, big, vmsim.PROT_NONE, ANON | vmsim.MAP_NORESERVE)
    assert (
        cause_of(lambda: p.mmap(0, big + (32 << 40), vmsim.PROT_NONE, ANON | vmsim.MAP_NORESERVE))
        == CAUSE_ADDRESS_SPACE
    )


def test_replay_verdict_names_overcommit() -> None:
    lines = [
        "mmap(NULL, 68719476736, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) "
        "= -1 ENOMEM (Cannot allocate memory)",
    ]
    rep = replay(lambda: read_strace(lines), machine_options={"ram": "16G"})
    assert rep.divergences == []
    assert rep.first_failure is not None
    assert rep.first_failure.cause == CAUSE_OVERCOMMIT
    assert "RAM + swap" in rep.first_failure.detail
