"""A trace file as a byte stream, plain or compressed: gzip, xz and zstd recognised by their
magic bytes (never by the name), with the compressed bytes read counted so a truncated stream
is reported at its offset (:class:`TraceError`). The readers of :mod:`vmsim.memtrace.readers`
read every format through :class:`Stream`."""

from __future__ import annotations

import gzip
import io
import lzma
import zlib
from typing import IO, Any, Final, cast

import numpy as np
import numpy.typing as npt
import zstandard

from vmsim.memtrace.records import TraceError

MAGIC: Final = {
    b"\x1f\x8b": "gz",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zst",
}


class Counting(io.RawIOBase):
    """A raw file that counts the bytes read from it (the offset of a truncated stream)."""

    def __init__(self, raw: io.BufferedReader) -> None:
        self.raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        got = self.raw.readinto(b)
        self.count += got or 0
        return got or 0

    def close(self) -> None:
        self.raw.close()
        super().close()


class ZstdReader(io.RawIOBase):
    """zstd frames one after another, decompressed; unlike ``stream_reader`` it notices a
    stream that ends inside a frame (a truncated file) and raises."""

    def __init__(self, raw: Counting, path: str) -> None:
        self.raw = raw
        self.path = path
        self.dctx = zstandard.ZstdDecompressor()
        self.obj = self.dctx.decompressobj()
        self.in_frame = False
        self.pending = b""
        self.done = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self.pending:
            data = self.raw.raw.read(1 << 18)
            if not data:
                if self.in_frame:
                    raise TraceError(
                        self.path,
                        "zstd stream ends inside a frame: the file is truncated",
                        offset=self.raw.count,
                    )
                return 0
            self.raw.count += len(data)
            out = []
            try:
                out.append(self.obj.decompress(data))
                self.in_frame = True
                while self.obj.eof:
                    rest = self.obj.unused_data
                    self.obj = self.dctx.decompressobj()
                    self.in_frame = False
                    if not rest:
                        break
                    out.append(self.obj.decompress(rest))
                    self.in_frame = True
            except zstandard.ZstdError as exc:
                raise TraceError(
                    self.path, f"corrupt zstd data: {exc}", offset=self.raw.count
                ) from None
            self.pending = b"".join(out)
        m = memoryview(b).cast("B")
        k = min(len(m), len(self.pending))
        m[:k] = self.pending[:k]
        self.pending = self.pending[k:]
        self.done += k
        return k

    def close(self) -> None:
        self.raw.close()
        super().close()


class Stream:
    """A trace file's bytes, decompressed; read errors become TraceErrors with the offset of
    the compressed input where decompression stopped."""

    def __init__(self, path: str) -> None:
        self.path = path
        raw = open(path, "rb")  # noqa: SIM115 (closed by close())
        head = raw.read(6)
        raw.seek(0)
        self.raw = Counting(raw)
        self.compression = next((c for m, c in MAGIC.items() if head.startswith(m)), "")
        self.f: Any
        if self.compression == "gz":
            self.f = gzip.GzipFile(fileobj=self.raw, mode="rb")
        elif self.compression == "xz":
            self.f = lzma.LZMAFile(cast(IO[bytes], self.raw), mode="rb")  # noqa: SIM115
        elif self.compression == "zst":
            self.f = io.BufferedReader(ZstdReader(self.raw, path), buffer_size=1 << 20)
        else:
            self.f = raw
        self.offset = 0  # decompressed bytes delivered

    def readinto(self, buf: npt.NDArray[np.uint8]) -> int:
        """Fill ``buf`` as far as the input goes; the count (less only at the end)."""
        view = memoryview(buf).cast("B")  # type: ignore[arg-type]
        total = 0
        while total < len(view):
            try:
                got = self.f.readinto(view[total:])
            except TraceError:
                raise
            except (EOFError, OSError, lzma.LZMAError, zlib.error) as exc:
                if isinstance(exc, EOFError):
                    problem = f"{self.compression} stream ends early: the file is truncated"
                else:
                    problem = f"corrupt {self.compression} data: {exc}"
                raise TraceError(self.path, problem, offset=self.raw.count) from None
            if not got:
                break
            total += got
        self.offset += total
        return total

    def read(self, n: int) -> bytes:
        buf = np.empty(n, np.uint8)
        return buf[: self.readinto(buf)].tobytes()

    def close(self) -> None:
        self.f.close()
        self.raw.close()


__all__ = ["MAGIC", "Stream"]
