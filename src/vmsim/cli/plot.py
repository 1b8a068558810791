"""The one way commands write a plot: matplotlib without a display (Agg), one figure, saved
as a PNG at 100 dpi; an unwritable path is a one-line CliError, never a traceback.

matplotlib is imported on first use only: it takes a second to load, and most runs (--json,
--no-plot) never plot.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vmsim.cli.errors import CliError


@contextmanager
def figure(
    path: Path, size: tuple[float, float], ncols: int = 1, width_ratios: list[float] | None = None
) -> Iterator[tuple[Any, Any]]:
    """``with figure(path, (9, 4)) as (fig, ax):`` draw on ``ax`` (with ``ncols`` > 1, ``ax`` is
    the row of axes, ``width_ratios`` their relative widths); on leaving the block the layout is
    tightened and the PNG written to ``path``, and the figure closed either way."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(
        1, ncols, figsize=size, gridspec_kw={"width_ratios": width_ratios} if width_ratios else None
    )
    try:
        yield fig, ax
        fig.tight_layout()
        try:
            fig.savefig(path, dpi=100)
        except OSError as e:
            raise CliError(f"{path}: cannot write the plot: {e.strerror}") from e
    finally:
        plt.close(fig)


__all__ = ["figure"]
