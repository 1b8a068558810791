"""``vmsim exporter``: serve every process's VMA count (map_count), its headroom under
vm.max_map_count, its VMAs by kind and how fast it grows, as Prometheus metrics on /metrics.

/proc is read at most every --interval seconds however often the endpoint is scraped. Only
the --top processes by map_count (plus up to --top more that would reach the limit soonest)
are exported one by one, so the number of series stays bounded however many processes run.
Processes that exit or cannot be read are counted in vmsim_scrape_errors_total{reason}; the
exporter keeps serving. Alert rules: contrib/prometheus/vmsim-rules.yml.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console

from vmsim.cli import options
from vmsim.cli.commands import add_command
from vmsim.cli.errors import CliError
from vmsim.exporter import (
    DEFAULT_INTERVAL,
    DEFAULT_TOP,
    DEFAULT_WINDOW,
    GROUP_BY,
    ExporterConfig,
    VmaCollector,
    render,
    serve,
)
from vmsim.exporter.procscan import read_max_map_count

DEFAULT_LISTEN = "127.0.0.1:9747"


def listen_address(text: str) -> tuple[str, int]:
    """HOST:PORT (``[::1]:9747`` for IPv6); port 0 takes any free port."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT (e.g. {DEFAULT_LISTEN}, or 0.0.0.0:9747 for every "
            f"interface), got {text!r}"
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise argparse.ArgumentTypeError(f"the port must be within 0..65535, got {port_text!r}")
    return host, int(port_text)


def pattern(text: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"not a regular expression: {text!r}: {exc}") from None


def positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {n}")
    return n


def register(subparsers: Any) -> None:
    """Add ``exporter`` to the ``vmsim`` subcommands."""
    parser = add_command(
        subparsers,
        "exporter",
        "Prometheus exporter: map_count per process, VMAs by kind, growth, time to the limit",
        __doc__,
        run,
    )
    parser.add_argument(
        "--listen",
        type=listen_address,
        default=listen_address(DEFAULT_LISTEN),
        metavar="HOST:PORT",
        help=f"where to serve /metrics (default {DEFAULT_LISTEN}; port 0: any free port)",
    )
    parser.add_argument(
        "--interval",
        type=options.interval,
        default=DEFAULT_INTERVAL,
        metavar="S",
        help=f"read /proc at most every S seconds (default {DEFAULT_INTERVAL:g})",
    )
    parser.add_argument(
        "--window",
        type=options.interval,
        default=DEFAULT_WINDOW,
        metavar="S",
        help=f"fit the growth over the samples of the last S seconds (default {DEFAULT_WINDOW:g})",
    )
    parser.add_argument(
        "--top",
        type=positive_int,
        default=DEFAULT_TOP,
        metavar="N",
        help=f"export the N processes with most VMAs, plus up to N more that reach the limit "
        f"soonest (default {DEFAULT_TOP})",
    )
    parser.add_argument(
        "--group-by",
        choices=GROUP_BY,
        default="none",
        help="also export per-group figures (vmsim_group_*), by comm or cgroup (default none)",
    )
    parser.add_argument(
        "--pid-filter",
        type=pattern,
        metavar="REGEX",
        help="only processes whose PID or comm matches REGEX in full (e.g. '1234|5678', 'java')",
    )
    parser.add_argument(
        "--max-map-count",
        type=options.map_count(1),
        metavar="N",
        help="the limit to compare with, 1..2**31-1, for tests and what-ifs; the sysctl is "
        "never changed (default: this machine's vm.max_map_count, re-read each refresh)",
    )
    parser.add_argument(
        "--proc-root",
        type=Path,
        default=Path("/proc"),
        metavar="DIR",
        help="read processes from DIR instead of /proc (tests, recorded trees)",
    )
    parser.add_argument(
        "--once", action="store_true", help="print the metrics once on stdout, then exit"
    )


def _config(args: argparse.Namespace) -> ExporterConfig:
    if not args.proc_root.is_dir():
        raise CliError(f"--proc-root {args.proc_root}: not a directory")
    if args.max_map_count is None:
        try:
            read_max_map_count(args.proc_root)
        except (OSError, ValueError) as exc:
            raise CliError(
                f"cannot read {args.proc_root / 'sys/vm/max_map_count'} ({exc}); "
                "pass --max-map-count N"
            ) from exc
    return ExporterConfig(
        proc_root=args.proc_root,
        interval=args.interval,
        window=args.window,
        top=args.top,
        group_by=args.group_by,
        pid_filter=args.pid_filter,
        max_map_count=args.max_map_count,
    )


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace, console: Console) -> int:
    collector = VmaCollector(_config(args))
    if args.once:
        sys.stdout.buffer.write(render(collector))
        sys.stdout.flush()
        return 0
    host, port = args.listen
    try:
        server = serve(collector, host, port)
    except OSError as exc:
        raise CliError(f"--listen {host}:{port}: {exc.strerror or exc}") from exc
    bound_host, bound_port = str(server.server_address[0]), int(server.server_address[1])
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    # one plain line a supervisor (or a test) can read: where the metrics are
    print(f"vmsim exporter: serving http://{shown}:{bound_port}/metrics", flush=True)
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        return 0  # Ctrl-C or SIGTERM: how a server is stopped
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.shutdown()
        server.server_close()
    return 0


__all__ = ["listen_address", "register", "run"]
