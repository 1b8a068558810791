"""``vmsim maps ... --plot FILE``: a picture of the address space.

:func:`space_data` says what to draw (plain lists and dicts, checked by the tests against the
classified snapshot); :func:`draw` draws it. Three panels:

- the whole 47-bit user space (256 TiB, four-level paging) to scale, where a process's few MiB
  are thin lines: where they sit is all that scale can show;
- the same VMAs in address order with every VMA and every gap given a height on a log scale of
  its size (log2 of its pages, plus one), so a 4 KiB guard page and a 20 TiB gap are both
  visible; VMAs coloured by the kind ``vmsim maps`` gives them, gaps of 1 GiB or more labelled
  with their size, and the program, heap, mmap_base and stack landmarks named;
- bytes mapped, the 256 TiB four-level user space and the 128 PiB five-level one (57-bit
  addresses, 56-bit user half) on a log scale, as a scale comparison.

mmap_base is not in /proc/PID/maps: the first mmap() of a process is placed just below it
(top-down allocation, ``arch_pick_mmap_layout``), so the picture marks the end of the highest
mapping below [stack] as "mmap_base ~".
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vmsim.analysis.classify import ClassifiedVma, Kind
from vmsim.cli.plot import figure

PAGE = 4096
FOUR_LEVEL = 1 << 48  # 48-bit virtual addresses, 4-level paging: 256 TiB (user: lower 128 TiB)
FIVE_LEVEL = 1 << 57  # 57-bit virtual addresses, 5-level paging (LA57): 128 PiB (user: 64 PiB)
USER_TOP = 1 << 47  # TASK_SIZE_MAX, 4-level
GAP_LABEL_MIN = 1 << 30  # gaps of 1 GiB or more carry their size

KIND_COLORS: dict[str, str] = {
    Kind.PROGRAM: "#d62728",
    Kind.LIBRARY: "#1f77b4",
    Kind.HEAP: "#2ca02c",
    Kind.MAIN_STACK: "#9467bd",
    Kind.THREAD_STACK: "#c5b0d5",
    Kind.THREAD_GUARD: "#7f7f7f",
    Kind.ARENA: "#98df8a",
    Kind.RESERVATION: "#c7c7c7",
    Kind.DECOMMIT: "#dbdb8d",
    Kind.JIT: "#ff7f0e",
    Kind.FILE: "#17becf",
    Kind.SPECIAL: "#e377c2",
    Kind.ANON: "#bcbd22",
}


def space_data(vmas: Sequence[ClassifiedVma]) -> dict[str, Any]:
    """What the picture shows: every VMA once (address order) with its kind, the gaps between
    neighbours, the landmarks, and the sizes compared."""
    ordered = sorted(vmas, key=lambda v: v.start)
    rows = [
        {"start": v.start, "end": v.end, "kind": str(v.kind), "name": v.name, "line": v.lineno}
        for v in ordered
    ]
    gaps = [
        {"start": a.end, "end": b.start, "size": b.start - a.end}
        for a, b in itertools.pairwise(ordered)
        if b.start > a.end
    ]
    landmarks: dict[str, int] = {}
    program = [v for v in ordered if v.kind is Kind.PROGRAM]
    if program:
        landmarks["program"] = program[0].start
    heap = [v for v in ordered if v.name == "[heap]"]
    if heap:
        landmarks["heap"] = heap[0].start
    stack = [v for v in ordered if v.name == "[stack]"]
    if stack:
        landmarks["stack"] = stack[0].end
        below = [
            v
            for v in ordered
            if v.end <= stack[0].start and v.kind not in (Kind.PROGRAM, Kind.HEAP)
        ]
        if below:
            landmarks["mmap_base"] = max(v.end for v in below)
    return {
        "vmas": rows,
        "gaps": gaps,
        "landmarks": landmarks,
        "mapped": sum(v.size for v in ordered if v.counted),
        "four_level": FOUR_LEVEL,
        "five_level": FIVE_LEVEL,
    }


def size_text(n: int) -> str:
    """Bytes in binary units up to EiB, three significant digits."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    i = 0
    v = float(n)
    while v >= 1024 and i < len(units) - 1:
        v /= 1024
        i += 1
    return f"{v:.3g} {units[i]}"


def log_height(size: int) -> float:
    """A row's height in the middle panel: log2 of its pages, plus one (a page is 1)."""
    return math.log2(max(size, PAGE) / PAGE) + 1


def layout(data: dict[str, Any]) -> list[dict[str, Any]]:
    """VMAs and gaps in address order with their bottom ``y`` and height ``h`` (log scale)."""
    items = [{**v, "gap": False} for v in data["vmas"]]
    items += [{**g, "gap": True} for g in data["gaps"]]
    items.sort(key=lambda r: (r["start"], not r["gap"]))
    y = 0.0
    out = []
    for it in items:
        h = log_height(it["end"] - it["start"])
        out.append({**it, "y": y, "h": h})
        y += h
    return out


