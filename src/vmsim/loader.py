"""execve(): the address space the kernel's ELF loader builds (fs/binfmt_elf.c,
load_elf_binary()), before the program's first instruction.

The layout is built through the model's own mmap/brk paths, as the kernel does with
vm_mmap()/vm_brk_flags(): the [stack] (setup_arg_pages), the program's PT_LOAD segments
at ELF_ET_DYN_BASE (PIE) or their link address, the break after its bss, the interpreter's
segments placed top-down below mmap_base, then [vvar], [vvar_vclock] and [vdso]. Addresses
are those of a process without ASLR (as under ``setarch -R``).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from vmsim.constants import (
    MAP_FIXED,
    MAP_PRIVATE,
    PAGE_SIZE,
    PROT_EXEC,
    PROT_READ,
    PROT_WRITE,
)
from vmsim.mm.core import AddressSpace, page_align
from vmsim.mm.flags import (
    VDSO_FLAGS,
    VM_ACCOUNT,
    VM_EXEC,
    VM_GROWSDOWN,
    VM_MAYEXEC,
    VM_MAYREAD,
    VM_MAYWRITE,
    VM_READ,
    VM_WRITE,
    VVAR_FLAGS,
)
from vmsim.mm.mmap import do_brk_flags, get_unmapped_area
from vmsim.mm.mremap import move_page_tables
from vmsim.mm.vma import AnonVma, OpenFile, Vma

if TYPE_CHECKING:
    from vmsim.process import Process

ELF_ET_DYN_BASE = ((1 << 47) - PAGE_SIZE) // 3 * 2 & ~(PAGE_SIZE - 1)
STACK_TOP = (1 << 47) - PAGE_SIZE
STACK_EXPAND = 128 << 10  # setup_arg_pages() grows the stack to 128 KiB past the args
VVAR_PAGES, VVAR_VCLOCK_PAGES, VDSO_PAGES = 4, 2, 2  # this kernel's vdso image


class ExecError(Exception):
    """The binary cannot be loaded (missing, not ELF, unsupported)."""


@dataclass
class Segment:
    vaddr: int
    offset: int
    filesz: int
    memsz: int
    prot: int
    align: int


@dataclass
class ElfImage:
    path: str
    dynamic: bool  # ET_DYN (PIE or shared object)
    segments: list[Segment]
    interp: str | None
    size: int
    dev: tuple[int, int] = (0, 0)
    ino: int = 0
    notes: list[str] = field(default_factory=list)
    relro: tuple[int, int] | None = None  # PT_GNU_RELRO (p_vaddr, p_memsz)


@dataclass
class LoadedImage:
    """Where an image landed: its load bias and the address range its VMAs cover."""

    path: str
    bias: int
    lo: int
    hi: int
    relro: tuple[int, int] | None

    def relro_range(self, bias: int) -> tuple[int, int] | None:
        """The range ld.so's _dl_protect_relro() makes read-only at this bias."""
        if self.relro is None:
            return None
        vaddr, memsz = self.relro
        start = (bias + vaddr) & ~(PAGE_SIZE - 1)
        end = (bias + vaddr + memsz) & ~(PAGE_SIZE - 1)
        return (start, end) if end > start else None


