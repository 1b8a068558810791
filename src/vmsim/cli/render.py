"""Renderers shared by subcommands: JSON output and the output options of the demos. (The
/proc/pid/maps excerpt helpers live in :mod:`vmsim.scenarios.maps_text`; they are re-exported
here.)"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from vmsim.scenarios.maps_text import MapsLine, excerpt, new_lines, parse_maps, vma_at


def write_json(data: Any) -> None:
    """Machine-readable output goes to stdout unstyled, whatever the terminal."""
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


def add_story_modes(parser: argparse.ArgumentParser, json_help: str) -> None:
    """The output options every demo takes: --explain | --json, and --no-color."""
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--explain", action="store_true", help="one line per step")
    mode.add_argument("--json", action="store_true", help=json_help)
    parser.add_argument("--no-color", action="store_true", help="plain text, no colours")


__all__ = [
    "MapsLine",
    "add_story_modes",
    "excerpt",
    "new_lines",
    "parse_maps",
    "vma_at",
    "write_json",
]
