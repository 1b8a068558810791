"""/proc/pid/maps and smaps text, byte for byte: spec §5 (kernel-verified on 6.18)."""

from __future__ import annotations

import re

import pytest
from layout import PAGE, RW, anon, at, parse_maps, shared, touch, vmflags

from vmsim import (
    MADV_DONTDUMP,
    MAP_ANONYMOUS,
    MAP_FIXED_NOREPLACE,
    MAP_GROWSDOWN,
    MAP_NORESERVE,
    MAP_PRIVATE,
    MAP_SHARED,
    PROT_EXEC,
    PROT_NONE,
    PROT_READ,
)

VSYSCALL = "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]"


def lines_at(p, start: int) -> list[str]:
    return [line for line in p.maps().splitlines() if line.startswith(f"{start:08x}-")]


def test_unnamed_line_has_trailing_space(p):
    anon(p, 0, 4)
    assert lines_at(p, at(0)) == ["100000000-100004000 rw-p 00000000 00:00 0 "]
    assert "100000000-100004000 rw-p 00000000 00:00 0 \n" in p.maps()


def test_low_address_is_zero_padded_to_8_digits(p):
    p.mmap(0x10000, PAGE, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE)
    assert lines_at(p, 0x10000) == ["00010000-00011000 rw-p 00000000 00:00 0 "]


def test_perms_column(p):
    anon(p, 0, 1, PROT_NONE)
    anon(p, 2, 1, PROT_READ | PROT_EXEC)
    anon(p, 4, 1, RW | PROT_EXEC)
    assert [v.perms for v in parse_maps(p.maps())[:3]] == ["---p", "r-xp", "rwxp"]


def test_anon_offset_is_zero_even_after_split(p):
    anon(p, 0, 8)
    p.mprotect(at(4), 4 * PAGE, PROT_READ)
    assert lines_at(p, at(4)) == ["100004000-100008000 r--p 00000000 00:00 0 "]


def test_memfd_line(p):
    fd = p.memfd_create("foo")
    p.ftruncate(fd, 8 * PAGE)
    shared(p, 8, 2, fd, 2)
    (line,) = lines_at(p, at(8))
    m = re.fullmatch(r"100008000-10000a000 rw-s 00002000 00:01 (\d+) +/memfd:foo \(deleted\)", line)
    assert m is not None, line
    assert line.index("/memfd:foo") == 73
    assert line[72] == " "


def test_memfd_split_offsets(p):
    fd = p.memfd_create("bar")
    p.ftruncate(fd, 8 * PAGE)
    shared(p, 0, 8, fd, 0)
    p.mprotect(at(3), 2 * PAGE, PROT_READ)
    offsets = [(v.perms, v.offset, v.name) for v in parse_maps(p.maps())[:3]]
    assert offsets == [
        ("rw-s", 0, "/memfd:bar (deleted)"),
        ("r--s", 3 * PAGE, "/memfd:bar (deleted)"),
        ("rw-s", 5 * PAGE, "/memfd:bar (deleted)"),
    ]


def test_same_memfd_has_one_inode_two_memfds_two(p):
    fd1 = p.memfd_create("a")
    fd2 = p.memfd_create("a")
    p.ftruncate(fd1, PAGE)
    p.ftruncate(fd2, PAGE)
    shared(p, 0, 1, fd1, 0)
    shared(p, 2, 1, fd1, 0)
    shared(p, 4, 1, fd2, 0)
    a, b, c = parse_maps(p.maps())[:3]
    assert a.inode == b.inode != c.inode


def test_private_memfd_mapping_line(p):
    fd = p.memfd_create("priv")
    p.ftruncate(fd, 4 * PAGE)
    p.mmap(at(0), 4 * PAGE, PROT_READ, MAP_PRIVATE | MAP_FIXED_NOREPLACE, fd, PAGE)
    (line,) = lines_at(p, at(0))
    assert re.fullmatch(
        r"100000000-100004000 r--p 00001000 00:01 \d+ +/memfd:priv \(deleted\)", line
    )


def test_shared_anonymous_is_dev_zero(p):
    p.mmap(at(12), PAGE, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE)
    (line,) = lines_at(p, at(12))
    assert re.fullmatch(r"10000c000-10000d000 rw-s 00000000 00:01 \d+ +/dev/zero \(deleted\)", line)
    assert line.index("/dev/zero") == 73


