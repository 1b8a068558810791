"""vmsim's compact trace format, numpy ``.npz`` (docs/memtrace.md): the array types and the
streaming reader (member by member, in slices, never whole). Writing is
:func:`vmsim.memtrace.readers.convert`."""

from __future__ import annotations

import json
import zipfile
import zlib
from collections.abc import Iterator
from typing import IO, Any, Final

import numpy as np

from vmsim.memtrace.records import TraceChunk, TraceError

NPZ_LAYOUT_VERSION: Final = 1
NPZ_DTYPES: Final[dict[str, np.dtype[Any]]] = {
    "addr": np.dtype("<u8"),
    "kind": np.dtype("u1"),
    "size": np.dtype("<u2"),
}


class NpzReader:
    """vmsim's npz, streamed member by member (docs/memtrace.md): either chunked
    (``header.npy`` + ``addr_000000.npy``, ``kind_000000.npy``, ``size_000000.npy``, ...)
    or plain (``addr.npy``, ``kind.npy``, ``size.npy``), read in slices, never whole."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise TraceError(path, f"not a readable npz (zip) file: {exc}") from None
        names = set(self.zip.namelist())
        self.records = 0
        self.parts: list[tuple[str, str, str]] = []
        if {"addr.npy", "kind.npy", "size.npy"} <= names:
            self.parts = [("addr.npy", "kind.npy", "size.npy")]
        else:
            i = 0
            while f"addr_{i:06d}.npy" in names:
                self.parts.append((f"addr_{i:06d}.npy", f"kind_{i:06d}.npy", f"size_{i:06d}.npy"))
                i += 1
            missing = [m for part in self.parts for m in part if m not in names]
            if missing:
                raise TraceError(path, f"npz member {missing[0]} is missing")
            if not self.parts:
                raise TraceError(
                    path, "not a vmsim npz trace: no addr/kind/size arrays (docs/memtrace.md)"
                )

    def __enter__(self) -> NpzReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.zip.close()

    def _open(self, name: str) -> tuple[IO[bytes], np.dtype[Any], int]:
        f = self.zip.open(name)
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            f.close()
            raise TraceError(self.path, f"npz member {name} is not a .npy array: {exc}") from None
        key = name.split("_")[0].split(".")[0]
        want = NPZ_DTYPES[key]
        if len(shape) != 1 or fortran or dtype.hasobject or dtype.kind not in "ui":
            f.close()
            raise TraceError(
                self.path, f"npz member {name}: a 1-D integer array expected, not {dtype} {shape}"
            )
        if dtype.itemsize > want.itemsize:
            f.close()
            raise TraceError(
                self.path, f"npz member {name}: dtype {dtype} does not fit {want} losslessly"
            )
        return f, dtype, int(shape[0])

    def chunks(self, chunk_records: int) -> Iterator[TraceChunk]:
        for names in self.parts:
            files = [self._open(name) for name in names]
            try:
                lengths = {length for _f, _d, length in files}
                if len(lengths) != 1:
                    raise TraceError(
                        self.path,
                        f"npz arrays {', '.join(names)} differ in length "
                        f"({', '.join(str(ln) for _f, _d, ln in files)})",
                    )
                left = lengths.pop()
                while left:
                    n = min(left, chunk_records)
                    arrays = []
                    for (f, dtype, _ln), name in zip(files, names, strict=True):
                        data = f.read(n * dtype.itemsize)
                        if len(data) != n * dtype.itemsize:
                            raise TraceError(self.path, f"npz member {name} is truncated")
                        a = np.frombuffer(data, dtype)
                        if dtype.kind == "i" and (a < 0).any():
                            raise TraceError(
                                self.path,
                                f"npz member {name}: negative value at record "
                                f"{self.records + int(np.flatnonzero(a < 0)[0]) + 1}",
                            )
                        arrays.append(a)
                    addr = arrays[0].astype(np.uint64)
                    kind = arrays[1].astype(np.uint8)
                    size = arrays[2].astype(np.uint16)
                    if (arrays[1] > 3).any():
                        i = int(np.flatnonzero(arrays[1] > 3)[0])
                        raise TraceError(
                            self.path,
                            f"npz record {self.records + i + 1}: kind {int(arrays[1][i])} "
                            "(0 I, 1 L, 2 S, 3 M expected)",
                        )
                    if arrays[2].dtype.itemsize > 2 and (arrays[2] > 65535).any():
                        raise TraceError(self.path, "npz sizes larger than 65535")
                    yield TraceChunk(addr, kind, size, self.records + 1)
                    self.records += n
                    left -= n
            except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
                raise TraceError(self.path, f"npz data unreadable: {exc}") from None
            finally:
                for f, _d, _ln in files:
                    f.close()


def npz_header(path: str) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(path) as z:
            if "header.npy" not in z.namelist():
                return {}
            with z.open("header.npy") as f:
                text = np.load(f, allow_pickle=False)
            value = json.loads(str(text))
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as exc:
        raise TraceError(path, f"npz header unreadable: {exc}") from None
    if not isinstance(value, dict):
        raise TraceError(path, "npz header.npy is not a JSON object")
    return value


__all__ = ["NPZ_DTYPES", "NPZ_LAYOUT_VERSION", "NpzReader", "npz_header"]
