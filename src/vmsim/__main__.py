"""``python -m vmsim``: the ``vmsim`` command."""

import sys

from vmsim.cli.main import main

if __name__ == "__main__":
    sys.exit(main())


__all__: list[str] = []