def draw(data: dict[str, Any], title: str, path: Path) -> None:
    """Draw :func:`space_data` to ``path`` (PNG, 1300 x 900 pixels)."""
    with figure(path, (13, 9), ncols=3, width_ratios=[1, 3.2, 1.6]) as (_fig, axes):
        _draw_linear(axes[0], data)
        _draw_log(axes[1], data, title)
        _draw_scales(axes[2], data)


def _linear_y(addr: int) -> float:
    """An address's height in the left panel (TiB): the kernel half (sign-extended addresses
    from 0xffff800000000000) is drawn above the user half, as the 48 bits wrap."""
    return (addr & (FOUR_LEVEL - 1)) / (1 << 40)


def _draw_linear(ax: Any, data: dict[str, Any]) -> None:
    ax.set_ylim(0, 256)
    ax.set_xlim(0, 1)
    ax.set_xticks([])
    ax.set_yticks([0, 32, 64, 96, 128, 160, 192, 224, 256])
    ax.set_ylabel("address (TiB), to scale")
    ax.set_title("the 256 TiB 4-level space\nto scale", fontsize=10)
    ax.axhspan(128, 256, color="#eeeeee")
    ax.text(0.5, 192, "kernel half\n0xffff8000...", ha="center", fontsize=8, color="#555555")
    ax.text(0.5, 64, "user half\n128 TiB", ha="center", fontsize=8, color="#555555")
    for v in data["vmas"]:
        ax.axhline(_linear_y(v["start"]), xmin=0.1, xmax=0.9, color=KIND_COLORS[v["kind"]])
    marks: dict[int, list[str]] = {}
    for name, addr in data["landmarks"].items():
        marks.setdefault(round(_linear_y(addr) / 6), []).append(name)
    for key, names in marks.items():
        ax.text(0.02, key * 6 - 4, ", ".join(names), fontsize=7, va="top")


def _draw_log(ax: Any, data: dict[str, Any], title: str) -> None:
    rows = layout(data)
    top = rows[-1]["y"] + rows[-1]["h"] if rows else 1.0
    ax.set_ylim(0, top)
    ax.set_xlim(0, 10)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_ylabel("address order; height = log2(pages) + 1")
    ax.set_title(f"{title}: {len(data['vmas'])} VMAs, log scale of size", fontsize=10)
    seen: set[str] = set()
    for r in rows:
        if r["gap"]:
            ax.add_patch(_rect((0.5, r["y"]), 4, r["h"], fc="white", ec="#dddddd", hatch="//"))
            if r["size"] >= GAP_LABEL_MIN:
                ax.text(
                    2.5,
                    r["y"] + r["h"] / 2,
                    _gap_text(r),
                    ha="center",
                    va="center",
                    fontsize=8,
                    bbox={"fc": "white", "ec": "none"},
                )
            continue
        kind = r["kind"]
        label = kind if kind not in seen else None
        seen.add(kind)
        ax.add_patch(
            _rect((0.5, r["y"]), 4, r["h"], fc=KIND_COLORS[kind], ec="black", lw=0.2, label=label)
        )
    starts = {r["start"]: r for r in rows if not r["gap"]}
    ends = {r["end"]: r for r in rows if not r["gap"]}
    for name, addr in data["landmarks"].items():
        at = starts.get(addr) if name in ("program", "heap") else ends.get(addr)
        if at is None:
            continue
        y = at["y"] if name in ("program", "heap") else at["y"] + at["h"]
        ax.annotate(
            f"{name}{' ~' if name == 'mmap_base' else ''} {addr:#x}",
            xy=(4.5, y),
            xytext=(5.2, y),
            fontsize=8,
            va="center",
            arrowprops={"arrowstyle": "-", "lw": 0.6},
        )
    ax.legend(loc="lower right", fontsize=7, title="kind", title_fontsize=8)


def _gap_text(r: dict[str, Any]) -> str:
    if r["start"] <= USER_TOP < r["end"]:
        return f"gap {size_text(r['size'])}:\nend of user space, non-canonical\nhole, kernel half"
    return f"gap {size_text(r['size'])}"


def _draw_scales(ax: Any, data: dict[str, Any]) -> None:
    names = ["mapped\n(VMAs)", "4-level\n48-bit", "5-level\n57-bit"]
    values = [max(data["mapped"], 1), data["four_level"], data["five_level"]]
    ax.bar(names, values, color=["#2ca02c", "#1f77b4", "#ff7f0e"])
    ax.set_yscale("log", base=2)
    ax.set_ylabel("bytes (log2 scale)")
    ax.set_title("virtual address space sizes", fontsize=10)
    for i, v in enumerate(values):
        ax.text(i, v * 1.4, size_text(v), ha="center", fontsize=8)
    ratio = data["five_level"] // data["four_level"]
    ax.text(1.5, 2.0**30, f"5-level = {ratio} x 4-level", ha="center", fontsize=8, style="italic")
    ax.set_ylim(2**12, data["five_level"] * 8)


def _rect(xy: tuple[float, float], w: float, h: float, **kw: Any) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle(xy, w, h, **kw)


__all__ = ["KIND_COLORS", "draw", "layout", "space_data"]
