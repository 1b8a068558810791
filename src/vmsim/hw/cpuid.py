"""What the host CPU says about its own TLBs and caches: the CPUID instruction, decoded.

The access-trace engine's CPU presets (:mod:`vmsim.memtrace.cpus`) take their TLB geometry
from vendors' manuals and reviews. On a machine whose core is one of the presets, the core
itself is a better witness: CPUID reports the size and associativity of each TLB and cache.
The tests compare the presets with it where the host allows (``tests/unit/test_cpuid.py``).

Leaves read (AMD64 Architecture Programmer's Manual, vol. 3, appendix E, "Obtaining
Processor Information Via the CPUID Instruction"):

* ``0x8000_0005`` L1 TLBs and caches: per TLB an 8-bit entry count and an 8-bit
  associativity (``0xff``: fully associative), 2 MiB/4 MiB pages in EAX, 4 KiB in EBX;
* ``0x8000_0006`` L2 TLBs: 12-bit entry counts and a 4-bit associativity *code*, read as the
  kernel reads the same code for AMD's L2/L3 caches (``assocs[]`` in
  arch/x86/kernel/cpu/cacheinfo.c: 1, 2, 4 ways for 1, 2, 4; 6 -> 8, 8 -> 16, 0xa -> 32,
  0xb -> 48, 0xc -> 64, 0xd -> 96, 0xe -> 128, 0xf fully associative);
* ``0x8000_0019`` 1 GiB-page TLBs (a hypervisor may report zeros: then nothing is known);
* ``0x8000_001D`` cache topology, one subleaf per cache: type, level, ways, sets, line size.

The instruction runs from a page of machine code mapped for the purpose (read-write while
the 35 bytes are written, then read-execute), called through ctypes: no compiler, no
``/dev/cpu/*/cpuid`` (that needs the ``cpuid`` module loaded, a system change).
:func:`available` says whether this host can run it (x86-64 Linux).
"""

from __future__ import annotations

import ctypes
import mmap
import platform
import sys
from dataclasses import dataclass
from functools import cache

__all__ = [
    "FULLY_ASSOCIATIVE",
    "L2_ASSOC",
    "CacheLevel",
    "TlbInfo",
    "Vendor",
    "amd_caches",
    "amd_tlbs",
    "available",
    "cpuid",
    "vendor",
]

FULLY_ASSOCIATIVE = 0  # ``ways`` of a fully associative structure: every entry is one set

# push rbx; mov r8, rdx; mov eax, edi; mov ecx, esi; cpuid;
# mov [r8], eax; mov [r8+4], ebx; mov [r8+8], ecx; mov [r8+12], edx; pop rbx; ret
# (System V: leaf in edi, subleaf in esi, the 16-byte output in rdx; rbx is callee-saved)
_CODE = bytes.fromhex(
    "53" "4989d0" "89f8" "89f1" "0fa2" "418900" "41895804" "41894808" "4189500c" "5b" "c3"
)  # fmt: skip

_Fn = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32))


def available() -> bool:
    """Whether :func:`cpuid` can run here: Linux on x86-64."""
    return sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64")


@cache
def _function() -> tuple[mmap.mmap, ctypes.c_void_p, object]:
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    page.write(_CODE)
    buf = ctypes.c_char.from_buffer(page)
    addr = ctypes.addressof(buf)
    del buf  # the buffer export would keep the mapping from being closed; it never is
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    if libc.mprotect(addr, mmap.PAGESIZE, mmap.PROT_READ | mmap.PROT_EXEC) != 0:
        raise OSError(ctypes.get_errno(), "mprotect(PROT_READ|PROT_EXEC) of the CPUID stub")
    return page, ctypes.c_void_p(addr), _Fn(addr)


