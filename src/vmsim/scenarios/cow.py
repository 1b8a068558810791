"""Copy-on-write after fork(), told frame by frame: the engine of ``vmsim demo cow``.

The story, on a model machine: a parent maps N private anonymous pages and one shared
anonymous page, writes to all of them and forks. After the fork both processes map the same
frames read-only (copy_present_pte() write-protects both sides). The child's first write to
page 0 faults and do_wp_page() copies the page (wp_page_copy()); the parent's write to page 0
then finds its frame held by nobody else and reuses it without a copy; its write to page 1,
still shared, copies. The shared page is never copied: both processes map the one page-cache
frame. Each process then reads every page back through its own page tables.

:func:`story` drives the model and yields :class:`Step` values holding what the model
reported: frame numbers from /proc/pid/pagemap, reference and map counts from the frame
table, write permission from the PTE, contents from the frame. Each step is one function
(``_map`` ... ``_counters``) over the shared :class:`_Story` state. The expected outcomes
(from Linux's rules) only set ``matches_linux``; they are never shown as numbers.

Why this module is over 600 lines: it is one story of ten steps, and most of its lines are the
steps' prose (the explanation and the detail of each); splitting the steps from their text
would make each harder to check against Linux's rules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import vmsim
from vmsim.constants import MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PAGE_SIZE, PROT_READ, PROT_WRITE
from vmsim.hw.pte import decode
from vmsim.procfs import PM_PFRAME_MASK, PM_PRESENT
from vmsim.scenarios import ScenarioParameterError

PAGE = PAGE_SIZE
DEFAULT_PAGES = 4
MAX_PAGES = 64  # one table row per page and process: more is no longer readable
SLOT = 32  # bytes each write stores (NUL-padded, so a shorter string replaces a longer one)
PREVIEW_BYTES = 64  # bytes of a frame shown as its contents
SHARED_LABEL = "shared"
# What each store writes: the read-back step checks each process sees exactly its own.
FIRST = "parent page {}"  # the parent's first write to private page {}
CHILD_0 = "child page 0"
AGAIN = "parent page {}, again"  # the parent's write after the fork
SHARED_PARENT = "parent was here"  # before the fork, at offset 0 of the shared page
SHARED_CHILD = "child was here"  # after, at offset 0: replaces the parent's bytes
SHARED_PARENT_2 = "parent was here too"  # then, at offset SLOT
COUNTERS = (
    "pgfault",
    "anon_faults",
    "cow_faults",
    "cow_reuse",
    "file_faults",
    "zero_page_maps",
    "spurious_faults",
    "translations",
    "walks",
    "walk_refs",
)

# What handle_mm_fault() did, by the kind the model reports (mm/memory.c).
FAULT_WHAT = {
    "zero-page": "do_anonymous_page() mapped the shared zero page",
    "anon": "do_anonymous_page() mapped a new zeroed page",
    "cow": "do_wp_page() copied the page (wp_page_copy)",
    "reuse": "do_wp_page() reused the page: nobody else holds it (wp_can_reuse_anon_folio)",
    "shared-write": "do_shared_fault() mapped the page-cache page writable",
    "file": "do_read_fault() mapped the page-cache page",
    "spurious": "the PTE already allowed the access (spurious fault)",
}


@dataclass(frozen=True)
class FrameView:
    """One process's view of one page: the frame it maps and what the kernel knows of it."""

    pfn: int
    refcount: int  # folio_ref_count(): page-table mappings + page cache + other holders
    mapcount: int  # folio_mapcount(): how many PTEs map it
    writable: bool  # the PTE's R/W bit
    pte: int  # the raw PTE
    data: str  # the first bytes of the frame, NUL runs shown as " · "


@dataclass(frozen=True)
class PageRow:
    """One page of the story, as the parent and the child see it (None: not mapped)."""

    label: str  # "0", "1", ... for the private pages, "shared" for the shared one
    vaddr: int
    mapping: str  # "private" | "shared"
    parent: FrameView | None
    child: FrameView | None


