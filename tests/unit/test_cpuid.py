"""The CPUID reader (vmsim.hw.cpuid), and the zen4 preset against the core it describes.

Expected values: for the decoding, the register layouts of the AMD64 Architecture
Programmer's Manual (vol. 3, appendix E) applied by hand to a recorded dump; on a live AMD
host, the kernel's own reading of the same registers (/proc/cpuinfo "TLB size",
/sys/devices/system/cpu/cpu0/cache); on a Zen 4 host, the CPU itself.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vmsim.hw import cpuid
from vmsim.hw.tlb import PAGE_SIZE_1G, PAGE_SIZE_2M, PAGE_SIZE_4K, TlbConfig
from vmsim.memtrace.cpus import zen4

# CPUID of an AMD EPYC (family 19h, model 11h: Zen 4 "Genoa") under a hypervisor
_DUMP = {
    0x80000005: (0xFF48FF40, 0xFF48FF40, 0x20080140, 0x20080140),
    0x80000006: (0x5C002200, 0x6C004200, 0x04006140, 0x0A009140),
    0x80000019: (0, 0, 0, 0),
}
_DUMP_1D = [
    (0x00000121, 0x01C0003F, 0x0000003F, 0),
    (0x00000122, 0x01C0003F, 0x0000003F, 0),
    (0x00000143, 0x01C0003F, 0x000007FF, 2),
    (0x00004163, 0x03C0003F, 0x00007FFF, 1),
    (0, 0, 0, 0),
]


def test_decodes_the_l1_and_l2_tlb_fields_of_a_recorded_dump() -> None:
    got = {(t.level, t.kind, t.page): (t.entries, t.ways, t.code) for t in cpuid.amd_tlbs(_DUMP)}
    assert got == {
        # Fn8000_0005 EBX/EAX: [31:24] dTLB assoc (0xff: fully), [23:16] dTLB entries,
        # [15:8] iTLB assoc, [7:0] iTLB entries
        (1, "data", "4K"): (0x48, cpuid.FULLY_ASSOCIATIVE, 0xFF),
        (1, "instruction", "4K"): (0x40, cpuid.FULLY_ASSOCIATIVE, 0xFF),
        (1, "data", "2M"): (0x48, cpuid.FULLY_ASSOCIATIVE, 0xFF),
        (1, "instruction", "2M"): (0x40, cpuid.FULLY_ASSOCIATIVE, 0xFF),
        # Fn8000_0006 EBX/EAX: [31:28] dTLB assoc code, [27:16] entries, [15:12], [11:0] iTLB
        (2, "data", "4K"): (0xC00, 8, 6),
        (2, "instruction", "4K"): (0x200, 4, 4),
        (2, "data", "2M"): (0xC00, -1, 5),  # code 5: not in the kernel's table
        (2, "instruction", "2M"): (0x200, 2, 2),
    }  # Fn8000_0019 all zero: no 1 GiB TLB described


def test_decodes_the_cache_topology_subleaves_of_a_recorded_dump() -> None:
    got = [(c.level, c.kind, c.ways, c.sets, c.line, c.size) for c in cpuid.amd_caches(_DUMP_1D)]
    # EAX[4:0] type, [7:5] level; EBX[31:22] ways - 1, [11:0] line - 1; ECX sets - 1
    assert got == [
        (1, "data", 8, 64, 64, 32 << 10),
        (1, "instruction", 8, 64, 64, 32 << 10),
        (2, "unified", 8, 2048, 64, 1 << 20),
        (3, "unified", 16, 32768, 64, 32 << 20),
    ]


needs_cpuid = pytest.mark.skipif(not cpuid.available(), reason="CPUID needs Linux on x86-64")


def _amd() -> bool:
    return cpuid.available() and cpuid.vendor().name == "AuthenticAMD"


@needs_cpuid
def test_the_vendor_string_is_the_kernels() -> None:
    text = Path("/proc/cpuinfo").read_text()
    m = re.search(r"^vendor_id\s*:\s*(\S+)", text, re.M)
    fam = re.search(r"^cpu family\s*:\s*(\d+)", text, re.M)
    model = re.search(r"^model\s*:\s*(\d+)", text, re.M)
    if not (m and fam and model):
        pytest.skip("/proc/cpuinfo has no vendor_id/cpu family/model lines")
    v = cpuid.vendor()
    assert (v.name, v.family, v.model) == (m.group(1), int(fam.group(1)), int(model.group(1)))


@pytest.mark.skipif(not _amd(), reason="an AMD host: the kernel's TLB size is AMD's leaf")
def test_the_l2_tlb_entries_add_up_to_the_kernels_tlb_size() -> None:
    # cpu_detect_tlb_amd()/cpu_detect_cache_sizes(): "TLB size" is the L2 dTLB's plus the
    # L2 iTLB's 4 KiB entries
    m = re.search(r"^TLB size\s*:\s*(\d+) 4K pages", Path("/proc/cpuinfo").read_text(), re.M)
    if m is None:
        pytest.skip("/proc/cpuinfo has no 'TLB size' line")
    l2 = [t.entries for t in cpuid.amd_tlbs() if t.level == 2 and t.page == "4K"]
    assert sum(l2) == int(m.group(1))


@pytest.mark.skipif(not _amd(), reason="an AMD host: leaf 0x8000001D is AMD's")
def test_the_caches_are_the_ones_the_kernel_lists() -> None:
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    if not base.is_dir():
        pytest.skip("no /sys/devices/system/cpu/cpu0/cache")
    kernel = []
    for d in sorted(base.glob("index*")):
        kernel.append(
            (
                int((d / "level").read_text()),
                (d / "type").read_text().strip().lower(),
                int((d / "ways_of_associativity").read_text()),
                int((d / "number_of_sets").read_text()),
                int((d / "coherency_line_size").read_text()),
            )
        )
    mine = [(c.level, c.kind, c.ways, c.sets, c.line) for c in cpuid.amd_caches()]
    assert mine == kernel


def _zen4_host() -> bool:
    if not _amd():
        return False
    v = cpuid.vendor()
    # family 19h: Zen 3 at models 00h-0Fh, 20h-5Fh; Zen 4 at 10h-1Fh (Genoa), 60h-7Fh
    # (Raphael, Phoenix), A0h-AFh (Bergamo, Siena)
    return v.family == 0x19 and (
        0x10 <= v.model <= 0x1F or 0x60 <= v.model <= 0x7F or 0xA0 <= v.model <= 0xAF
    )


@pytest.mark.skipif(not _zen4_host(), reason="the host is not an AMD Zen 4 core")
def test_the_zen4_preset_is_what_a_zen4_core_reports() -> None:
    cpu = zen4()
    assert isinstance(cpu.tlb, TlbConfig)
    tlbs = {(t.level, t.kind, t.page): t for t in cpuid.amd_tlbs()}
    (l1d,) = cpu.tlb.l1d
    (l1i,) = cpu.tlb.l1i
    (stlb,) = cpu.tlb.stlb
    for page, size in (("4K", PAGE_SIZE_4K), ("2M", PAGE_SIZE_2M)):
        d, i = tlbs[(1, "data", page)], tlbs[(1, "instruction", page)]
        # one fully associative array (ways == entries) holding every page size
        assert (l1d.entries, l1d.ways) == (d.entries, d.entries)
        assert d.ways == cpuid.FULLY_ASSOCIATIVE and size in l1d.page_sizes
        assert (l1i.entries, l1i.ways) == (i.entries, i.entries)
        assert i.ways == cpuid.FULLY_ASSOCIATIVE and size in l1i.page_sizes
        # the STLB is the L2 dTLB, its entries as reported; its ways are vmsim's mapping
        # (3072 entries in a power-of-two set count), see vmsim.memtrace.cpus
        assert stlb.entries == tlbs[(2, "data", page)].entries and size in stlb.page_sizes
    assert PAGE_SIZE_1G in l1d.page_sizes
    caches = {c.level: c for c in cpuid.amd_caches() if c.kind != "instruction"}
    assert [(g.size, g.ways) for g in cpu.caches] == [
        (caches[n].size, caches[n].ways) for n in (1, 2, 3)
    ]
