"""What KSM and zswap would save on a set of pages: the arithmetic of ``vmsim estimate``, a
pure function of the page contents (:func:`estimate_pages`, or a :class:`PageTally` fed page
by page). :mod:`vmsim.analysis.estimate` reads the pages of a live process and counts them here.

* KSM (mm/ksm.c) merges pages with identical contents: ``pages_shared`` is the number of
  KSM pages (contents seen more than once), ``pages_sharing`` the extra mappings of them, the
  pages saved; ``pages_unshared`` contents seen once. All-zero pages are counted apart: with
  ``use_zero_pages`` KSM maps each of them to the zero page (ksm_zero_pages), all saved;
  without, they merge into one KSM page like any other contents. Contents are compared by a
  128-bit BLAKE2b digest, so no page contents are kept; the estimate assumes every page is in
  a VMA that KSM scans (MADV_MERGEABLE or prctl(PR_SET_MEMORY_MERGE)), and looks at one
  process only (KSM also merges across processes).
* zswap (mm/zswap.c), as Linux 6.18 and :class:`vmsim.mm.zswap.Zswap` store a page: a page
  of zeros never reaches zswap (since 6.12 the swap core keeps one bit for it, the swap
  zeromap: no pool space, no I/O, counted as swpout_zero); every other page is compressed,
  same-filled ones (one repeated non-zero 8-byte word) included; a page whose compressed size
  is not below a page is stored as it is, a whole 4096-byte object
  (stored_incompressible_pages); the others cost their zsmalloc size class, and the pool is
  the sum of the objects' size classes rounded up to whole pages.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from vmsim.analysis.ksmd import KsmdEstimate, ksmd_defaults
from vmsim.mm.zswap import COMPRESSORS, PAGE_SIZE, Compressor, zs_size

ZERO_PAGE = bytes(PAGE_SIZE)


@dataclass(frozen=True)
class KsmEstimate:
    """What KSM would merge among the pages (its /sys/kernel/mm/ksm counters, as if one full
    scan had merged everything)."""

    nonzero_pages: int
    distinct: int  # distinct contents among the non-zero pages
    pages_shared: int  # contents seen twice or more: one KSM page each
    pages_sharing: int  # nonzero_pages - distinct: the mappings merged away, pages saved
    pages_unshared: int  # contents seen once
    zero_pages: int  # all-zero pages, counted apart

    @property
    def saved_bytes(self) -> int:
        """RAM freed by merging the non-zero pages."""
        return self.pages_sharing * PAGE_SIZE

    @property
    def zero_saved_bytes(self) -> int:
        """RAM freed by the zero pages with use_zero_pages=1 (each maps the zero page)."""
        return self.zero_pages * PAGE_SIZE

    @property
    def zero_saved_bytes_merged(self) -> int:
        """RAM freed by the zero pages with use_zero_pages=0 (they merge into one KSM page)."""
        return max(self.zero_pages - 1, 0) * PAGE_SIZE

    def as_dict(self) -> dict[str, Any]:
        return {
            "nonzero_pages": self.nonzero_pages,
            "distinct": self.distinct,
            "pages_shared": self.pages_shared,
            "pages_sharing": self.pages_sharing,
            "pages_unshared": self.pages_unshared,
            "saved_bytes": self.saved_bytes,
            "zero_pages": self.zero_pages,
            "zero_saved_bytes": self.zero_saved_bytes,
            "zero_saved_bytes_without_use_zero_pages": self.zero_saved_bytes_merged,
        }


@dataclass(frozen=True)
class ZswapEstimate:
    """What swapping every page out would do with a zswap pool of one compressor (Linux
    6.18): the zero pages set their bit in the swap zeromap, every other page is stored."""

    compressor: str
    pages: int  # pages swapped out: zero_pages + stored_pages
    zero_pages: int  # all-zero: a bit in the swap zeromap each, never offered to zswap
    stored_pages: int  # kept in the pool: every non-zero page
    stored_incompressible_pages: int  # compressed to a page or more: stored as is
    stored_bytes: int  # sum of the zsmalloc size classes of the stored objects
    raw_compressed_bytes: int  # the compressor's output sizes of the compressed pages
    seconds: float  # time spent compressing

    @property
    def compressed_pages(self) -> int:
        """Stored pages kept compressed (below a page)."""
        return self.stored_pages - self.stored_incompressible_pages

    @property
    def pool_pages(self) -> int:
        """RAM pages the pool takes (PoolMemory: the size classes summed, rounded up)."""
        return -(-self.stored_bytes // PAGE_SIZE)

    @property
    def pool_total_size(self) -> int:
        """The pool in bytes, as /sys/kernel/debug/zswap/pool_total_size gives it."""
        return self.pool_pages * PAGE_SIZE

    @property
    def ratio(self) -> float | None:
        """Original over stored size of the stored pages, those stored as is at 1:1 (None:
        nothing was stored)."""
        if not self.stored_bytes:
            return None
        return self.stored_pages * PAGE_SIZE / self.stored_bytes

    @property
    def saved_bytes(self) -> int:
        """RAM freed with no swap I/O: the zero pages and the stored pages, less the pool."""
        return (self.zero_pages + self.stored_pages - self.pool_pages) * PAGE_SIZE

    def as_dict(self) -> dict[str, Any]:
        ratio = self.ratio
        return {
            "compressor": self.compressor,
            "pages": self.pages,
            "zero_pages": self.zero_pages,
            "stored_pages": self.stored_pages,
            "compressed_pages": self.compressed_pages,
            "stored_incompressible_pages": self.stored_incompressible_pages,
            "stored_bytes": self.stored_bytes,
            "raw_compressed_bytes": self.raw_compressed_bytes,
            "ratio": None if ratio is None else round(ratio, 4),
            "pool_pages": self.pool_pages,
            "pool_total_size": self.pool_total_size,
            "saved_bytes": self.saved_bytes,
            "seconds": round(self.seconds, 6),
        }


@dataclass(frozen=True)
class PageStats:
    """KSM and zswap figures for a set of pages (:func:`estimate_pages`)."""

    pages: int
    zero_pages: int
    ksm: KsmEstimate
    zswap: tuple[ZswapEstimate, ...]
    ksmd: KsmdEstimate | None = None  # what 6.18's ksmd with its defaults would reach

    @property
    def bytes(self) -> int:
        return self.pages * PAGE_SIZE

    def as_dict(self) -> dict[str, Any]:
        return {
            "pages": self.pages,
            "bytes": self.bytes,
            "zero_pages": self.zero_pages,
            "ksm": self.ksm.as_dict(),
            "ksmd_defaults": None if self.ksmd is None else self.ksmd.as_dict(),
            "zswap": [z.as_dict() for z in self.zswap],
        }


class _ZswapTally:
    def __init__(self, name: str) -> None:
        self.compressor = Compressor(name)
        self.stored = 0
        self.incompressible = 0
        self.class_bytes = 0
        self.raw_bytes = 0
        self.ns = 0

    def add(self, data: bytes) -> None:
        t0 = time.perf_counter_ns()
        n = len(self.compressor.compress(data))
        self.ns += time.perf_counter_ns() - t0
        self.stored += 1
        if n >= PAGE_SIZE:  # zswap_compress(): not below a page, stored as is
            self.incompressible += 1
            self.class_bytes += zs_size(PAGE_SIZE)
            return
        self.raw_bytes += n
        self.class_bytes += zs_size(n)


class PageTally:
    """The running counts behind :func:`estimate_pages`, one page at a time."""

    def __init__(self, compressors: Sequence[str] = COMPRESSORS) -> None:
        if not compressors:
            raise ValueError("no compressor given")
        self._zswap = [_ZswapTally(name) for name in compressors]
        self._digests: dict[bytes, int] = {}
        self.pages = 0
        self.zero_pages = 0

    def add(self, data: bytes) -> None:
        if len(data) != PAGE_SIZE:
            raise ValueError(f"a page is {PAGE_SIZE} bytes, got {len(data)}")
        self.pages += 1
        if data == ZERO_PAGE:
            self.zero_pages += 1
            return  # KSM: counted apart; swap: a zeromap bit, never offered to zswap
        digest = hashlib.blake2b(data, digest_size=16).digest()
        self._digests[digest] = self._digests.get(digest, 0) + 1
        for z in self._zswap:
            z.add(data)

    def result(self) -> PageStats:
        distinct = len(self._digests)
        shared = sum(1 for n in self._digests.values() if n > 1)
        nonzero = self.pages - self.zero_pages
        ksm = KsmEstimate(
            nonzero_pages=nonzero,
            distinct=distinct,
            pages_shared=shared,
            pages_sharing=nonzero - distinct,
            pages_unshared=distinct - shared,
            zero_pages=self.zero_pages,
        )
        zswap = tuple(
            ZswapEstimate(
                compressor=z.compressor.name,
                pages=self.pages,
                zero_pages=self.zero_pages,
                stored_pages=z.stored,
                stored_incompressible_pages=z.incompressible,
                stored_bytes=z.class_bytes,
                raw_compressed_bytes=z.raw_bytes,
                seconds=z.ns / 1e9,
            )
            for z in self._zswap
        )
        ksmd = ksmd_defaults([*self._digests.values(), self.zero_pages])
        return PageStats(self.pages, self.zero_pages, ksm, zswap, ksmd)


def estimate_pages(pages: Iterable[bytes], compressors: Sequence[str] = COMPRESSORS) -> PageStats:
    """KSM and zswap figures for ``pages`` (each exactly one page of bytes); ``compressors``
    are names from :data:`vmsim.mm.zswap.COMPRESSORS` (ValueError otherwise)."""
    tally = PageTally(compressors)
    for data in pages:
        tally.add(data)
    return tally.result()


__all__ = ["KsmEstimate", "PageStats", "PageTally", "ZswapEstimate", "estimate_pages"]
