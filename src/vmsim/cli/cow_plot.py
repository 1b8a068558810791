"""``vmsim demo cow --plot FILE``: processes, page tables and frames around the copy.

:func:`cow_panels` says what to draw (plain dicts), from the :class:`~vmsim.scenarios.cow.Step`
values the demo's ``--json`` prints: three moments of the story, before the fork (the parent
alone), right after it (both processes map the same frames read-only) and at the end (after the
writes: the copies, the reused frame, the shared page). :func:`draw` draws each as the parent's
PTEs on the left, the frames in the middle and the child's PTEs on the right, one line per PTE:
solid green where the PTE is writable, dashed red where it is read-only (a write faults).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vmsim.cli.plot import figure
from vmsim.scenarios.cow import SHARED_LABEL, Step

# The three moments drawn, by step id, with their titles.
MOMENTS = (
    ("parent-writes", "before fork: the parent's frames"),
    ("fork", "after fork: shared, read-only"),
    ("read-back", "after the writes: copies"),
)
PROCESSES = ("parent", "child")


def cow_panels(steps: Sequence[Step]) -> list[dict[str, Any]]:
    """One panel per moment: every PTE (process, page, pfn, writable) and every frame mapped
    (pfn, refcount, mapcount, who maps it), frames in pfn order."""
    by_id = {s.id: s for s in steps}
    panels: list[dict[str, Any]] = []
    for step_id, title in MOMENTS:
        step = by_id[step_id]
        ptes = []
        frames: dict[int, dict[str, Any]] = {}
        for row in step.pages:
            for who in PROCESSES:
                view = row.parent if who == "parent" else row.child
                if view is None:
                    continue
                ptes.append(
                    {
                        "process": who,
                        "page": row.label,
                        "mapping": row.mapping,
                        "pfn": view.pfn,
                        "writable": view.writable,
                    }
                )
                frame = frames.setdefault(
                    view.pfn,
                    {
                        "pfn": view.pfn,
                        "refcount": view.refcount,
                        "mapcount": view.mapcount,
                        "mapped_by": [],
                    },
                )
                frame["mapped_by"].append(f"{who} {row.label}")
        panels.append(
            {
                "step": step_id,
                "title": title,
                "pages": [row.label for row in step.pages],
                "ptes": ptes,
                "frames": [frames[pfn] for pfn in sorted(frames)],
                # frames no process mapped at the previous moment: the copies
                "new": sorted(
                    set(frames) - {f["pfn"] for f in panels[-1]["frames"]} if panels else []
                ),
            }
        )
    return panels


def draw(panels: list[dict[str, Any]], path: Path) -> None:
    """Draw :func:`cow_panels` to ``path`` (PNG, 1500 pixels wide)."""
    rows = max(max(len(p["pages"]), len(p["frames"])) for p in panels)
    with figure(path, (15, 1.0 + 0.6 * rows), ncols=len(panels)) as (_fig, axes):
        for ax, panel in zip(axes, panels, strict=True):
            _draw_panel(ax, panel, rows)


def _draw_panel(ax: Any, panel: dict[str, Any], rows: int) -> None:
    ax.set_xlim(-0.1, 10.1)
    ax.set_ylim(-0.8, rows + 0.2)
    ax.invert_yaxis()
    ax.axis("off")
    ax.set_title(panel["title"], fontsize=11)
    xs = {"parent": 0.0, "frame": 3.4, "child": 7.6}
    ax.text(xs["parent"] + 1.2, -0.5, "parent PTEs", ha="center", fontsize=9, weight="bold")
    ax.text(xs["frame"] + 1.6, -0.5, "frames", ha="center", fontsize=9, weight="bold")
    ax.text(xs["child"] + 1.2, -0.5, "child PTEs", ha="center", fontsize=9, weight="bold")
    has_child = any(p["process"] == "child" for p in panel["ptes"])
    for who in PROCESSES if has_child else ("parent",):
        mapped = {p["page"] for p in panel["ptes"] if p["process"] == who}
        for label in panel["pages"]:
            if label not in mapped:
                y = page_y_of(panel, label)
                ax.add_patch(_rect((xs[who], y - 0.25), 2.4, 0.5, fc="white", linestyle=":"))
                ax.text(
                    xs[who] + 1.2,
                    y,
                    f"{_name(label)}: no PTE",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="#666666",
                )
    frame_y = {f["pfn"]: i for i, f in enumerate(panel["frames"])}
    for f in panel["frames"]:
        y = frame_y[f["pfn"]]
        shared = len(f["mapped_by"]) > 1
        ax.add_patch(_rect((xs["frame"], y - 0.3), 3.2, 0.6, fc="#ffe0b2" if shared else "#c8e6c9"))
        ax.text(
            xs["frame"] + 1.6,
            y,
            f"pfn {f['pfn']:#x}{' (new: a copy)' if f['pfn'] in panel['new'] else ''}\nrefcount {f['refcount']}, mapcount {f['mapcount']}",
            ha="center",
            va="center",
            fontsize=8,
        )
    for p in panel["ptes"]:
        x = xs[p["process"]]
        y = page_y_of(panel, p["page"])
        ax.add_patch(_rect((x, y - 0.25), 2.4, 0.5, fc="#dbe9f6"))
        ax.text(
            x + 1.2,
            y,
            f"{_name(p['page'])}  {'RW' if p['writable'] else 'RO'}",
            ha="center",
            va="center",
            fontsize=8,
        )
        x0 = x + 2.4 if p["process"] == "parent" else x
        x1 = xs["frame"] if p["process"] == "parent" else xs["frame"] + 3.2
        ax.plot(
            [x0, x1],
            [y, frame_y[p["pfn"]]],
            color="#2e7d32" if p["writable"] else "#c62828",
            linestyle="-" if p["writable"] else "--",
            lw=1.3,
        )
    if not has_child:
        ax.text(xs["child"] + 1.2, rows / 2, "(no child yet)", ha="center", fontsize=9)
    if panel["step"] != MOMENTS[1][0]:
        return
    ax.text(
        5,
        rows - 0.1,
        "green solid: writable PTE, red dashed: read-only (a write faults); "
        "orange frame: mapped more than once",
        ha="center",
        fontsize=7,
        color="#444444",
    )


def page_y_of(panel: dict[str, Any], label: str) -> int:
    return int(panel["pages"].index(label))


def _name(label: str) -> str:
    return "shared" if label == SHARED_LABEL else f"page {label}"


def _rect(xy: tuple[float, float], w: float, h: float, **kw: Any) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle(xy, w, h, **{"ec": "black", "lw": 0.6, **kw})


__all__ = ["MOMENTS", "cow_panels", "draw"]
