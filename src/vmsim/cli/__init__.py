"""The ``vmsim`` command line.

One module per subcommand: it parses its options, drives the library, and hands plain values to
a renderer (rich text, ``--explain`` lines or JSON). The library never prints; errors become exit
codes in one place, :func:`vmsim.cli.main.main`.
"""

from __future__ import annotations

__all__: list[str] = []
