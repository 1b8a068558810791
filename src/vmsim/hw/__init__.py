"""What the CPU does: the x86-64 page-table entry format, radix page tables, MMU walk, TLBs.

The modules here model hardware, not policy: they know nothing of VMAs, files or processes.

- ``pte``: the entry format (plain ints, named bits), swap entries, ``vm_get_page_prot()``.
- ``pagetable``: the radix tree of table pages (4- or 5-level), table frames from a callback.
- ``mmu``: the hardware walk, its permission checks, A/D updates, paging-structure caches.
- ``tlb``: the translation lookaside buffers.
- ``cpu``: the one CPU: its TLBs, paging-structure caches and PCIDs (context switches,
  range flushes).

Import from the submodules; this package keeps no re-exports so that the modules, built in
parallel, do not depend on each other through it.
"""

__all__: list[str] = []