@dataclass(frozen=True)
class Step:
    """One step of the story, with the values the model reported after it."""

    id: str
    title: str
    call: str  # the syscall or access, C-like
    faults: dict[str, list[str]]  # process -> what the kernel did, per fault taken
    explain: str  # the one-line explanation (--explain)
    detail: str  # the longer explanation (rich output)
    pages: tuple[PageRow, ...]
    expected: str  # what Linux does here
    matches_linux: bool
    reads: dict[str, dict[str, str]] = field(default_factory=dict)  # page -> process -> data
    counters: dict[str, dict[str, int]] = field(default_factory=dict)


def _fmt(n: int) -> str:
    return f"{n:#x}"


def _slot(text: str) -> bytes:
    data = text.encode()
    if len(data) > SLOT:
        raise ValueError(f"{text!r} does not fit in {SLOT} bytes")
    return data.ljust(SLOT, b"\0")


def _preview(data: bytes) -> str:
    runs = [run.decode("ascii", "replace") for run in data.split(b"\0") if run]
    return " · ".join(runs) if runs else "(zeros)"


def _page_name(label: str) -> str:
    return f"page {label}" if label.isdigit() else f"{label} page"


def _same(values: list[int]) -> str:
    """``2`` if every value is 2, else ``2/1/2``: a compact summary for one line."""
    return str(values[0]) if len(set(values)) == 1 else "/".join(map(str, values))


class _Story:
    """The machine, the two processes and the pages, with helpers that read the model."""

    def __init__(self, npages: int) -> None:
        self.machine = vmsim.Machine()
        self.parent = self.machine.spawn()
        self.child: vmsim.Process | None = None
        self.npages = npages
        rw = PROT_READ | PROT_WRITE
        self.private = self.parent.mmap(0, npages * PAGE, rw, MAP_PRIVATE | MAP_ANONYMOUS)
        self.shared = self.parent.mmap(0, PAGE, rw, MAP_SHARED | MAP_ANONYMOUS)
        self.taken: dict[str, list[str]] = {"parent": [], "child": []}

    def addr(self, page: int) -> int:
        return self.private + page * PAGE

    def procs(self) -> dict[str, vmsim.Process]:
        out = {"parent": self.parent}
        if self.child is not None:
            out["child"] = self.child
        return out

    def view(self, proc: vmsim.Process | None, addr: int) -> FrameView | None:
        """The frame ``proc`` maps at ``addr``, read without an access: the frame number from
        /proc/pid/pagemap, the PTE from the page tables (as a debugger reads them)."""
        if proc is None:
            return None
        entry = proc.pagemap(addr, 1)[0]
        if not entry & PM_PRESENT:
            return None
        pfn = entry & PM_PFRAME_MASK
        pte = proc.pte(addr)
        m = self.machine
        return FrameView(
            pfn=pfn,
            refcount=m.page_refcount(pfn),
            mapcount=m.page_mapcount(pfn),
            writable=decode(pte, 1).writable,
            pte=pte,
            data=_preview(m.read_frame(pfn, 0, PREVIEW_BYTES)),
        )

    def rows(self) -> tuple[PageRow, ...]:
        pages = [(str(i), self.addr(i), "private") for i in range(self.npages)]
        pages.append((SHARED_LABEL, self.shared, "shared"))
        return tuple(
            PageRow(label, addr, kind, self.view(self.parent, addr), self.view(self.child, addr))
            for label, addr, kind in pages
        )

    def write(self, who: str, addr: int, text: str) -> tuple[str, ...]:
        """A store by ``who``: the write access (translate() reports the faults the kernel
        took for it), then the bytes, through the TLB entry that access left."""
        proc = self.procs()[who]
        faults = proc.translate(addr, "write").faults
        proc.write(addr, _slot(text))
        self.taken[who].extend(faults)
        return faults


def _faults_text(faults: tuple[str, ...]) -> str:
    return "no fault" if not faults else ", ".join(faults)


def _faults_what(faults: tuple[str, ...]) -> str:
    """What each fault did, in words ("no fault" if none)."""
    return "; ".join(FAULT_WHAT.get(f, f) for f in faults) or "no fault"


