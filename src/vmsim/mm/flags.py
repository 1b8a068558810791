"""VMA flags (``vm_flags``) with the bit layout of include/linux/mm.h in Linux 6.18.

Plain ints rather than an IntFlag: they are combined on every syscall's hot path.
``VM_SOFTDIRTY`` is 0 because the reference kernel is built without CONFIG_MEM_SOFT_DIRTY.
"""

from __future__ import annotations

from vmsim.constants import PROT_EXEC, PROT_READ, PROT_WRITE

VM_NONE = 0
VM_READ = 1 << 0
VM_WRITE = 1 << 1
VM_EXEC = 1 << 2
VM_SHARED = 1 << 3
VM_MAYREAD = 1 << 4
VM_MAYWRITE = 1 << 5
VM_MAYEXEC = 1 << 6
VM_MAYSHARE = 1 << 7
VM_GROWSDOWN = 1 << 8
VM_UFFD_MISSING = 1 << 9
VM_PFNMAP = 1 << 10
VM_MAYBE_GUARD = 1 << 11
VM_UFFD_WP = 1 << 12
VM_LOCKED = 1 << 13
VM_IO = 1 << 14
VM_SEQ_READ = 1 << 15
VM_RAND_READ = 1 << 16
VM_DONTCOPY = 1 << 17
VM_DONTEXPAND = 1 << 18
VM_LOCKONFAULT = 1 << 19
VM_ACCOUNT = 1 << 20
VM_NORESERVE = 1 << 21
VM_HUGETLB = 1 << 22
VM_SYNC = 1 << 23
VM_ARCH_1 = 1 << 24
VM_WIPEONFORK = 1 << 25
VM_DONTDUMP = 1 << 26
VM_SOFTDIRTY = 0
VM_MIXEDMAP = 1 << 28
VM_HUGEPAGE = 1 << 29
VM_NOHUGEPAGE = 1 << 30
VM_MERGEABLE = 1 << 31
# High bits: only their relative order matters (it is the VmFlags print order).
VM_UFFD_MINOR = 1 << 38
VM_SHADOW_STACK = 1 << 39
VM_DROPPABLE = 1 << 40
VM_SEALED = 1 << 42

VM_ACCESS_FLAGS = VM_READ | VM_WRITE | VM_EXEC
VM_SPECIAL = VM_IO | VM_DONTEXPAND | VM_PFNMAP | VM_MIXEDMAP
VM_LOCKED_MASK = VM_LOCKED | VM_LOCKONFAULT
VM_STACK = VM_GROWSDOWN
VM_STARTGAP_FLAGS = VM_GROWSDOWN | VM_SHADOW_STACK
# Flags that differ between two VMAs without blocking a merge (VM_IGNORE_MERGE / sticky flags).
VM_IGNORE_MERGE = VM_SOFTDIRTY | VM_MAYBE_GUARD
VM_DATA_DEFAULT_FLAGS = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
# The special mappings of every process (smaps: "rd mr pf io de dd" and "rd ex mr mw me de").
VVAR_FLAGS = VM_READ | VM_MAYREAD | VM_PFNMAP | VM_IO | VM_DONTEXPAND | VM_DONTDUMP
VDSO_FLAGS = VM_READ | VM_EXEC | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC | VM_DONTEXPAND

# show_smap_vma_flags(): two-letter mnemonics in bit order.
MNEMONICS: tuple[tuple[int, str], ...] = (
    (VM_READ, "rd"),
    (VM_WRITE, "wr"),
    (VM_EXEC, "ex"),
    (VM_SHARED, "sh"),
    (VM_MAYREAD, "mr"),
    (VM_MAYWRITE, "mw"),
    (VM_MAYEXEC, "me"),
    (VM_MAYSHARE, "ms"),
    (VM_GROWSDOWN, "gd"),
    (VM_UFFD_MISSING, "um"),
    (VM_PFNMAP, "pf"),
    (VM_MAYBE_GUARD, "gu"),
    (VM_UFFD_WP, "uw"),
    (VM_LOCKED, "lo"),
    (VM_IO, "io"),
    (VM_SEQ_READ, "sr"),
    (VM_RAND_READ, "rr"),
    (VM_DONTCOPY, "dc"),
    (VM_DONTEXPAND, "de"),
    (VM_LOCKONFAULT, "lf"),
    (VM_ACCOUNT, "ac"),
    (VM_NORESERVE, "nr"),
    (VM_HUGETLB, "ht"),
    (VM_SYNC, "sf"),
    (VM_ARCH_1, "ar"),
    (VM_WIPEONFORK, "wf"),
    (VM_DONTDUMP, "dd"),
    (VM_MIXEDMAP, "mm"),
    (VM_HUGEPAGE, "hg"),
    (VM_NOHUGEPAGE, "nh"),
    (VM_MERGEABLE, "mg"),
    (VM_UFFD_MINOR, "ui"),
    (VM_SHADOW_STACK, "ss"),
    (VM_DROPPABLE, "dp"),
    (VM_SEALED, "sl"),
)
FLAG_BY_MNEMONIC = {name: bit for bit, name in MNEMONICS}


def calc_vm_prot_bits(prot: int) -> int:
    """mirrors calc_vm_prot_bits(): PROT_* to VM_READ/WRITE/EXEC (same bit values)."""
    return prot & (PROT_READ | PROT_WRITE | PROT_EXEC)


def vmflags_text(flags: int) -> str:
    """The smaps ``VmFlags:`` value: each mnemonic followed by a space."""
    return "".join(name + " " for bit, name in MNEMONICS if flags & bit)


def vmflags_from_text(text: str) -> int:
    """Parse the mnemonics of a smaps ``VmFlags:`` line; unknown ones are ignored."""
    flags = 0
    for name in text.split():
        flags |= FLAG_BY_MNEMONIC.get(name, 0)
    return flags


__all__ = [
    "FLAG_BY_MNEMONIC",
    "MNEMONICS",
    "VDSO_FLAGS",
    "VM_ACCESS_FLAGS",
    "VM_ACCOUNT",
    "VM_ARCH_1",
    "VM_DATA_DEFAULT_FLAGS",
    "VM_DONTCOPY",
    "VM_DONTDUMP",
    "VM_DONTEXPAND",
    "VM_DROPPABLE",
    "VM_EXEC",
    "VM_GROWSDOWN",
    "VM_HUGEPAGE",
    "VM_HUGETLB",
    "VM_IGNORE_MERGE",
    "VM_IO",
    "VM_LOCKED",
    "VM_LOCKED_MASK",
    "VM_LOCKONFAULT",
    "VM_MAYBE_GUARD",
    "VM_MAYEXEC",
    "VM_MAYREAD",
    "VM_MAYSHARE",
    "VM_MAYWRITE",
    "VM_MERGEABLE",
    "VM_MIXEDMAP",
    "VM_NOHUGEPAGE",
    "VM_NONE",
    "VM_NORESERVE",
    "VM_PFNMAP",
    "VM_RAND_READ",
    "VM_READ",
    "VM_SEALED",
    "VM_SEQ_READ",
    "VM_SHADOW_STACK",
    "VM_SHARED",
    "VM_SOFTDIRTY",
    "VM_SPECIAL",
    "VM_STACK",
    "VM_STARTGAP_FLAGS",
    "VM_SYNC",
    "VM_UFFD_MINOR",
    "VM_UFFD_MISSING",
    "VM_UFFD_WP",
    "VM_WIPEONFORK",
    "VM_WRITE",
    "VVAR_FLAGS",
    "calc_vm_prot_bits",
    "vmflags_from_text",
    "vmflags_text",
]
