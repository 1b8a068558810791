"""``vmsim demo walk --plot FILE``: the page walk as a tree from CR3 to the frame.

:func:`walk_tree` says what to draw (plain dicts: the CR3 frame, one node per table the walker
read with its index, the VA bits that chose it, the raw entry and its bits, and the frame at the
end), from the :class:`~vmsim.scenarios.walk.Walk` the demo's ``--json`` prints; :func:`draw`
draws it, top to bottom, one box per table with the entry used highlighted and its bits as
green (set) or grey (clear) chips.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vmsim.cli.plot import figure
from vmsim.scenarios.walk import Walk

# The entry bits shown, in the order of the SDM's tables (PS only where a leaf may be huge).
BITS = ("P", "RW", "US", "A", "D", "PS", "G", "NX")


def walk_tree(walk: Walk) -> dict[str, Any]:
    """CR3, the tables top to bottom and the frame, as plain data."""
    nodes = []
    table_pfn = walk.cr3_pfn
    for lv in walk.levels:
        bits = {
            "P": lv.present,
            "RW": lv.writable,
            "US": lv.user,
            "A": lv.accessed,
            "D": lv.dirty,
            "PS": lv.huge,
            "G": lv.global_,
            "NX": lv.nx,
        }
        nodes.append(
            {
                "level": lv.level,
                "table": lv.name,
                "linux": lv.linux_name,
                "table_pfn": table_pfn,
                "index": lv.index,
                "va_bits": list(lv.bits),
                "entry": lv.entry_hex,
                "kind": lv.kind,
                "bits": bits,
                "next_pfn": lv.pfn,
            }
        )
        table_pfn = lv.pfn
    return {
        "address": walk.address,
        "access": walk.access,
        "paging_levels": walk.paging_levels,
        "cr3_pfn": walk.cr3_pfn,
        "levels": nodes,
        "frame": {
            "pfn": walk.levels[-1].pfn,
            "offset": walk.offset,
            "paddr": walk.paddr,
            "page_size": walk.first.page_size,
        },
    }


def draw(tree: dict[str, Any], path: Path) -> None:
    """Draw :func:`walk_tree` to ``path`` (PNG, 1100 pixels wide, 150 per row high)."""
    n = len(tree["levels"])
    rows = n + 2  # CR3, the tables, the frame
    with figure(path, (11, 1.5 * rows)) as (_fig, ax):
        ax.set_xlim(0, 11)
        ax.set_ylim(0, rows)
        ax.axis("off")
        ax.set_title(
            f"{tree['access']} of {tree['address']:#x}: {tree['paging_levels']}-level page walk",
            fontsize=12,
        )
        top = rows - 0.5

        def box(y: float, text: str, color: str, x: float = 0.3, w: float = 4.2) -> None:
            ax.add_patch(_rect((x, y - 0.35), w, 0.7, fc=color, ec="black", lw=0.8))
            ax.text(x + 0.15, y, text, va="center", fontsize=9, family="monospace")

        def arrow(y0: float, y1: float, label: str) -> None:
            ax.annotate(
                "",
                xy=(1.2, y1 + 0.37),
                xytext=(1.2, y0 - 0.37),
                arrowprops={"arrowstyle": "->", "lw": 1.2},
            )
            ax.text(1.35, (y0 + y1) / 2, label, va="center", fontsize=8, color="#444444")

        box(top, f"CR3 -> top table at pfn {tree['cr3_pfn']:#x}", "#ffe9a8")
        y = top
        for node in tree["levels"]:
            y_next = y - 1
            hi, lo = node["va_bits"]
            arrow(y, y_next, f"index = VA bits {hi}-{lo} = {node['index']}")
            box(
                y_next,
                f"{node['table']} ({node['linux']}) at pfn {node['table_pfn']:#x}\n"
                f"[{node['index']}] = {node['entry']}",
                "#dbe9f6",
                w=4.6,
            )
            for i, name in enumerate(BITS):
                on = node["bits"][name]
                x = 5.2 + i * 0.55
                ax.add_patch(
                    _rect(
                        (x, y_next - 0.2),
                        0.5,
                        0.4,
                        fc="#6abf69" if on else "#e0e0e0",
                        ec="black",
                        lw=0.5,
                    )
                )
                ax.text(x + 0.25, y_next, name, ha="center", va="center", fontsize=7)
            what = "next table" if node["kind"] == "table" else "the page"
            ax.text(
                9.7,
                y_next,
                f"-> {what}\npfn {node['next_pfn']:#x}",
                va="center",
                fontsize=8,
            )
            y = y_next
        frame = tree["frame"]
        arrow(
            y,
            y - 1,
            f"offset = VA bits {frame['page_size'].bit_length() - 2}-0 = {frame['offset']:#x}",
        )
        box(
            y - 1,
            f"frame pfn {frame['pfn']:#x} ({frame['page_size'] // 1024} KiB page)\n"
            f"physical address {frame['paddr']:#x}",
            "#c8e6c9",
        )
        ax.text(5.2, top, "entry bits: green = set, grey = clear", va="center", fontsize=8)


def _rect(xy: tuple[float, float], w: float, h: float, **kw: Any) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle(xy, w, h, **kw)


__all__ = ["BITS", "draw", "walk_tree"]
