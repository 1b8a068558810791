"""Chapters 7 and 8 of the tour: copy-on-write after fork and the ENOMEM postmortem. Both
run the engines of their demos (:mod:`vmsim.scenarios.cow`, :mod:`vmsim.scenarios.enomem`)
and sum their steps up: frame counts after each copy-on-write step, and the calls that split
VMAs up to vm.max_map_count and the one that then fails."""

from __future__ import annotations

from vmsim.constants import DEFAULT_MAX_MAP_COUNT
from vmsim.scenarios import cow as cow_story
from vmsim.scenarios import enomem as enomem_story
from vmsim.scenarios.tour.chapter import Chapter, Figures, checked

COW = "Copy-on-write (fork)"
ENOMEM = "VMAs and the ENOMEM postmortem"
COW_PAGES = cow_story.DEFAULT_PAGES
# the cow story's steps the chapter counts frames after, in order
COW_STEPS = ("parent-writes", "fork", "child-write-0", "parent-write-0", "parent-write-1")


def _frames(step: cow_story.Step) -> Figures:
    """The private pages' frames after a step: how many distinct frames both processes map,
    how many pages the two share, and who maps each page writable."""
    private = [row for row in step.pages if row.mapping == "private"]
    pfns = {v.pfn for row in private for v in (row.parent, row.child) if v is not None}
    shared = [
        row
        for row in private
        if row.parent is not None and row.child is not None and row.parent.pfn == row.child.pfn
    ]
    return {
        "step": step.id,
        "frames": len(pfns),
        "shared_pages": len(shared),
        "refcounts": [row.parent.refcount if row.parent else 0 for row in private],
        "parent_pfns": [row.parent.pfn if row.parent else None for row in private],
        "child_pfns": [row.child.pfn if row.child else None for row in private],
        "parent_writable": [bool(row.parent and row.parent.writable) for row in private],
        "child_writable": [bool(row.child and row.child.writable) for row in private],
    }


# who writes which page at each step (the cow story's order)
COW_WRITES = {
    "child-write-0": ("child", 0),
    "parent-write-0": ("parent", 0),
    "parent-write-1": ("parent", 1),
}


def _cow_line(f: Figures, before: Figures | None) -> str:
    """One step of the cow chapter in words, from the frames before and after it."""
    counts = f"{f['frames']} frames for {len(f['parent_pfns'])} pages, {f['shared_pages']} shared"
    if f["step"] == "parent-writes":
        return f"the parent writes its {len(f['parent_pfns'])} private pages: {counts}"
    if f["step"] == "fork":
        refs = ", ".join(str(r) for r in f["refcounts"])
        writable = any(f["parent_writable"]) or any(f["child_writable"])
        return f"fork(): {counts} (refcounts {refs}), " + (
            "a PTE still writable" if writable else "read-only in both"
        )
    who, page = COW_WRITES[f["step"]]
    old = before[f"{who}_pfns"][page] if before else None
    new = f[f"{who}_pfns"][page]
    did = (
        f"reused in place (pfn {new:#x}: nobody else held it)"
        if new == old
        else f"copied: pfn {old:#x} -> {new:#x}"
        if old is not None
        else f"pfn {new:#x}"
    )
    return f"the {who} writes page {page}: {did}; {counts}"


def cow(number: int) -> Chapter:
    """Chapter 7: the cow demo's story, frame counts after each step."""
    steps = list(cow_story.story(COW_PAGES))
    by_id = {s.id: s for s in steps}
    frames = [_frames(by_id[i]) for i in COW_STEPS if i in by_id]
    counters = by_id["counters"].counters if "counters" in by_id else {}
    ok, expected = checked(steps)
    figures: Figures = {"private_pages": COW_PAGES, "steps": frames, "counters": counters}
    lines = [_cow_line(f, frames[k - 1] if k else None) for k, f in enumerate(frames)]
    if counters:
        lines.append(
            "faults: "
            + "; ".join(
                f"{who} cow {c.get('cow_faults', 0)}, reuse {c.get('cow_reuse', 0)}"
                for who, c in counters.items()
            )
        )
    return Chapter(
        number,
        "cow",
        COW,
        "fork() copies no memory: parent and child share every frame read-only, and the "
        "first write to a page copies it, unless nobody else holds it any more.",
        tuple(lines),
        tuple(s.explain for s in steps),
        figures,
        "vmsim demo cow [--pages N] [--plot FILE]",
        matches_linux=ok,
        expected=expected,
    )


ENOMEM_EXPLAIN = (
    "mprotect() of part of a VMA calls split_vma() for each end it cuts (mm/vma.c), and "
    "split_vma() refuses with ENOMEM once map_count >= vm.max_map_count: a page in the middle "
    "needs two splits, so map_count <= max_map_count - 2.",
    "munmap() goes through vms_gather_munmap_vmas(): only a range strictly inside one VMA "
    "is checked (map_count >= max_map_count: ENOMEM), because only then does unmapping add a "
    "VMA; unmapping whole VMAs is never refused.",
    "The postmortem (RavenDB, 'ENOMEM when trying to free memory'): a process that had split "
    "its mappings up to the limit could not release memory any more.",
)


def enomem(number: int, max_map_count: int = DEFAULT_MAX_MAP_COUNT) -> Chapter:
    """Chapter 8: the enomem demo's story at the default vm.max_map_count."""
    steps = list(enomem_story.story(max_map_count))
    by_id = {s.id: s for s in steps}
    split = by_id["split"]
    fail = by_id["munmap-middle"]
    whole = by_id["munmap-whole"]
    retry = by_id["munmap-retry"]
    ok, expected = checked(steps)
    figures: Figures = {
        "max_map_count": max_map_count,
        "map_count_at_start": by_id["spawn"].map_count,
        "map_count_after_mmap": by_id["mmap"].map_count,
        "split_calls": split.facts.get("calls", 0),
        "middle_splits": split.facts.get("middle_splits", 0),
        "map_count_after_splits": split.map_count,
        "failing_call": fail.call,
        "failing_errno": fail.errno,
        "map_count_at_failure": fail.map_count_before,
        "whole_munmap_errno": whole.errno,
        "map_count_after_whole_munmap": whole.map_count,
        "retry_errno": retry.errno,
        "map_count_after_retry": retry.map_count,
    }
    f = figures
    lines = (
        f"a fresh process holds {f['map_count_at_start']} VMAs; one mmap makes it "
        f"{f['map_count_after_mmap']}",
        f"{f['split_calls']:,} mprotect calls on single pages split the mapping: map_count "
        f"{f['map_count_after_splits']:,} (vm.max_map_count {max_map_count:,})",
        f"{f['failing_call']} -> {f['failing_errno'] or 'ok'} at map_count "
        f"{f['map_count_at_failure']:,}: freeing memory fails",
        f"munmap of a whole VMA -> {whole.errno or 'ok'} (map_count "
        f"{f['map_count_after_whole_munmap']:,}); the failed call again -> "
        f"{retry.errno or 'ok'} (map_count {f['map_count_after_retry']:,})",
    )
    return Chapter(
        number,
        "enomem",
        ENOMEM,
        "A process's memory is a set of VMAs, and the kernel caps how many: at "
        "vm.max_map_count even munmap, which would free memory, fails with ENOMEM.",
        lines,
        ENOMEM_EXPLAIN + tuple(s.explain for s in steps),
        figures,
        "vmsim demo enomem [--max-map-count N]; vmsim replay TRACE; vmsim maps PID",
        matches_linux=ok,
        expected=expected,
    )


__all__ = ["COW", "ENOMEM", "cow", "enomem"]