def cpuid(leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
    """(EAX, EBX, ECX, EDX) of CPUID ``leaf``/``subleaf`` on this CPU. RuntimeError where
    the host cannot run it (see :func:`available`)."""
    if not available():
        raise RuntimeError(f"CPUID needs Linux on x86-64, not {sys.platform}/{platform.machine()}")
    fn = _function()[2]
    out = (ctypes.c_uint32 * 4)()
    fn(leaf & 0xFFFFFFFF, subleaf & 0xFFFFFFFF, out)  # type: ignore[operator]
    return out[0], out[1], out[2], out[3]


@dataclass(frozen=True)
class Vendor:
    """The vendor string and the display family/model (CPUID 0 and 1, with the extended
    family and model fields added as the manuals say)."""

    name: str  # "AuthenticAMD", "GenuineIntel", ...
    family: int
    model: int


def vendor() -> Vendor:
    _, b, c, d = cpuid(0)
    name = b"".join(x.to_bytes(4, "little") for x in (b, d, c)).decode("ascii", "replace")
    a = cpuid(1)[0]
    family = (a >> 8) & 0xF
    model = (a >> 4) & 0xF
    if family == 0xF:
        family += (a >> 20) & 0xFF
    if family >= 6:
        model |= ((a >> 16) & 0xF) << 4
    return Vendor(name, family, model)


# CPUID Fn8000_0006's 4-bit associativity code -> ways, as the kernel's assocs[] reads it
L2_ASSOC: dict[int, int] = {
    1: 1,
    2: 2,
    4: 4,
    6: 8,
    8: 16,
    0xA: 32,
    0xB: 48,
    0xC: 64,
    0xD: 96,
    0xE: 128,
    0xF: FULLY_ASSOCIATIVE,
}


@dataclass(frozen=True)
class TlbInfo:
    """One TLB as CPUID describes it: ``entries`` for ``page`` ("4K", "2M", "1G"), ``ways``
    (:data:`FULLY_ASSOCIATIVE`: 0) and ``code``, the raw associativity field (for the L2
    TLBs a code, see :data:`L2_ASSOC`)."""

    level: int  # 1 or 2
    kind: str  # "data" or "instruction"
    page: str
    entries: int
    ways: int
    code: int


def _l1(level: int, page: str, reg: int) -> list[TlbInfo]:
    out = []
    for kind, shift in (("data", 16), ("instruction", 0)):
        entries = (reg >> shift) & 0xFF
        code = (reg >> (shift + 8)) & 0xFF
        if entries:
            ways = FULLY_ASSOCIATIVE if code == 0xFF else code
            out.append(TlbInfo(level, kind, page, entries, ways, code))
    return out


def _l2(level: int, page: str, reg: int) -> list[TlbInfo]:
    out = []
    for kind, shift in (("data", 16), ("instruction", 0)):
        entries = (reg >> shift) & 0xFFF
        code = (reg >> (shift + 12)) & 0xF
        if entries and code:
            out.append(TlbInfo(level, kind, page, entries, L2_ASSOC.get(code, -1), code))
    return out


def amd_tlbs(regs: dict[int, tuple[int, int, int, int]] | None = None) -> list[TlbInfo]:
    """Every TLB CPUID Fn8000_0005, Fn8000_0006 and Fn8000_0019 describe (AMD's layout).
    ``regs`` maps a leaf to its registers; None reads this CPU."""
    if regs is None:
        top = cpuid(0x80000000)[0]
        regs = {leaf: cpuid(leaf) for leaf in (0x80000005, 0x80000006, 0x80000019) if leaf <= top}
    out: list[TlbInfo] = []
    if 0x80000005 in regs:
        a, b, _, _ = regs[0x80000005]
        out += _l1(1, "4K", b) + _l1(1, "2M", a)
    if 0x80000006 in regs:
        a, b, _, _ = regs[0x80000006]
        out += _l2(2, "4K", b) + _l2(2, "2M", a)
    if 0x80000019 in regs:
        a, b, _, _ = regs[0x80000019]
        out += _l2(1, "1G", a) + _l2(2, "1G", b)
    return out


@dataclass(frozen=True)
class CacheLevel:
    """One cache from CPUID Fn8000_001D: ``kind`` "data", "instruction" or "unified"."""

    level: int
    kind: str
    ways: int
    sets: int
    line: int

    @property
    def size(self) -> int:
        return self.ways * self.sets * self.line


_CACHE_KIND = {1: "data", 2: "instruction", 3: "unified"}


def amd_caches(subleaves: list[tuple[int, int, int, int]] | None = None) -> list[CacheLevel]:
    """The caches CPUID Fn8000_001D lists, one subleaf each until type 0 (no more). None
    reads this CPU (empty where the leaf does not exist)."""
    if subleaves is None:
        subleaves = []
        if cpuid(0x80000000)[0] >= 0x8000001D:
            for i in range(16):
                regs = cpuid(0x8000001D, i)
                if regs[0] & 0x1F == 0:
                    break
                subleaves.append(regs)
    out = []
    for a, b, c, _ in subleaves:
        kind = _CACHE_KIND.get(a & 0x1F)
        if kind is None:
            break
        out.append(
            CacheLevel(
                level=(a >> 5) & 0x7,
                kind=kind,
                ways=((b >> 22) & 0x3FF) + 1,
                sets=c + 1,
                line=(b & 0xFFF) + 1,
            )
        )
    return out
