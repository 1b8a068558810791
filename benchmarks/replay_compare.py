"""Every replay report of the fixtures and the corpus, for comparing two versions of vmsim.

A speed change to the replay must change no report. This replays each trace of
tests/fixtures/traces and tests/fixtures/traces/corpus (the ``-ff`` directory too) at three
limits, through ``vmsim replay --json`` as a user runs it, and writes one JSON line per
replay: the exit status, the JSON report, and what the JSON leaves out (the map_count
series, the per-call deltas, the failures and problems, the passes run).

Run it once with the old code first on the path and once with the new, then compare::

    git archive OLD src | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old/src .venv/bin/python benchmarks/replay_compare.py /tmp/old.jsonl
    .venv/bin/python benchmarks/replay_compare.py /tmp/new.jsonl
    .venv/bin/python benchmarks/replay_compare.py --diff /tmp/old.jsonl /tmp/new.jsonl

The fill, threads and arenas programs are built with gcc into a scratch directory (their
traces execve them); without gcc their layouts are estimated, the same way in both runs.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TRACES = ROOT / "tests" / "fixtures" / "traces"
CORPUS = TRACES / "corpus"
PROGRAMS = ROOT / "tests" / "fixtures" / "programs"
LIMITS = (65530, 1000, 60)


def cases(work: Path) -> list[tuple[str, list[str]]]:
    out = []
    for p in sorted(CORPUS.glob("*.strace.gz")):
        name = p.name.removesuffix(".strace.gz")
        opts = []
        if name.startswith("shebang"):
            opts += ["--cwd", str(PROGRAMS)]
        if name.startswith("attach"):
            one = CORPUS / f"{name}.smaps.gz"
            # one snapshot, or NAME.PID.smaps.gz for each of several processes attached together
            snaps = [one] if one.exists() else sorted(CORPUS.glob(f"{name}.[0-9]*.smaps.gz"))
            for snap in snaps:
                smaps = work / snap.name.removesuffix(".gz")
                with gzip.open(snap, "rt") as f:
                    smaps.write_text(f.read())
                pid = "" if snap is one else snap.name.split(".")[-3] + "="
                opts += ["--from-maps", f"{pid}{smaps}"]
        out.append((f"corpus/{name}", [str(p), *opts]))
    for p in sorted(TRACES.iterdir()):
        if p.is_file():
            out.append((p.name, [str(p), "--cwd", str(work)]))
    out.append(("threads-ff", [str(TRACES / "threads-ff"), "--cwd", str(work)]))
    return out


def dump(out_path: Path) -> int:
    import vmsim.cli.replay as cli_replay
    from vmsim.cli.main import main

    captured: list[Any] = []
    replay = cli_replay.replay

    def keep(*args: Any, **kwargs: Any) -> Any:
        rep = replay(*args, **kwargs)
        captured.append(rep)
        return rep

    cli_replay.replay = keep  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as tmp, open(out_path, "w") as out:
        work = Path(tmp)
        if shutil.which("gcc") is not None:
            for prog in ("threads", "arenas", "fill_map_count"):
                src = str(PROGRAMS / f"{prog}.c")
                cmd = ["gcc", "-O1", "-g", "-pthread", "-o", str(work / prog), src]
                subprocess.run(cmd, check=True)
        for name, argv in cases(work):
            for limit in LIMITS:
                captured.clear()
                buf = io.StringIO()
                with contextlib.redirect_stdout(buf):
                    try:
                        flags = ["--json", "--no-plot", "--no-progress"]
                        rc: object = main(["replay", *argv, "--max-map-count", str(limit), *flags])
                    except SystemExit as e:
                        rc = e.code
                rep = captured[0] if captured else None
                extra = None
                if rep is not None:
                    extra = {
                        "series": rep.series,
                        "deltas": sorted((str(k), v) for k, v in rep.deltas.items()),
                        "passes": rep.passes,
                        "failures": [f.to_json() for f in rep.failures],
                        "problems": [(p.lineno, p.line, p.message) for p in rep.problems],
                    }
                stdout = buf.getvalue().replace(str(work), "WORK")
                record = {"case": name, "limit": limit, "rc": rc, "stdout": stdout}
                out.write(json.dumps({**record, "extra": extra}, default=str) + "\n")
                print(name, limit, rc, file=sys.stderr, flush=True)
    return 0


def diff(old: Path, new: Path) -> int:
    a = [json.loads(line) for line in old.read_text().splitlines()]
    b = [json.loads(line) for line in new.read_text().splitlines()]
    if len(a) != len(b):
        print(f"{len(a)} reports against {len(b)}")
        return 1
    bad = 0
    for x, y in zip(a, b, strict=True):
        if x != y:
            bad += 1
            fields = [k for k in x if x[k] != y.get(k)]
            print("differs:", x["case"], x["limit"], fields)
    print(f"{len(a)} reports, {bad} differ")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("out", type=Path, nargs="?", help="write the reports here (JSON lines)")
    parser.add_argument("--diff", nargs=2, type=Path, metavar=("OLD", "NEW"))
    args = parser.parse_args(argv)
    if args.diff:
        return diff(*args.diff)
    if args.out is None:
        parser.error("give OUT or --diff OLD NEW")
    return dump(args.out)


if __name__ == "__main__":
    sys.exit(main())
