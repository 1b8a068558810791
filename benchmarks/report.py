"""Turn the two SideResults into a summary (for --json) and rich tables (for people)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.table import Table
from scenario import COUNT_KEYS, PHASE_TITLES, PHASES, SideResult, targets, window

SPEED_TARGET = 3.0  # vmsim wall time <= 3x the kernel's (issue 11, item 4)
SCALING_TARGET = 2.0  # per-call cost at ~65k VMAs <= 2x the cost at ~1k (O(log n))


def _scaling(result: SideResult, low: int, high: int, size: int) -> dict[str, Any]:
    lo, hi = window(result, low, size), window(result, high, size)
    return {"low": asdict(lo), "high": asdict(hi), "ratio": hi.median_ns / lo.median_ns}


def summarise(
    kernel: SideResult | None, sim: SideResult, skipped: str | None, repeat: int, size: int
) -> dict[str, Any]:
    """Everything measured, plus the verdicts, as plain JSON-able data."""
    low, high = targets(sim.max_map_count, size)
    out: dict[str, Any] = {
        "repeat": repeat,
        "npages": sim.npages,
        "max_map_count": sim.max_map_count,
        "window_calls": size,
        "kernel_skipped": skipped,
        "sides": {},
        "scaling": {},
    }
    for result in (kernel, sim):
        if result is None:
            continue
        side = {
            "map_count": result.map_count,
            "fill_errno": result.fill_errno,
            "maps_bytes": result.maps_bytes,
            "phases": {k: asdict(v) for k, v in result.phases.items()},
            "total_seconds": result.total_seconds,
        }
        out["sides"][result.side] = side
        out["scaling"][result.side] = _scaling(result, low, high, size)
    out["scaling_ok"] = out["scaling"]["vmsim"]["ratio"] <= SCALING_TARGET
    if kernel is not None:
        ratios = {
            name: sim.phases[name].seconds / kernel.phases[name].seconds
            for name in PHASES
            if kernel.phases[name].seconds > 0
        }
        ratios["total"] = sim.total_seconds / kernel.total_seconds
        out["vs_kernel"] = ratios
        out["speed_ok"] = ratios["total"] <= SPEED_TARGET
        out["counts_agree"] = (
            kernel.map_count == sim.map_count
            and kernel.fill_errno == sim.fill_errno
            and kernel.phases["fill"].calls == sim.phases["fill"].calls
        )
    return out


def _time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.1f} µs"


def _centre(win: dict[str, int]) -> int:
    """The window's target if the window covers it (it may not if the region ran out)."""
    lo, hi = win["map_count_from"], win["map_count_to"]
    return win["target"] if lo <= win["target"] <= hi else (lo + hi) // 2


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _verdict(value: float, limit: float) -> str:
    colour = "green" if value <= limit else "red"
    return f"[{colour}]{value:.1f}x[/{colour}]"


def render(console: Console, summary: dict[str, Any]) -> None:
    """Three tables: phases side by side, per-call scaling, and the map_count cross-check."""
    sides = summary["sides"]
    kernel, sim = sides.get("kernel"), sides["vmsim"]
    title = (
        f"Fill to the limit: {summary['npages']} pages, max_map_count {summary['max_map_count']}"
        f" (best of {summary['repeat']})"
    )
    phases = Table(title=title)
    phases.add_column("phase")
    phases.add_column("calls", justify="right")
    phases.add_column("kernel", justify="right")
    phases.add_column("vmsim", justify="right")
    phases.add_column(f"vmsim/kernel\n(target <= {SPEED_TARGET:.0f}x)", justify="right")
    ratios = summary.get("vs_kernel", {})
    for name in PHASES:
        calls = sim["phases"][name]["calls"]
        k_time = _time(kernel["phases"][name]["seconds"]) if kernel else "-"
        ratio = f"{ratios[name]:.1f}x" if name in ratios else "-"
        phases.add_row(
            PHASE_TITLES[name], f"{calls:,}", k_time, _time(sim["phases"][name]["seconds"]), ratio
        )
    phases.add_section()
    phases.add_row(
        "[b]total[/b]",
        "",
        _time(kernel["total_seconds"]) if kernel else "-",
        _time(sim["total_seconds"]),
        _verdict(ratios["total"], SPEED_TARGET) if "total" in ratios else "-",
    )
    console.print(phases)

    scaling = Table(
        title=f"Per-call cost of an mprotect split (median of {summary['window_calls']})"
    )
    scaling.add_column("side")
    for key in ("low", "high"):
        win = summary["scaling"]["vmsim"][key]
        scaling.add_column(
            f"at ~{_centre(win):,} VMAs\n({win['map_count_from']:,}..{win['map_count_to']:,})",
            justify="right",
        )
    scaling.add_column(f"ratio (target <= {SCALING_TARGET:.0f}x)", justify="right")
    for side in ("kernel", "vmsim"):
        if side not in summary["scaling"]:
            continue
        s = summary["scaling"][side]
        ratio = (
            _verdict(s["ratio"], SCALING_TARGET) if side == "vmsim" else f"{s['ratio']:.2f}x (ref)"
        )
        scaling.add_row(
            side,
            _time(s["low"]["median_ns"] / 1e9),
            _time(s["high"]["median_ns"] / 1e9),
            ratio,
        )
    console.print(scaling)

    counts = Table(title="map_count at each point (kernel: lines of /proc/self/maps - 1)")
    counts.add_column("point")
    counts.add_column("kernel", justify="right")
    counts.add_column("vmsim", justify="right")
    counts.add_column("agree")
    rows: list[tuple[str, Any, Any]] = [
        (key.replace("_", " "), kernel["map_count"][key] if kernel else None, sim["map_count"][key])
        for key in COUNT_KEYS
    ]
    rows.append(
        (
            "fill calls",
            kernel["phases"]["fill"]["calls"] if kernel else None,
            sim["phases"]["fill"]["calls"],
        )
    )
    rows.append(("fill errno", kernel["fill_errno"] if kernel else None, sim["fill_errno"]))
    for label, k, v in rows:
        agree = "-" if k is None else ("[green]yes[/green]" if k == v else "[red]NO[/red]")
        counts.add_row(label, _cell(k), _cell(v), agree)
    console.print(counts)
    if not sim["fill_errno"]:
        console.print(
            "[yellow]the region ran out before the limit:[/yellow] use --pages >= 2 x max_map_count"
        )
    if summary["kernel_skipped"]:
        console.print(f"[yellow]kernel side skipped:[/yellow] {summary['kernel_skipped']}")