def test_empty_process_prints_only_the_gate_vma(p):
    assert p.maps() == VSYSCALL + "\n"
    assert p.map_count == 0


def test_linux_layout_special_vmas():
    import vmsim

    q = vmsim.Machine().spawn(layout="linux")
    vmas = parse_maps(q.maps())
    assert q.map_count == len(vmas) - 1
    assert q.maps().splitlines()[-1] == VSYSCALL
    assert [v.start for v in vmas] == sorted(v.start for v in vmas)
    by_name = {v.name: v for v in vmas}
    for name, pages, perms in [
        ("[vvar]", 4, "r--p"),
        ("[vvar_vclock]", 2, "r--p"),
        ("[vdso]", 2, "r-xp"),
    ]:
        v = by_name[name]
        assert ((v.end - v.start) // PAGE, v.perms) == (pages, perms)
    assert by_name["[vvar]"].end == by_name["[vvar_vclock]"].start
    assert by_name["[vvar_vclock]"].end == by_name["[vdso]"].start
    assert by_name["[stack]"].perms == "rw-p"
    assert by_name["[heap]"].perms == "rw-p"
    for line in q.maps().splitlines():
        v = parse_maps(line)[0]
        if v.name:
            assert line.index(v.name) == max(73, line.index(v.name))
            assert line[: line.index(v.name)].endswith(" ")
        else:
            assert line.endswith(" 0 ")


def test_heap_name_follows_brk():
    import vmsim

    q = vmsim.Machine().spawn(layout="linux")
    (heap,) = [v for v in parse_maps(q.maps()) if v.name == "[heap]"]
    old = q.brk(0)
    assert heap.end == (old + PAGE - 1) & ~(PAGE - 1)
    new = q.brk(heap.end + 3 * PAGE)
    assert new == heap.end + 3 * PAGE
    (grown,) = [v for v in parse_maps(q.maps()) if v.name == "[heap]"]
    assert (grown.start, grown.end) == (heap.start, heap.end + 3 * PAGE)
    # a VMA abutting the heap from above is not [heap] (vm_start < brk fails)
    q.mmap(grown.end, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE)
    (above,) = [v for v in parse_maps(q.maps()) if v.start == grown.end]
    assert above.name == ""


# --- smaps --------------------------------------------------------------------------------------

SMAPS_FIELDS = [
    "Size",
    "KernelPageSize",
    "MMUPageSize",
    "Rss",
    "Pss",
    "Pss_Dirty",
    "Shared_Clean",
    "Shared_Dirty",
    "Private_Clean",
    "Private_Dirty",
    "Referenced",
    "Anonymous",
    "KSM",
    "LazyFree",
    "AnonHugePages",
    "ShmemPmdMapped",
    "FilePmdMapped",
    "Shared_Hugetlb",
    "Private_Hugetlb",
    "Swap",
    "SwapPss",
    "Locked",
]


def smaps_record(p, start: int) -> list[str]:
    lines = p.smaps().splitlines()
    i = lines.index(next(line for line in lines if line.startswith(f"{start:08x}-")))
    j = next(k for k in range(i + 1, len(lines)) if lines[k].startswith("VmFlags:"))
    # ProtectionKey: appears only where the CPU has PKU (absent on the verifying machine)
    return [line for line in lines[i : j + 1] if not line.startswith("ProtectionKey:")]


def kb(name: str, value: int) -> str:
    return f"{name + ':':<16}{value:>8} kB"


def test_smaps_record_layout_for_fresh_region(p):
    anon(p, 0, 4)
    assert smaps_record(p, at(0)) == [
        "100000000-100004000 rw-p 00000000 00:00 0 ",
        *(
            kb(f, {"Size": 16, "KernelPageSize": 4, "MMUPageSize": 4}.get(f, 0))
            for f in SMAPS_FIELDS
        ),
        "THPeligible:           0",
        "VmFlags: rd wr mr mw me ac ",
    ]


def test_smaps_record_counts_written_pages(p):
    anon(p, 0, 4)
    touch(p, 0, 2)
    eight = {"Rss", "Pss", "Pss_Dirty", "Private_Dirty", "Referenced", "Anonymous"}
    sizes = {"Size": 16, "KernelPageSize": 4, "MMUPageSize": 4}
    want = [kb(f, 8 if f in eight else sizes.get(f, 0)) for f in SMAPS_FIELDS]
    assert smaps_record(p, at(0))[1:-2] == want  # kernel-verified


def test_smaps_kb_lines_are_aligned(p):
    anon(p, 0, 4)
    for line in smaps_record(p, at(0))[1:-2]:
        assert len(line) == 27 and line.endswith(" kB"), line


def test_smaps_has_gate_record_last(p):
    text = p.smaps()
    tail = text[text.index(VSYSCALL) :]
    assert tail.splitlines()[-1] == "VmFlags: ex "


@pytest.mark.parametrize(
    ("prot", "flags", "want"),
    [
        (RW, 0, "rd wr mr mw me ac"),
        (PROT_READ, 0, "rd mr mw me"),
        (PROT_NONE, 0, "mr mw me"),
        (RW | PROT_EXEC, 0, "rd wr ex mr mw me ac"),
        (RW, MAP_NORESERVE, "rd wr mr mw me nr"),
        (RW, MAP_GROWSDOWN, "rd wr mr mw me gd ac"),
        (PROT_READ, MAP_NORESERVE, "rd mr mw me nr"),
    ],
)
def test_vmflags_private_anon(p, prot, flags, want):
    anon(p, 0, 4, prot, flags)
    assert " ".join(vmflags(p.smaps(), at(0))) == want


def test_vmflags_shared(p):
    fd = p.memfd_create("v")
    p.ftruncate(fd, 4 * PAGE)
    shared(p, 0, 4, fd, 0)
    shared(p, 4, 1, fd, 0, PROT_READ)
    p.mmap(at(8), PAGE, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE)
    assert " ".join(vmflags(p.smaps(), at(0))) == "rd wr sh mr mw me ms"
    assert " ".join(vmflags(p.smaps(), at(4))) == "rd sh mr mw me ms"
    assert " ".join(vmflags(p.smaps(), at(8))) == "rd wr sh mr mw me ms"


def test_vmflags_private_file(p):
    fd = p.memfd_create("pf")
    p.ftruncate(fd, 4 * PAGE)
    p.mmap(at(0), 2 * PAGE, RW, MAP_PRIVATE | MAP_FIXED_NOREPLACE, fd, 0)
    p.mmap(at(4), 2 * PAGE, PROT_READ, MAP_PRIVATE | MAP_FIXED_NOREPLACE, fd, 0)
    assert " ".join(vmflags(p.smaps(), at(0))) == "rd wr mr mw me ac"
    assert " ".join(vmflags(p.smaps(), at(4))) == "rd mr mw me"


def test_vmflags_order_with_many_bits(p):
    anon(p, 0, 4)
    p.mlock(at(0), 4 * PAGE)
    p.madvise(at(0), 4 * PAGE, MADV_DONTDUMP)
    p.mseal(at(0), 4 * PAGE)
    assert " ".join(vmflags(p.smaps(), at(0))) == "rd wr mr mw me lo ac dd sl"


def test_maps_fast_path_writes_what_the_general_header_writes():
    """maps_text() formats unnamed anonymous VMAs in one step: the same lines as
    _vma_header() (every prot, private and shared, heap and stack lines among them)."""
    import random

    from vmsim import Machine
    from vmsim.procfs import task_mmu as procfs

    rng = random.Random(5)
    p = Machine().spawn(layout="linux")
    for _ in range(200):
        prot = rng.choice([0, 1, 3, 4, 5, 7])
        kind = rng.choice([MAP_PRIVATE, MAP_SHARED])
        p.mmap(0, rng.randint(1, 4) * PAGE, prot, kind | MAP_ANONYMOUS)
    p.brk(p.brk(0) + 5 * PAGE)
    mm = p.mm
    general = "".join(procfs._vma_header(mm, v) + "\n" for v in mm.tree) + procfs.GATE_LINE
    assert procfs.maps_text(mm) == general
    assert "[heap]" in general and "[stack]" in general and " rw-s " in general
