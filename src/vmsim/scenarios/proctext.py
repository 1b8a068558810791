"""The model's /proc text read back as numbers, for the scenarios that print figures from it
(demos, the tour): ``Name: value [kB]`` files (meminfo, smaps_rollup) and /proc/vmstat."""

from __future__ import annotations

import vmsim


def fields(text: str) -> dict[str, int]:
    """``Name: value [kB]`` lines (meminfo, smaps_rollup) -> {name: value}; lines whose value
    is not a number (VmFlags, THPeligible's neighbours) are left out."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        words = rest.split()
        if sep and words and words[0].isdigit():
            out[name.strip()] = int(words[0])
    return out


def vmstat(m: vmsim.Machine) -> dict[str, int]:
    """/proc/vmstat of the model machine -> {name: value}."""
    out: dict[str, int] = {}
    for line in m.vmstat().splitlines():
        name, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[name] = int(value)
    return out


__all__ = ["fields", "vmstat"]
