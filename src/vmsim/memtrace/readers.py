"""Memory-access trace readers (issue 12 item 1): Valgrind lackey, Intel Pin's pinatrace,
ChampSim binary traces and vmsim's ``.npz``, plain or compressed (``.gz``, ``.xz``, ``.zst``),
streamed in :class:`~vmsim.memtrace.records.TraceChunk` s with bounded memory.

:func:`open_memtrace` sniffs the compression from the file's magic bytes and the format from
its content (the name is only a hint), reads the header (lackey's ``==PID==`` lines), and
returns a :class:`MemTrace`; iterating it opens the file and yields chunks of at most
``chunk_records`` records. Text is read in byte blocks (``block_bytes``, 8 MiB) cut at the
last newline and parsed by compiled code (:mod:`vmsim.memtrace.reader_parse`), never line by
line in Python; binary records are decoded with numpy. Memory stays about one block plus one
chunk whatever the size of the trace.

Anything that is not a trace of the format read raises :class:`TraceError` naming the file
and the 1-based line (text) or byte offset (binary, and truncated compressed streams).

The formats are described in ``docs/memtrace.md``.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from vmsim.memtrace import reader_parse as rp
from vmsim.memtrace.npz import NPZ_DTYPES, NPZ_LAYOUT_VERSION, NpzReader, npz_header
from vmsim.memtrace.records import TraceChunk, TraceError
from vmsim.memtrace.streams import Stream

__all__ = [
    "BLOCK_BYTES",
    "CHAMPSIM_DTYPE",
    "CHAMPSIM_RECORD",
    "FORMATS",
    "MemTrace",
    "TraceEvent",
    "convert",
    "open_memtrace",
    "sniff",
]

FORMATS: Final = ("lackey", "pinatrace", "champsim", "npz")
BLOCK_BYTES: Final = 8 << 20
MAX_EVENTS: Final = 4096  # event lines kept per parser call before Python reads them
_QUOTE: Final = 60  # characters of a bad line quoted in an error

CHAMPSIM_RECORD: Final = 64
CHAMPSIM_DTYPE: Final = np.dtype(
    [
        ("ip", "<u8"),
        ("is_branch", "u1"),
        ("branch_taken", "u1"),
        ("destination_registers", "u1", (2,)),
        ("source_registers", "u1", (4,)),
        ("destination_memory", "<u8", (2,)),
        ("source_memory", "<u8", (4,)),
    ]
)
"""ChampSim's ``struct input_instr`` (``inc/trace_instruction.h``), 64 bytes, little-endian,
no padding. Newer ChampSim (2024+) appends a ``load_type`` byte (72 bytes with padding): not
read here (a file of those is rejected at its first record whose branch bytes are not 0/1)."""
assert CHAMPSIM_DTYPE.itemsize == CHAMPSIM_RECORD

_NPZ_MAGIC: Final = b"PK\x03\x04"
_EMPTY_ZIP: Final = b"PK\x05\x06"

_PROBLEMS: Final = {
    rp.STATUS_NOT_RECORD: "not a {fmt} record",
    rp.STATUS_BAD_ADDRESS: "bad address (hex digits expected)",
    rp.STATUS_LONG_ADDRESS: "address longer than 16 hex digits",
    rp.STATUS_BAD_SIZE: "bad size (1 to 5 decimal digits expected after the comma)",
    rp.STATUS_SIZE_RANGE: "size larger than 65535",
    rp.STATUS_TRAILING: "unexpected text after the record",
    rp.STATUS_BAD_PTR: "bad pointer (0x... or (nil) expected)",
    rp.STATUS_AFTER_EOF: "a line after #eof (pinatrace writes #eof last)",
}


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """A line of a text trace that is not an access: lackey's ``==PID==`` (``--PID--``,
    ``**PID**``) lines and valgrind's ``SYSCALL[...]`` lines (``--trace-syscalls=yes``),
    pinatrace's ``#eof``. ``record`` is the number of records before it in the whole trace
    (the event happened between record ``record - 1`` and record ``record``)."""

    record: int
    line: int
    text: str


# --- sniffing ----------------------------------------------------------------------------


def _text_line_format(line: bytes) -> str | None:
    """The text format a (first meaningful) line belongs to, if any."""
    if line[:3] in (b"I  ", b" L ", b" S ", b" M ") or line.startswith((b"SYSCALL[", b" --> ")):
        return "lackey"
    for c in b"=-*":
        d = bytes([c, c])
        if line.startswith(d):
            rest = line[2:]
            digits = len(rest) - len(rest.lstrip(b"0123456789"))
            if digits and rest[digits : digits + 2] == d:
                return "lackey"
    if (line.startswith((b"0x", b"(nil)")) and b": " in line[:24]) or line == b"#eof":
        return "pinatrace"
    return None


def _champsim_like(head: bytes) -> bool:
    """Whole 64-byte records whose branch bytes are 0/1 and whose ip is not zero."""
    n = len(head) // CHAMPSIM_RECORD
    if n == 0:
        return False
    recs = np.frombuffer(head[: n * CHAMPSIM_RECORD], CHAMPSIM_DTYPE)
    return bool(
        (recs["is_branch"] <= 1).all()
        and (recs["branch_taken"] <= 1).all()
        and (recs["ip"] != 0).all()
    )


def sniff(path: str | os.PathLike[str]) -> tuple[str, str]:
    """(format, compression) of the trace at ``path``, from its content: the compression from
    the magic bytes, the format from the first bytes of the decompressed data (the file name
    breaks no tie: a ``.zst`` lackey trace is lackey). Raises TraceError when it is none."""
    p = os.fspath(path)
    s = Stream(p)
    try:
        head = s.read(1 << 16)
    finally:
        s.close()
    if not head:
        raise TraceError(p, "empty file: no trace records")
    if head.startswith((_NPZ_MAGIC, _EMPTY_ZIP)):
        if s.compression:
            raise TraceError(p, f"a zip/npz file inside {s.compression}: decompress it first")
        return "npz", ""
    text_lines = [ln for ln in head.split(b"\n")[:-1] if ln] or [head]
    fmt = _text_line_format(text_lines[0])
    if fmt is not None:
        return fmt, s.compression
    if _champsim_like(head):
        return "champsim", s.compression
    raise TraceError(
        p,
        f"not a memory trace vmsim can read (lackey, pinatrace, champsim, npz): "
        f"it starts with {_quote(head[:40])}",
    )


def _quote(b: bytes) -> str:
    text = repr(b[:_QUOTE])
    return text + ("..." if len(b) > _QUOTE else "")


# --- the trace ---------------------------------------------------------------------------


class MemTrace:
    """A trace file, ready to be read: ``format``, ``compression``, ``header`` (lackey: the
    ``pid``, ``parent_pid``, ``command``, ``tool`` and ``valgrind`` version of the
    ``==PID==`` lines; npz: what the converter stored) and, after a complete pass,
    ``records`` and ``lines`` (text) read. Iterating yields :class:`TraceChunk` s;
    :meth:`chunks_with_events` pairs each with the non-record lines read before its end."""

    def __init__(
        self,
        path: str,
        fmt: str,
        compression: str,
        chunk_records: int,
        block_bytes: int,
    ) -> None:
        self.path = path
        self.format = fmt
        self.compression = compression
        self.chunk_records = chunk_records
        self.block_bytes = block_bytes
        self.header: dict[str, Any] = {}
        self.records = 0
        self.lines = 0
        if fmt == "lackey":
            self.header = _lackey_header(path)
        elif fmt == "npz":
            self.header = npz_header(path)

    def __repr__(self) -> str:
        return f"MemTrace({self.path!r}, format={self.format!r})"

    def __iter__(self) -> Iterator[TraceChunk]:
        for chunk, _events in self.chunks_with_events():
            yield chunk

    def chunks_with_events(self) -> Iterator[tuple[TraceChunk, list[TraceEvent]]]:
        """Chunks, each with the events (non-record lines) read since the previous one."""
        self.records = 0
        self.lines = 0
        if self.format == "lackey":
            yield from self._text(rp.parse_lackey)
        elif self.format == "pinatrace":
            yield from self._text(rp.parse_pinatrace)
        elif self.format == "champsim":
            for chunk in self._champsim():
                yield chunk, []
        elif self.format == "npz":
            for chunk in self._npz():
                yield chunk, []
        else:  # pragma: no cover - open_memtrace checks the name
            raise ValueError(self.format)

    def events(self) -> Iterator[TraceEvent]:
        """Only the events of the whole trace (one full pass)."""
        for _chunk, events in self.chunks_with_events():
            yield from events

    # -- text ------------------------------------------------------------------------------

    def _text(
        self, parse: Callable[..., tuple[int, int, int, int, int]]
    ) -> Iterator[tuple[TraceChunk, list[TraceEvent]]]:
        cap = self.chunk_records
        buf = np.empty(self.block_bytes, np.uint8)
        ev_start = np.empty(MAX_EVENTS, np.int64)
        ev_end = np.empty(MAX_EVENTS, np.int64)
        ev_rec = np.empty(MAX_EVENTS, np.int64)
        ev_line = np.empty(MAX_EVENTS, np.int64)
        pinatrace = self.format == "pinatrace"
        saw_eof = False

        def fresh() -> tuple[Any, Any, Any]:
            return np.empty(cap, np.uint64), np.empty(cap, np.uint8), np.empty(cap, np.uint16)

        addr, kind, size = fresh()
        n = 0
        lines = 0  # lines read, whole input
        first_line = 0  # line of addr[0] of the chunk being filled
        line_of_first = -1
        events: list[TraceEvent] = []
        carry = 0
        total = 0
        stream = Stream(self.path)
        try:
            while True:
                got = stream.readinto(buf[carry:])
                filled = carry + got
                total += got
                at_eof = carry + got < len(buf)
                if at_eof:
                    end = filled
                else:
                    end = rp.last_newline(buf, filled)
                    if end == 0:
                        raise TraceError(
                            self.path,
                            f"line longer than {len(buf)} bytes: not a {self.format} trace",
                            line=lines + 1,
                        )
                pos = 0
                while pos < end:
                    if saw_eof:
                        self._bad(buf, pos, end, lines, rp.STATUS_AFTER_EOF)
                    before = n
                    pos, n, n_ev, lines_after, status = parse(
                        buf, pos, end, addr, kind, size, n,
                        ev_start, ev_end, ev_rec, ev_line, 0, lines,
                    )  # fmt: skip
                    if line_of_first < 0 and n > before:
                        # the first record of the chunk is the first record line after
                        # the events (if any) that precede it in this call
                        line_of_first = lines + 1 + int((ev_rec[:n_ev] == before).sum())
                    for i in range(n_ev):
                        text = buf[ev_start[i] : ev_end[i]].tobytes()
                        events.append(
                            TraceEvent(
                                self.records + int(ev_rec[i]),
                                int(ev_line[i]),
                                text.decode("utf-8", "replace"),
                            )
                        )
                        if pinatrace:
                            saw_eof = True
                    lines = lines_after
                    if status == rp.STATUS_OUTPUT_FULL:
                        first_line = line_of_first
                        yield TraceChunk(addr, kind, size, first_line), events
                        self.records += n
                        addr, kind, size = fresh()
                        n = 0
                        line_of_first = -1
                        events = []
                    elif status >= rp.STATUS_NOT_RECORD:
                        self._bad(buf, pos, end, lines, status)
                carry = filled - end
                if carry:
                    buf[:carry] = buf[end:filled]
                if at_eof:
                    break
        finally:
            stream.close()
        if total == 0:
            raise TraceError(self.path, "empty file: no trace records")
        if pinatrace and not saw_eof:
            raise TraceError(
                self.path,
                "no #eof line at the end: the trace is cut short "
                "(pinatrace writes #eof when the program ends)",
                line=lines + 1,
            )
        self.lines = lines
        if n or events:
            yield TraceChunk(addr[:n], kind[:n], size[:n], max(line_of_first, 0)), events
            self.records += n

    def _bad(self, buf: npt.NDArray[np.uint8], pos: int, end: int, lines: int, status: int) -> None:
        stop = pos
        limit = min(end, pos + 4 * _QUOTE)
        while stop < limit and buf[stop] != 10:
            stop += 1
        text = buf[pos:stop].tobytes()
        problem = _PROBLEMS[status].format(fmt=self.format)
        raise TraceError(self.path, f"{problem}: {_quote(text)}", line=lines + 1)

    # -- champsim --------------------------------------------------------------------------

    def _champsim(self) -> Iterator[TraceChunk]:
        per_block = max(1, self.block_bytes // CHAMPSIM_RECORD)
        buf = np.empty(per_block * CHAMPSIM_RECORD, np.uint8)
        index = 0  # records read before this block
        stream = Stream(self.path)
        pending: list[TraceChunk] = []
        try:
            while True:
                got = stream.readinto(buf)
                if got == 0:
                    break
                whole = got // CHAMPSIM_RECORD
                recs = buf[: whole * CHAMPSIM_RECORD].view(CHAMPSIM_DTYPE)
                bad = np.flatnonzero((recs["is_branch"] > 1) | (recs["branch_taken"] > 1))
                if bad.size:
                    i = int(bad[0])
                    raise TraceError(
                        self.path,
                        f"not a ChampSim record (is_branch={int(recs['is_branch'][i])}, "
                        f"branch_taken={int(recs['branch_taken'][i])}: 0 or 1 expected)",
                        offset=(index + i) * CHAMPSIM_RECORD,
                    )
                if whole:
                    words = buf[: whole * CHAMPSIM_RECORD].view("<u8").reshape(whole, 8)
                    addr = np.empty(whole * 7, np.uint64)
                    kind = np.empty(whole * 7, np.uint8)
                    rec_no = np.empty(whole * 7, np.int64)
                    m = rp.decode_champsim(words, index + 1, addr, kind, rec_no)
                    for lo in range(0, m, self.chunk_records):
                        hi = min(m, lo + self.chunk_records)
                        pending.append(
                            TraceChunk(
                                addr[lo:hi].copy(),
                                kind[lo:hi].copy(),
                                np.zeros(hi - lo, np.uint16),
                                int(rec_no[lo]),
                            )
                        )
                    index += whole
                if got % CHAMPSIM_RECORD:
                    raise TraceError(
                        self.path,
                        f"truncated ChampSim record: {got % CHAMPSIM_RECORD} of "
                        f"{CHAMPSIM_RECORD} bytes at the end",
                        offset=index * CHAMPSIM_RECORD,
                    )
                for chunk in pending:
                    self.records += len(chunk.addr)
                    yield chunk
                pending = []
                if got < len(buf):
                    break
        finally:
            stream.close()
        if index == 0:
            raise TraceError(self.path, "empty file: no trace records")
        self.lines = index

    # -- npz -------------------------------------------------------------------------------

    def _npz(self) -> Iterator[TraceChunk]:
        with NpzReader(self.path) as z:
            yield from z.chunks(self.chunk_records)
            self.records = z.records


def open_memtrace(
    path: str | os.PathLike[str],
    fmt: str = "auto",
    chunk_records: int = 1 << 20,
    *,
    block_bytes: int = BLOCK_BYTES,
) -> MemTrace:
    """Open the trace at ``path`` for streaming. ``fmt`` is ``auto`` (sniffed from the
    content) or one of :data:`FORMATS`; a file that is not of the format named raises
    TraceError when read (ChampSim and npz: at once). ``block_bytes`` is the text block size
    (lines longer than it are an error)."""
    p = os.fspath(path)
    if chunk_records < 1:
        raise ValueError("chunk_records must be at least 1")
    if block_bytes < 64:
        raise ValueError("block_bytes must be at least 64")
    if fmt != "auto" and fmt not in FORMATS:
        raise ValueError(f"unknown trace format {fmt!r} (one of auto, {', '.join(FORMATS)})")
    found, compression = sniff(p) if fmt == "auto" else _checked(p, fmt)
    return MemTrace(p, found, compression, chunk_records, block_bytes)


def _checked(path: str, fmt: str) -> tuple[str, str]:
    """The compression of ``path``, read as ``fmt``; the binary formats are checked now
    (text formats at their first bad line, while reading)."""
    s = Stream(path)
    try:
        head = s.read(1 << 12)
    finally:
        s.close()
    if not head:
        raise TraceError(path, "empty file: no trace records")
    if fmt == "npz" and (not head.startswith((_NPZ_MAGIC, _EMPTY_ZIP)) or s.compression):
        raise TraceError(path, f"not an npz (zip) file: it starts with {_quote(head[:16])}")
    return fmt, s.compression


# --- lackey header -----------------------------------------------------------------------


def _lackey_header(path: str) -> dict[str, Any]:
    """What the ``==PID==`` lines before the first record say (read from the first 64 KiB)."""
    s = Stream(path)
    try:
        head = s.read(1 << 16)
    finally:
        s.close()
    header: dict[str, Any] = {}
    for raw in head.split(b"\n")[:200]:
        if raw[:3] in (b"I  ", b" L ", b" S ", b" M "):
            break
        line = raw.decode("utf-8", "replace")
        if not line.startswith("=="):
            continue
        pid_text, _, rest = line[2:].partition("==")
        if not pid_text.isdigit():
            continue
        header.setdefault("pid", int(pid_text))
        rest = rest.strip()
        if rest.startswith("Command: "):
            header["command"] = rest[len("Command: ") :]
        elif rest.startswith("Parent PID: "):
            ppid = rest[len("Parent PID: ") :]
            if ppid.isdigit():
                header["parent_pid"] = int(ppid)
        elif rest.startswith("Using Valgrind-"):
            header["valgrind"] = rest[len("Using Valgrind-") :].split()[0]
        elif rest.endswith("an example Valgrind tool"):
            header["tool"] = rest.split(",")[0]
    return header


def convert(
    src: str | os.PathLike[str],
    dst_npz: str | os.PathLike[str],
    fmt: str = "auto",
    chunk_records: int = 1 << 20,
) -> int:
    """Convert the trace ``src`` (any format read here) to vmsim's chunked npz at
    ``dst_npz``, streaming: one member per array and chunk, deflated, plus ``header.npy``
    (JSON: layout version, source format and path, the source's header, the record count).
    Returns the number of records written."""
    trace = open_memtrace(src, fmt, chunk_records)
    records = 0
    tmp = os.fspath(dst_npz) + ".part"
    try:
        with zipfile.ZipFile(
            tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1, allowZip64=True
        ) as z:
            for i, chunk in enumerate(trace):
                for name, arr in (("addr", chunk.addr), ("kind", chunk.kind), ("size", chunk.size)):
                    with z.open(f"{name}_{i:06d}.npy", "w", force_zip64=True) as f:
                        np.lib.format.write_array(
                            f, np.ascontiguousarray(arr, NPZ_DTYPES[name]), allow_pickle=False
                        )
                records += len(chunk.addr)
            header = {
                "vmsim_npz": NPZ_LAYOUT_VERSION,
                "source": os.path.basename(os.fspath(src)),
                "source_format": trace.format,
                "source_header": trace.header,
                "records": records,
            }
            with z.open("header.npy", "w") as f:
                np.lib.format.write_array(f, np.array(json.dumps(header)), allow_pickle=False)
        os.replace(tmp, dst_npz)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return records
