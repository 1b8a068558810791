"""Linux's mm/, one module per kernel file (see docs/design.md for the full table).

- address space and VMAs: ``core`` (mm_struct), ``vma``, ``tree``, ``flags``;
- syscalls: ``mmap``, ``mprotect`` (+ mlock, mseal, change_pte_range), ``mremap``
  (+ move_ptes), ``madvise`` (+ lazyfree, cold/pageout), ``mincore``; ``access`` is
  arch/x86/mm/fault.c;
- faults and page tables: ``memory`` (memory.c: handle_mm_fault, zap, fork), ``gup``,
  ``filemap`` (the page cache), ``readahead``, ``truncate``, ``rmap``, ``mlock``;
- swap: ``swapfile`` (devices), ``swap_state`` (swap cache, swap-in), ``swapops`` (entries),
  ``zswap``;
- reclaim and memory state: ``kernel`` (the globals), ``mmzone`` (the node), ``page_alloc``,
  ``lru`` (mm/swap.c), ``vmscan``, ``workingset``, ``ksm``, ``oom_kill``, ``vmstat``;
  ``internal`` holds the helpers they share (mm/internal.h).
"""

__all__: list[str] = []