def read_elf(path: Path) -> ElfImage:
    """The PT_LOAD, PT_INTERP and PT_GNU_RELRO program headers of an ELF file (pyelftools);
    cached per (path, size, mtime), since a replay may exec the same binary many times."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise ExecError(f"{path}: {e.strerror}") from e
    return _read_elf(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _read_elf(path_s: str, size: int, mtime_ns: int) -> ElfImage:
    path = Path(path_s)
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        with open(path, "rb") as fh:
            elf = ELFFile(fh)
            if elf.get_machine_arch() != "x64":
                raise ExecError(f"{path}: not an x86-64 ELF ({elf.get_machine_arch()})")
            segs = []
            interp = None
            relro = None
            for seg in elf.iter_segments():
                if seg["p_type"] == "PT_LOAD":
                    fl = seg["p_flags"]
                    prot = (
                        (PROT_READ if fl & 4 else 0)
                        | (PROT_WRITE if fl & 2 else 0)
                        | (PROT_EXEC if fl & 1 else 0)
                    )
                    segs.append(
                        Segment(
                            seg["p_vaddr"],
                            seg["p_offset"],
                            seg["p_filesz"],
                            seg["p_memsz"],
                            prot,
                            seg["p_align"],
                        )
                    )
                elif seg["p_type"] == "PT_GNU_RELRO":
                    relro = (seg["p_vaddr"], seg["p_memsz"])
                elif seg["p_type"] == "PT_INTERP":
                    interp = str(seg.get_interp_name())  # type: ignore[attr-defined]
            dynamic = elf["e_type"] == "ET_DYN"
    except (OSError, ELFError) as e:
        raise ExecError(f"{path}: {e}") from e
    if not segs:
        raise ExecError(f"{path}: no PT_LOAD segment")
    st = os.stat(path)
    return ElfImage(
        str(path),
        dynamic,
        segs,
        interp,
        st.st_size,
        (os.major(st.st_dev), os.minor(st.st_dev)),
        st.st_ino,
        relro=relro,
    )


def _open(proc: Process, img: ElfImage) -> int:
    inode = proc.machine.inode_for(img.path, img.dev, img.ino, img.size)
    return proc._new_fd(OpenFile(inode, writable=False))


def _load(proc: Process, img: ElfImage, bias: int | None) -> tuple[int, int]:
    """elf_load() of every PT_LOAD: returns (load bias, end of the last segment's memory).

    ``bias`` None places the image top-down (an ET_DYN interpreter: vm_mmap(NULL, total))."""
    mm = proc.mm
    fd = _open(proc, img)
    first = img.segments[0]
    last = img.segments[-1]
    total = page_align(last.vaddr + last.memsz) - (first.vaddr & ~(PAGE_SIZE - 1))
    flags = MAP_PRIVATE
    end_brk = 0
    for i, seg in enumerate(img.segments):
        page_off = seg.vaddr & (PAGE_SIZE - 1)
        if bias is None:
            # first segment: map the whole image size top-down, then trim to the segment
            addr = proc.mmap(0, total, seg.prot, flags, fd, seg.offset - page_off)
            bias = addr - (seg.vaddr - page_off)
            size = page_align(seg.filesz + page_off)
            if total > size:
                proc.munmap(addr + size, total - size)
        else:
            start = bias + seg.vaddr - page_off
            if seg.filesz:
                size = seg.filesz + page_off
                if i == 0 and total > page_align(size):
                    proc.mmap(start, total, seg.prot, flags | MAP_FIXED, fd, seg.offset - page_off)
                    proc.munmap(start + page_align(size), total - page_align(size))
                else:
                    proc.mmap(start, size, seg.prot, flags | MAP_FIXED, fd, seg.offset - page_off)
        if seg.memsz > seg.filesz:
            zero_start = bias + seg.vaddr + seg.filesz
            zero_end = bias + seg.vaddr + seg.memsz
            if zero_start & (PAGE_SIZE - 1) and seg.prot & PROT_WRITE and seg.filesz:
                # padzero(): clearing the tail of the last file page is a write fault
                vma = mm.tree.lookup(zero_start)
                if vma is not None:
                    mm.anon_vma_prepare(vma)
            zs, ze = page_align(zero_start), page_align(zero_end)
            if ze > zs:
                prev = mm.tree.prev_of(zs + 1)
                do_brk_flags(mm, prev, zs, ze - zs, VM_EXEC if seg.prot & PROT_EXEC else 0)
        end_brk = max(end_brk, bias + seg.vaddr + seg.memsz)
    proc.close(fd)
    assert bias is not None
    lo = bias + (first.vaddr & ~(PAGE_SIZE - 1))
    proc.images.append(LoadedImage(img.path, bias, lo, page_align(end_brk), img.relro))
    return bias, end_brk


def _special(mm: AddressSpace, start: int, pages: int, flags: int, name: str) -> int:
    mm.tree.insert_new(Vma(start, start + pages * PAGE_SIZE, flags, 0, name=name))
    return start + pages * PAGE_SIZE


def exec_image(proc: Process, img: ElfImage, interp: ElfImage | None) -> None:
    """load_elf_binary() into ``proc``'s fresh, empty address space."""
    mm = proc.mm
    proc.images = []
    # setup_arg_pages(): one page of arguments, grown by 128 KiB; written, so anon_vma
    stack = Vma(
        STACK_TOP - PAGE_SIZE - STACK_EXPAND,
        STACK_TOP,
        VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC | VM_GROWSDOWN | VM_ACCOUNT,
        (STACK_TOP - PAGE_SIZE - STACK_EXPAND) >> 12,
        anon_vma=AnonVma(),
    )
    mm.tree.insert_new(stack)
    mm.start_stack = STACK_TOP - PAGE_SIZE // 2
    if img.dynamic:
        align = max((s.align for s in img.segments if s.align > PAGE_SIZE), default=PAGE_SIZE)
        base = ELF_ET_DYN_BASE & ~(align - 1)
        bias = base - (img.segments[0].vaddr & ~(PAGE_SIZE - 1))
    else:
        bias = 0
    _, end_brk = _load(proc, img, bias)
    mm.start_brk = mm.brk = page_align(end_brk)
    if interp is not None:
        _load(proc, interp, None)
    # map_vdso(): [vvar] [vvar_vclock] [vdso] placed top-down like any mapping
    addr = get_unmapped_area(mm, None, 0, VDSO_BLOCK, 0, 0, 0)
    addr = _special(mm, addr, VVAR_PAGES, VVAR_FLAGS, "[vvar]")
    addr = _special(mm, addr, VVAR_VCLOCK_PAGES, VVAR_FLAGS, "[vvar_vclock]")
    _special(mm, addr, VDSO_PAGES, VDSO_FLAGS, "[vdso]")


def resolve(path: str, cwd: Path, root: Path | None = None) -> Path:
    p = Path(path)
    if root is not None and p.is_absolute():
        return root / p.relative_to("/")
    return p if p.is_absolute() else cwd / p


def relocate(mm: AddressSpace, image: LoadedImage, bias: int) -> bool:
    """Move an image's VMAs to load bias ``bias`` (where ASLR really put it); False if the
    destination is not free."""
    delta = bias - image.bias
    if not move_range(mm, image.lo, image.hi, delta):
        return False
    image.bias, image.lo, image.hi = bias, image.lo + delta, image.hi + delta
    return True


def move_range(mm: AddressSpace, lo: int, hi: int, delta: int) -> bool:
    """Move every VMA of ``[lo, hi)`` by ``delta`` bytes, if the destination is free."""
    if not delta:
        return True
    nlo, nhi = lo + delta, hi + delta
    if nlo < 0 or nhi > mm.cfg.task_size:
        return False
    vmas = mm.tree.range(lo, hi)
    for v in vmas:
        mm.tree.remove_unmapped(v)
    if mm.tree.find_intersection(nlo, nhi) is not None:
        for v in vmas:
            mm.tree.insert_new(v)
        return False
    for v in vmas:
        v.start += delta
        v.end += delta
        if v.file is None and v.name is None:
            v.pgoff += delta >> 12
        mm.tree.insert_new(v)
    move_page_tables(mm, lo, nlo, hi - lo)
    return True


VDSO_BLOCK = (VVAR_PAGES + VVAR_VCLOCK_PAGES + VDSO_PAGES) * PAGE_SIZE


def place_top(mm: AddressSpace, interp: LoadedImage, first_mmap: int, length: int) -> bool:
    """ASLR moved mmap_base. A fresh process's first mmap(NULL) lands right below the
    [vvar][vvar_vclock][vdso] block, which lies right below the interpreter: from where
    the kernel put that first mapping, place the interpreter, the vdso and mmap_base."""
    vdso_lo = first_mmap + page_align(length)
    new_lo = vdso_lo + VDSO_BLOCK
    old_vdso = interp.lo - VDSO_BLOCK
    first = mm.tree.lookup(old_vdso)
    if first is None or first.name != "[vvar]":
        return False
    if not move_range(mm, old_vdso, interp.hi, new_lo - interp.lo):
        return False
    interp.bias += new_lo - interp.lo
    interp.hi += new_lo - interp.lo
    interp.lo = new_lo
    mm.mmap_base = interp.hi
    return True


BINPRM_BUF_SIZE = 256  # the bytes of the file the kernel reads for its format handlers
MAX_REWRITES = 5  # exec_binprm(): search_binary_handler() at depth 0..5, then -ELOOP


@dataclass(frozen=True)
class Shebang:
    """The ``#!`` line of a script, as load_script() (fs/binfmt_script.c) reads it."""

    interpreter: str
    argument: str | None


def read_shebang(head: bytes) -> Shebang | None:
    """load_script(): ``head`` (the first BINPRM_BUF_SIZE bytes) starts with ``#!``; the
    interpreter is the first word after it (spaces and tabs skipped), the optional argument is
    the rest of the line with spaces and tabs stripped at both ends (one argument, whatever
    spaces it holds). A line longer than the buffer is only accepted if the interpreter's name
    ends inside it. None for a file that is not a script; ExecError (ENOEXEC) when the line
    names no interpreter."""
    if not head.startswith(b"#!"):
        return None
    buf = head[2 : BINPRM_BUF_SIZE - 1]  # load_script(): the last byte is kept for a NUL
    nl = buf.find(b"\n")
    line = buf if nl < 0 else buf[:nl]
    line = line.split(b"\0", 1)[0]
    text = line.lstrip(b" \t")
    if not text:
        raise ExecError("ENOEXEC: '#!' names no interpreter")
    end = len(text)
    for sep in (b" ", b"\t"):
        i = text.find(sep)
        if i >= 0:
            end = min(end, i)
    if nl < 0 and end == len(text) and len(head) >= BINPRM_BUF_SIZE:
        raise ExecError("ENOEXEC: the interpreter's name does not end within 256 bytes")
    interp = text[:end].decode("utf-8", "surrogateescape")
    arg = text[end:].strip(b" \t")
    return Shebang(interp, arg.decode("utf-8", "surrogateescape") if arg else None)


def resolve_interpreters(path: Path, cwd: Path) -> tuple[Path, list[str]]:
    """Follow ``#!`` lines from ``path`` to the ELF binary the kernel finally loads, as
    exec_binprm() does (at most MAX_REWRITES scripts, then ELOOP); returns it and notes."""
    notes: list[str] = []
    for _depth in range(MAX_REWRITES + 1):
        try:
            with open(path, "rb") as fh:
                head = fh.read(BINPRM_BUF_SIZE)
        except OSError as e:
            raise ExecError(f"{path}: {e.strerror}") from e
        script = read_shebang(head)
        if script is None:
            return path, notes
        notes.append(
            f"{path}: a '#!' script run by {script.interpreter}"
            + (f" (argument {script.argument!r})" if script.argument else "")
        )
        path = resolve(script.interpreter, cwd)
    raise ExecError(f"ELOOP: more than {MAX_REWRITES} '#!' interpreters in a row")


def load_program(proc: Process, path: str, cwd: Path = Path(".")) -> list[str]:
    """Read ``path`` (following ``#!`` interpreters to an ELF binary) and its ELF
    interpreter, and build the exec layout; returns notes."""
    binary, notes = resolve_interpreters(resolve(path, cwd), cwd)
    img = read_elf(binary)
    interp = read_elf(Path(img.interp)) if img.interp else None
    exec_image(proc, img, interp)
    return notes + img.notes


__all__ = [
    "BINPRM_BUF_SIZE",
    "ELF_ET_DYN_BASE",
    "MAX_REWRITES",
    "STACK_EXPAND",
    "STACK_TOP",
    "VDSO_BLOCK",
    "ElfImage",
    "ExecError",
    "LoadedImage",
    "Segment",
    "Shebang",
    "exec_image",
    "load_program",
    "move_range",
    "place_top",
    "read_elf",
    "read_shebang",
    "relocate",
    "resolve",
    "resolve_interpreters",
]