def _wp_explain(
    who: str,
    addr: int,
    before: FrameView,
    after: FrameView,
    faults: tuple[str, ...],
    other: str,
    other_after: FrameView | None,
) -> str:
    """One line for a write to a page whose PTE was present: why the kernel copied or not."""
    state = (
        f"PTE {'writable' if before.writable else 'read-only'}, frame {_fmt(before.pfn)} "
        f"refcount {before.refcount}"
    )
    if "cow" in faults:
        tail = (
            f"; the {other}'s {_fmt(other_after.pfn)} now refcount {other_after.refcount}"
            if other_after is not None
            else ""
        )
        return (
            f"{who} writes {_fmt(addr)}: {state} -> do_wp_page copies it into pfn "
            f"{_fmt(after.pfn)} (wp_page_copy){tail}"
        )
    if "reuse" in faults:
        return (
            f"{who} writes {_fmt(addr)}: {state}, nobody else holds it -> do_wp_page reuses "
            f"it (wp_can_reuse_anon_folio): same pfn {_fmt(after.pfn)}, PTE now "
            f"{'writable' if after.writable else 'read-only'}, no copy"
        )
    what = _faults_what(faults)
    return f"{who} writes {_fmt(addr)}: {state} -> {what}; now pfn {_fmt(after.pfn)}"


# --- the steps, in order: each acts on the story's machine and reports what it saw ----------


def _map(s: _Story) -> Step:
    """The parent has mapped its pages (in _Story()): VMAs only, no frame yet."""
    n = s.npages
    rows = s.rows()
    return Step(
        id="map",
        title="The parent maps memory",
        call=(
            f"mmap(NULL, {n * PAGE}, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = "
            f"{_fmt(s.private)}; mmap(NULL, {PAGE}, PROT_READ|PROT_WRITE, "
            f"MAP_SHARED|MAP_ANONYMOUS, -1, 0) = {_fmt(s.shared)}"
        ),
        faults={},
        explain=(
            f"parent maps {n} private pages at {_fmt(s.private)} and 1 shared page at "
            f"{_fmt(s.shared)}: VMAs only, "
            f"{sum(r.parent is not None for r in rows)} pages have a frame yet"
        ),
        detail=(
            "mmap() only creates VMAs: no frame is allocated and no PTE written until the "
            "first access faults. The shared anonymous page is backed by an unlinked tmpfs "
            "file (/dev/zero (deleted) in /proc/pid/maps)."
        ),
        pages=rows,
        expected="no page has a frame before its first access",
        matches_linux=all(r.parent is None for r in rows),
    )


def _parent_writes(s: _Story) -> Step:
    """The parent writes every page once: one fault and one new frame per page."""
    n = s.npages
    faults: list[str] = []
    for i in range(n):
        faults.extend(s.write("parent", s.addr(i), FIRST.format(i)))
    faults.extend(s.write("parent", s.shared, SHARED_PARENT))
    rows = s.rows()
    priv = [r.parent for r in rows[:-1] if r.parent is not None]
    shr = rows[-1].parent
    return Step(
        id="parent-writes",
        title="The parent writes every page",
        call=f"parent: store to each of the {n + 1} pages",
        faults={"parent": faults},
        explain=(
            f"parent writes {n + 1} pages: {len(faults)} faults ({', '.join(sorted(set(faults)))}"
            f"): new frames {', '.join(_fmt(f.pfn) for f in priv)} refcount "
            f"{_same([f.refcount for f in priv])}, mapcount {_same([f.mapcount for f in priv])}"
            + (
                f"; the shared page is pfn {_fmt(shr.pfn)} in the page cache (refcount "
                f"{shr.refcount}: cache + mapping)"
                if shr is not None
                else ""
            )
        ),
        detail=(
            "Each first write faults. do_anonymous_page() gives each private page a new "
            "zeroed frame, mapped writable; the shared page's fault (do_shared_fault) puts a "
            "tmpfs page in the page cache, which holds one reference of its own."
        ),
        pages=rows,
        expected="one fault per page; each private frame refcount 1, mapcount 1, writable",
        matches_linux=len(faults) == n + 1
        and len(priv) == n
        and all(f.refcount == 1 and f.mapcount == 1 and f.writable for f in priv)
        and shr is not None
        and shr.mapcount == 1
        and shr.writable,
    )


def _fork(s: _Story) -> Step:
    """fork(): the child maps every private frame too, both PTEs read-only."""
    n = s.npages
    s.child = s.parent.fork()
    rows = s.rows()
    pairs = [(r.parent, r.child) for r in rows[:-1]]
    shared_frames = [p for p, c in pairs if p is not None and c is not None and p.pfn == c.pfn]
    read_only = all(
        p is not None and c is not None and not p.writable and not c.writable for p, c in pairs
    )
    writable_in = sorted(
        {
            who
            for pc in pairs
            for who, v in zip(("parent", "child"), pc, strict=True)
            if v and v.writable
        }
    )
    ptes = (
        "PTEs read-only in both (copy_present_pte write-protects both sides)"
        if read_only
        else f"PTEs still WRITABLE in the {' and the '.join(writable_in) or '?'}"
    )
    return Step(
        id="fork",
        title="fork(): both processes share every private frame, read-only",
        call=f"fork() = {s.child.pid}",
        faults={},
        explain=(
            f"fork: copy_page_range gives the child the {n} private PTEs: "
            f"{len(shared_frames)} of {n} frames shared, refcount "
            f"{_same([f.refcount for f in shared_frames] or [0])}, mapcount "
            f"{_same([f.mapcount for f in shared_frames] or [0])}, {ptes}; the shared page's "
            f"PTE is {'not ' if rows[-1].child is None else ''}copied (no anon_vma: the child "
            "faults it in from the page cache)"
        ),
        detail=(
            "dup_mmap() copies every VMA; copy_page_range() copies the PTEs of VMAs that hold "
            "anonymous pages. In a private writable mapping copy_present_pte() clears R/W in "
            "the parent's PTE and in the child's, and takes a reference and a mapping on each "
            "frame: nothing is copied yet. The shared mapping has no anonymous pages, so its "
            "PTEs are not copied at all."
        ),
        pages=rows,
        expected="same frame in both, refcount 2, mapcount 2, read-only in both; shared PTE "
        "not copied",
        matches_linux=len(shared_frames) == n
        and all(f.refcount == 2 and f.mapcount == 2 for f in shared_frames)
        and read_only
        and rows[-1].child is None,
    )


@dataclass(frozen=True)
class _Store:
    """One store to a private page: the writer's frame before and after, the faults the
    kernel took for it, and the other process's frame at that address afterwards."""

    who: str
    addr: int
    faults: tuple[str, ...]
    before: FrameView
    after: FrameView
    other: FrameView | None


def _store_private(s: _Story, who: str, page: int, text: str) -> _Store:
    proc, other = (s.child, s.parent) if who == "child" else (s.parent, s.child)
    addr = s.addr(page)
    before = s.view(proc, addr)
    faults = s.write(who, addr, text)
    after, seen = s.view(proc, addr), s.view(other, addr)
    assert before is not None and after is not None
    return _Store(who, addr, faults, before, after, seen)


def _wp_step(
    s: _Story, st: _Store, id: str, title: str, detail: str, expected: str, matches: bool
) -> Step:
    """The step for a write to a private page whose PTE fork write-protected."""
    other = "parent" if st.who == "child" else "child"
    return Step(
        id=id,
        title=title,
        call=f"{st.who}: store to {_fmt(st.addr)}",
        faults={st.who: list(st.faults)},
        explain=_wp_explain(st.who, st.addr, st.before, st.after, st.faults, other, st.other),
        detail=detail,
        pages=s.rows(),
        expected=expected,
        matches_linux=matches,
    )


def _child_write_0(s: _Story) -> Step:
    """The child writes page 0: its PTE is read-only and the frame is held twice -> copy."""
    st = _store_private(s, "child", 0, CHILD_0)
    parent0 = st.other
    return _wp_step(
        s,
        st,
        "child-write-0",
        "The child writes page 0: copy",
        "The child's PTE is read-only, so the write faults. do_wp_page() sees a private "
        "anonymous page that another process still maps (refcount above 1): "
        "wp_page_copy() allocates a frame, copies the 4 KiB, and points the child's PTE "
        "at it, writable. The parent's frame loses one reference and one mapping.",
        "a copy: the child gets a new writable frame; the parent's frame refcount 1",
        st.faults == ("cow",)
        and st.after.pfn != st.before.pfn
        and st.after.writable
        and parent0 is not None
        and parent0.pfn == st.before.pfn
        and parent0.refcount == 1
        and parent0.mapcount == 1,
    )


def _parent_write_0(s: _Story) -> Step:
    """The parent writes page 0: read-only PTE, but it is the frame's only user -> reuse."""
    st = _store_private(s, "parent", 0, AGAIN.format(0))
    return _wp_step(
        s,
        st,
        "parent-write-0",
        "The parent writes page 0: no copy",
        "The parent's PTE is still read-only (fork write-protected it), so this write "
        "faults too. But the child has its own copy now, and the frame's refcount is 1: "
        "do_wp_page() reuses it, making the PTE writable. A copy would have been wasted.",
        "reuse: same frame, now writable, no copy",
        st.faults == ("reuse",) and st.after.pfn == st.before.pfn and st.after.writable,
    )


def _parent_write_1(s: _Story) -> Step:
    """The parent writes page 1: the child still maps that frame -> copy, on the parent's
    side."""
    st = _store_private(s, "parent", 1, AGAIN.format(1))
    child1 = st.other
    return _wp_step(
        s,
        st,
        "parent-write-1",
        "The parent writes page 1: copy",
        "Page 1 is still shared with the child, so the parent's write copies: it is the "
        "writer who gets the new frame, whoever forked. The child keeps the original, "
        "which only it maps now (its PTE stays read-only until it writes: then a reuse).",
        "a copy: the parent gets a new frame; the child keeps the old one, refcount 1",
        st.faults == ("cow",)
        and st.after.pfn != st.before.pfn
        and child1 is not None
        and child1.pfn == st.before.pfn
        and child1.refcount == 1,
    )


def _shared_child_write(s: _Story) -> Step:
    """The shared page: the child writes first (fork copied no PTE), and maps the parent's
    page-cache frame."""
    got = s.write("child", s.shared, SHARED_CHILD)
    c_view, p_view = s.view(s.child, s.shared), s.view(s.parent, s.shared)
    assert c_view is not None and p_view is not None
    return Step(
        id="shared-child-write",
        title="The child writes the shared page: same frame",
        call=f"child: store to {_fmt(s.shared)}",
        faults={"child": list(got)},
        explain=(
            f"child writes {_fmt(s.shared)}: no PTE (fork copied none) -> "
            f"{_faults_what(got)}: pfn "
            f"{_fmt(c_view.pfn)}, the parent's is {_fmt(p_view.pfn)}; refcount "
            f"{c_view.refcount}, mapcount {c_view.mapcount}, no copy"
        ),
        detail=(
            "The child's first access to the shared page faults: shmem_fault() finds the page "
            "the parent created in the file's page cache and maps that very frame, writable. "
            "A MAP_SHARED mapping is never copied on write."
        ),
        pages=s.rows(),
        expected="the child maps the parent's frame, writable; mapcount 2",
        matches_linux=c_view.pfn == p_view.pfn and c_view.writable and c_view.mapcount == 2,
    )


def _shared_parent_write(s: _Story) -> Step:
    """Then the parent writes the shared page again: its PTE is writable, no fault."""
    before = s.view(s.parent, s.shared)
    addr = s.shared + SLOT
    got = s.write("parent", addr, SHARED_PARENT_2)
    after = s.view(s.parent, s.shared)
    assert before is not None and after is not None
    return Step(
        id="shared-parent-write",
        title="The parent writes the shared page again",
        call=f"parent: store to {_fmt(addr)}",
        faults={"parent": list(got)},
        explain=(
            f"parent writes {_fmt(addr)}: PTE {'writable' if before.writable else 'read-only'} "
            f"-> {_faults_text(got)}: the bytes land in pfn {_fmt(after.pfn)}, the frame the "
            "child maps"
        ),
        detail=(
            "The parent's PTE for the shared page is writable since its first write: no "
            "fault, the store goes straight to the shared frame."
        ),
        pages=s.rows(),
        expected="no fault, same frame",
        matches_linux=not got and after.pfn == before.pfn,
    )


def _read_back(s: _Story) -> Step:
    """Every page read back, as each process: the proof of isolation (and of sharing)."""
    n = s.npages
    procs = s.procs()
    faults_before = {who: p.stats["pgfault"] for who, p in procs.items()}
    reads: dict[str, dict[str, str]] = {}
    for row in s.rows():
        reads[row.label] = {
            who: _preview(p.read(row.vaddr, PREVIEW_BYTES)) for who, p in procs.items()
        }
    new_faults = {who: p.stats["pgfault"] - faults_before[who] for who, p in procs.items()}
    expected_reads = {"0": (AGAIN.format(0), CHILD_0), "1": (AGAIN.format(1), FIRST.format(1))}
    for i in range(2, n):
        expected_reads[str(i)] = (FIRST.format(i), FIRST.format(i))
    both = _preview(_slot(SHARED_CHILD) + _slot(SHARED_PARENT_2))
    expected_reads[SHARED_LABEL] = (both, both)
    isolated = all(
        (reads[label]["parent"], reads[label]["child"]) == want
        for label, want in expected_reads.items()
    )
    diff = [label for label in reads if reads[label]["parent"] != reads[label]["child"]]
    return Step(
        id="read-back",
        title="Both read every page back",
        call="parent and child: load from each page",
        faults={},
        explain=(
            "read back: "
            + "; ".join(
                f"{_page_name(label)}: parent {r['parent']!r}, child {r['child']!r}"
                for label, r in reads.items()
            )
            + f" -> {len(diff)} page(s) differ ({', '.join(diff) or 'none'}); new faults: "
            + ", ".join(f"{who} {k}" for who, k in new_faults.items())
        ),
        detail=(
            "Each process reads through its own page tables. Pages either of them wrote "
            "after the fork differ: each sees only its own writes. The untouched private "
            "pages still share one frame, and the shared page shows both writes to both. "
            "Reading a present page never faults, read-only or not."
        ),
        pages=s.rows(),
        expected="each process sees its own private writes and both see the shared writes",
        matches_linux=isolated and not any(new_faults.values()),
        reads=reads,
    )


def _counters(s: _Story) -> Step:
    """The fault counters of each process: every fault above counted once."""
    procs = s.procs()
    counters = {who: {k: p.stats[k] for k in COUNTERS} for who, p in procs.items()}
    return Step(
        id="counters",
        title="Fault counters",
        call="getrusage() / /proc/pid/stat minflt, vmstat",
        faults={},
        explain=(
            "fault counters: "
            + "; ".join(
                f"{who} pgfault {c['pgfault']} (anon {c['anon_faults']}, cow "
                f"{c['cow_faults']}, reuse {c['cow_reuse']}, file/shmem {c['file_faults']})"
                for who, c in counters.items()
            )
        ),
        detail=(
            "Every fault above counted once in the faulting process: copy-on-write costs a "
            "fault per page written, and a frame only when someone else still holds it."
        ),
        pages=(),
        expected="pgfault = the faults taken in the steps above",
        matches_linux=all(counters[who]["pgfault"] == len(s.taken[who]) for who in counters),
        counters=counters,
    )


STEPS: tuple[Callable[[_Story], Step], ...] = (
    _map,
    _parent_writes,
    _fork,
    _child_write_0,
    _parent_write_0,
    _parent_write_1,
    _shared_child_write,
    _shared_parent_write,
    _read_back,
    _counters,
)


def story(npages: int = DEFAULT_PAGES) -> Iterator[Step]:
    """Run the story on a fresh model machine, yielding each step as soon as it is done.
    ``npages`` (2 or more) private pages; ScenarioParameterError otherwise."""
    if npages < 2:
        raise ScenarioParameterError("npages", f"{npages} is too few: the story needs 2 pages")
    s = _Story(npages)
    for step in STEPS:
        yield step(s)


__all__ = [
    "COUNTERS",
    "DEFAULT_PAGES",
    "FAULT_WHAT",
    "MAX_PAGES",
    "FrameView",
    "PageRow",
    "Step",
    "story",
]
