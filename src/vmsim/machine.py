"""The simulated machine: system-wide settings and the processes that run on it."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from vmsim import snapshot
from vmsim.constants import DEFAULT_MAX_MAP_COUNT, MAX_MAP_COUNT_LIMIT, PAGE_SHIFT, PAGE_SIZE
from vmsim.hw.tlb import DEFAULT_TLB_CONFIG, TlbConfig
from vmsim.mm import compaction, debug, hugetlb, mthp, page_writeback, vmscan
from vmsim.mm.core import AddressSpace, MmConfig
from vmsim.mm.huge_memory import ThpSettings, thp_settings
from vmsim.mm.kernel import Kernel
from vmsim.mm.khugepaged import khugepaged_scan
from vmsim.mm.ksm import Ksm
from vmsim.mm.oom_kill import oom_badness, out_of_memory
from vmsim.mm.shm import shm_namespace
from vmsim.mm.swapfile import DEVICE_KINDS, SwapDevice
from vmsim.mm.truncate import drop_cache_pages
from vmsim.mm.vma import Inode, OpenFile
from vmsim.mm.zswap import COMPRESSORS, PoolMemory, Zswap
from vmsim.mm.zswap import STAT_NAMES as ZSWAP_STAT_NAMES
from vmsim.phys.frames import MAX_PHYS_BYTES
from vmsim.process import Process
from vmsim.procfs import kpageflags, meminfo_text, vmstat_text

# mmap_base of a process without ASLR: TASK_SIZE - 128 MiB (the minimum stack gap).
DEFAULT_MMAP_BASE = 0x7FFFF7FFF000
DEFAULT_START_BRK = 0x555555559000

_SIZE = re.compile(r"^\s*(\d+)\s*([KMGTP]?)i?B?\s*$", re.IGNORECASE)


def parse_size(value: int | str) -> int:
    """Bytes from an int or a string like "64M", "16GiB", "4096"."""
    if isinstance(value, int):
        return value
    m = _SIZE.match(value)
    if not m:
        raise ValueError(f"not a size: {value!r} (use e.g. 4096, 64M, 16G)")
    shift = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40, "P": 50}[m.group(2).upper()]
    return int(m.group(1)) << shift


MIN_RAM_BYTES = 2 * PAGE_SIZE  # the zero page and one frame to use
MAX_RAM_BYTES = MAX_PHYS_BYTES  # x86-64's 52-bit physical addresses: 4 PiB
MIN_SWAP_BYTES = 2 * PAGE_SIZE  # the swap header page and one slot
# union swap_header: last_page is a __u32, so one swap area holds at most 2**32 pages
# (16 TiB). Slots cost memory only once used: any size up to that is cheap.
MAX_SWAP_BYTES = 1 << (32 + PAGE_SHIFT)


def _human(n: int) -> str:
    for shift, unit in ((50, "P"), (40, "T"), (30, "G"), (20, "M"), (10, "K")):
        if n >= 1 << shift and not n & ((1 << shift) - 1):
            return f"{n >> shift}{unit}"
    return str(n)


def _sized(name: str, value: int | str, low: int, high: int) -> int:
    """``parse_size(value)`` checked against ``low..high`` bytes (ValueError naming both)."""
    try:
        n = parse_size(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    if not low <= n <= high:
        raise ValueError(
            f"{name} must be within {_human(low)}..{_human(high)} bytes, got {value!r}"
        )
    return n


def _check_max_map_count(value: int) -> None:
    """vm.max_map_count is an int sysctl with a minimum of 0: writing a value outside
    0..INT_MAX fails with EINVAL (proc_dointvec_minmax())."""
    if not 0 <= value <= MAX_MAP_COUNT_LIMIT:
        raise ValueError(f"max_map_count must be within 0..{MAX_MAP_COUNT_LIMIT}, got {value}")


class Machine:
    """A Linux 6.18 x86-64 machine. Keyword options mirror sysctls and hardware:

    ``max_map_count`` (vm.max_map_count), ``ram`` and ``swap`` (sizes; they bound the
    overcommit heuristic), ``overcommit_memory``/``overcommit_ratio``, ``mmap_min_addr``,
    ``thp`` (/sys/kernel/mm/transparent_hugepage: "always" | "madvise" | "never" for
    ``enabled``, or a dict of ``vmsim.mm.huge_memory.ThpSettings`` fields such as
    ``{"enabled": "always", "defrag": "never", "max_ptes_none": 0, "mthp": {64: "always"}}``;
    the defaults are this reference machine's), ``five_level`` (57-bit addresses),
    ``tlb`` (a ``vmsim.hw.tlb.TlbConfig``: the TLB geometry; default a recent Intel core),
    ``swap_device`` ("disk": rotational, swap readahead by cluster; "ssd": readahead by
    VMA; "zram": a compressed swap device in RAM, compressed with ``zram_compressor``),
    ``zswap`` (None, or the compressor of a zswap pool in front of swap: "zstd", "lz4",
    "deflate"; ``zswap_max_pool_percent``; ``zswap_same_filled=True`` for the zswap of Linux
    6.11 and older: same-filled pages kept in the pool, no swap zeromap), ``swappiness``
    (vm.swappiness, 0..200), ``page_cluster`` (vm.page-cluster), ``vma_ra_enabled``
    (/sys/kernel/mm/swap/vma_ra_enabled), ``read_ahead_kb`` (the file's block device's
    queue/read_ahead_kb: the mmap read-around window), ``ksm`` (run ksmd),
    ``seed`` (for workloads that draw random numbers: every run repeats exactly),
    ``hugepages`` (the hugetlbfs pools: nr_hugepages per size, e.g. ``{"2M": 64, "1G": 1}``;
    empty by default, as on the reference machine) and ``hugepages_overcommit``
    (nr_overcommit_hugepages per size), ``pkeys`` (CPU with protection keys: smaps shows ProtectionKey), ``vsyscall``
    (the [vsyscall] gate line in maps), ``stack_limit`` (RLIMIT_STACK), ``rlimit_as`` and
    ``rlimit_data`` (RLIMIT_AS / RLIMIT_DATA in bytes; None is unlimited).
    """

    #: The compressors ``zswap=`` accepts (/sys/module/zswap/parameters/compressor).
    ZSWAP_COMPRESSORS: ClassVar[tuple[str, ...]] = COMPRESSORS

    def __init__(
        self,
        *,
        max_map_count: int = DEFAULT_MAX_MAP_COUNT,
        ram: int | str = "16G",
        swap: int | str = 0,
        overcommit_memory: int = 0,
        overcommit_ratio: int = 50,
        mmap_min_addr: int = 4096,
        thp: str | ThpSettings | dict[str, Any] | None = None,
        five_level: bool = False,
        tlb: TlbConfig | None = None,
        swap_device: str = "disk",
        zswap: str | None = None,
        zswap_max_pool_percent: int = 20,
        zswap_same_filled: bool = False,
        zram_compressor: str = "lz4",
        swappiness: int = 60,
        page_cluster: int = 3,
        vma_ra_enabled: bool = True,
        read_ahead_kb: int = 128,
        ksm: bool = False,
        seed: int = 0,
        pkeys: bool = False,
        vsyscall: bool = True,
        stack_limit: int | str = "8M",
        rlimit_as: int | str | None = None,
        rlimit_data: int | str | None = None,
        hugepages: dict[str, int] | None = None,
        hugepages_overcommit: dict[str, int] | None = None,
    ) -> None:
        thp_cfg = thp_settings(thp)
        if overcommit_memory not in (0, 1, 2):
            raise ValueError("overcommit_memory must be 0, 1 or 2")
        _check_max_map_count(max_map_count)
        ram_bytes = _sized("ram", ram, MIN_RAM_BYTES, MAX_RAM_BYTES)
        swap_bytes = _sized("swap", swap, 0, MAX_SWAP_BYTES)
        if 0 < swap_bytes < MIN_SWAP_BYTES:
            raise ValueError(
                f"swap must be 0 (none) or within {_human(MIN_SWAP_BYTES)}.."
                f"{_human(MAX_SWAP_BYTES)}, got {swap!r} (a swap area needs a header page "
                "and a slot)"
            )
        self.cfg = MmConfig(
            max_map_count=max_map_count,
            mmap_min_addr=mmap_min_addr,
            five_level=five_level,
            overcommit_memory=overcommit_memory,
            overcommit_ratio=overcommit_ratio,
            ram_pages=ram_bytes >> PAGE_SHIFT,
            swap_pages=swap_bytes >> PAGE_SHIFT,
            thp=thp_cfg.enabled,
            rlimit_as=None if rlimit_as is None else parse_size(rlimit_as),
            rlimit_data=None if rlimit_data is None else parse_size(rlimit_data),
            memory=Kernel(ram_bytes, tlb if tlb is not None else DEFAULT_TLB_CONFIG),
        )
        assert self.cfg.memory is not None
        self.memory: Kernel = self.cfg.memory
        self.memory.thp.settings = thp_cfg
        self.memory.on_file_unmapped = self._release_inode
        self.memory.oom_handler = self._oom_kill
        for size, n in (hugepages_overcommit or {}).items():
            self._hstate(size, n, "hugepages_overcommit").nr_overcommit_huge_pages = n
        for size, n in (hugepages or {}).items():
            self.set_nr_hugepages(size, n)
        self.seed = seed
        self._setup_swap(
            self.cfg.swap_pages, swap_device, zswap, zswap_max_pool_percent, zram_compressor
        )
        if not 0 <= swappiness <= 200:
            raise ValueError("swappiness must be within 0..200")
        if not 0 <= page_cluster <= 30:
            raise ValueError("page_cluster must be within 0..30")
        if read_ahead_kb < 0:
            raise ValueError("read_ahead_kb must be >= 0")
        swap_space = self.memory.swap
        if swap_space.zswap is not None:
            swap_space.zswap.same_filled = zswap_same_filled
        swap_space.use_zeromap = not zswap_same_filled
        swap_space.page_cluster = page_cluster
        swap_space.vma_ra_enabled = vma_ra_enabled
        self.memory.node.swappiness = swappiness
        self.memory.ra_pages = read_ahead_kb // 4
        # KSM is always built in (CONFIG_KSM); ``ksm`` decides whether ksmd runs (run=1)
        self.ksm: Ksm = Ksm(self.memory, run=1 if ksm else 0)
        self.memory.ksm = self.ksm
        self.ticks = 0
        self.pkeys = pkeys
        self.vsyscall = vsyscall
        self.stack_limit = parse_size(stack_limit)
        self.processes: list[Process] = []
        self._pid = 1000
        self._ino = 1024
        self._inodes: dict[str, Inode] = {}

    @property
    def max_map_count(self) -> int:
        return self.cfg.max_map_count

    @max_map_count.setter
    def max_map_count(self, value: int) -> None:
        _check_max_map_count(value)
        self.cfg.max_map_count = value

    def _hstate(self, size: str, n: int, what: str) -> hugetlb.HState:
        hugetlb_ = self.memory.hugetlb
        assert hugetlb_ is not None
        h = hugetlb_.hstates.get(size)
        if h is None:
            raise ValueError(f"{what}: no huge page size {size!r} (x86-64 has '2M' and '1G')")
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"{what}[{size!r}] must be a count >= 0, got {n!r}")
        return h

    def set_nr_hugepages(self, size: str, count: int) -> int:
        """Write ``count`` to /sys/kernel/mm/hugepages/hugepages-<size>/nr_hugepages
        (set_max_huge_pages()): grow the pool while the buddy allocator has free blocks of
        the size, shrink it down to what is in use or reserved. Returns the pool's new
        persistent size (fewer than asked when memory ran short)."""
        h = self._hstate(size, count, "hugepages")
        hugetlb.set_max_huge_pages(self.memory, h, count)
        return h.persistent

    def hugepage_stats(self, size: str = "2M") -> dict[str, int]:
        """/sys/kernel/mm/hugepages/hugepages-<size>/: nr_hugepages, free_hugepages,
        resv_hugepages, surplus_hugepages, nr_overcommit_hugepages."""
        h = self._hstate(size, 0, "hugepages")
        return {
            "nr_hugepages": h.persistent,
            "free_hugepages": h.free_huge_pages,
            "resv_hugepages": h.resv_huge_pages,
            "surplus_hugepages": h.surplus_huge_pages,
            "nr_overcommit_hugepages": h.nr_overcommit_huge_pages,
        }

    def _next_ino(self) -> int:
        self._ino += 1
        return self._ino

    def inode_for(self, path: str, dev: tuple[int, int], ino: int, size: int) -> Inode:
        """The machine's inode for a file path (one per path: every open shares it)."""
        inode = self._inodes.get(path)
        if inode is None:
            shmem = path.startswith(("/memfd:", "/dev/shm/", "/dev/zero", "/SYSV"))
            inode = self._inodes[path] = Inode(
                path, dev, ino or self._next_ino(), size=size, shmem=shmem
            )
        return inode

    def _release_inode(self, inode: Inode) -> None:
        """iput() of a deleted file (memfd, shared anonymous memory): once no process
        opens or maps it, its page cache is freed. Named files keep their cache."""
        if inode.huge_shift:
            self._release_hugetlb_inode(inode)
            return
        if inode.deleted and shm_namespace(self).holds(self, inode):
            return  # a live SysV segment holds its shm file (until shm_destroy())
        if not inode.deleted or not (inode.pages or inode.swapped):
            return
        for p in self.processes:
            if not p.alive:
                continue
            if any(f.inode is inode for f in p.files.values()):
                return
        for mm in self.memory.mms.values():
            if any(v.file is not None and v.file.inode is inode for v in mm.tree):
                return
        last = max([*inode.pages, *inode.swapped]) + 1
        drop_cache_pages(self.memory, inode, 0, last)

    def _release_hugetlb_inode(self, inode: Inode) -> None:
        """hugetlbfs_evict_inode() once no process opens or maps the unlinked file and no
        live SysV segment (SHM_HUGETLB) holds it."""
        if shm_namespace(self).holds(self, inode):
            return
        for p in self.processes:
            if p.alive and any(f.inode is inode for f in p.files.values()):
                return
        for mm in self.memory.mms.values():
            if any(v.file is not None and v.file.inode is inode for v in mm.tree):
                return
        hugetlb.release_file(self.memory, inode)

    def _shmem_file(self, length: int) -> OpenFile:
        inode = Inode(
            "/dev/zero", dev=(0, 1), ino=self._next_ino(), size=length, shmem=True, deleted=True
        )
        return OpenFile(inode)

    def _adopt(self, mm: AddressSpace) -> Process:
        self._pid += 1
        p = Process(self, self._pid, mm)
        self.processes.append(p)
        return p

    def spawn(
        self,
        layout: str | None = None,
        *,
        maps: str | None = None,
        mmap_base: int | None = None,
        start_brk: int | None = None,
    ) -> Process:
        """A new process: empty (map_count 0) by default; ``layout="linux"`` for the usual
        layout of a fresh process; ``maps=`` to rebuild one from a real maps/smaps text."""
        if layout not in (None, "empty", "linux"):
            raise ValueError(f"unknown layout {layout!r} (use 'empty' or 'linux')")
        if maps is not None and layout not in (None, "empty"):
            raise ValueError("give either layout= or maps=, not both")
        mm = AddressSpace(self.cfg, DEFAULT_MMAP_BASE)
        mm.start_brk = mm.brk = DEFAULT_START_BRK
        text = snapshot.LINUX_LAYOUT if layout == "linux" else maps
        if text is not None:
            snapshot.build(mm, snapshot.parse(text))
        if mmap_base is not None:
            mm.mmap_base = mmap_base
        if start_brk is not None:
            mm.start_brk = mm.brk = start_brk
        return self._adopt(mm)

    # ------------------------------------------------------------------ reporting
    def meminfo(self) -> str:
        """/proc/meminfo, for the lines the model keeps (``vmsim.procfs.meminfo_text``)."""
        return meminfo_text(self.memory, self.cfg)

    @property
    def stats(self) -> dict[str, int]:
        """Machine-wide counters: vmstat's pgfault/pgmajfault, translations, page walks and
        their memory references, and the CPU's TLB hits, misses and flushes."""
        d = self.memory.stats.as_dict()
        d["translations"] = sum(p.mm.stats.translations for p in self.processes)
        d.update(self.memory.cpu.tlb.stats._asdict())
        return d

    def check_memory(self) -> None:
        """Assert that every frame's refcount and mapcount equal a recount from the page
        tables, page caches and swap cache, and that the reverse map, LRU lists, mlock counts
        and swap counts agree with them (``vmsim.mm.debug.check_memory``; a debugging aid for
        tests: it walks everything)."""
        inodes = list(self._inodes.values())
        for p in self.processes:
            inodes.extend(f.inode for f in p.files.values())
        debug.check_memory(self.memory, inodes)

    def check_tlb(self) -> None:
        """Assert that no TLB entry grants more than the page tables allow now
        (``vmsim.mm.debug.check_tlb``; a debugging aid for tests)."""
        debug.check_tlb(self.memory)

    # --------------------------------------------------------------- memory pressure
    def _setup_swap(
        self, pages: int, device: str, zswap: str | None, pool_percent: int, zram_comp: str
    ) -> None:
        mem = self.memory
        if device not in DEVICE_KINDS:
            raise ValueError(f"swap_device must be disk, ssd or zram, not {device!r}")
        if zswap is not None and zswap not in COMPRESSORS:
            raise ValueError(f"zswap must be one of {', '.join(COMPRESSORS)}, not {zswap!r}")
        if not 0 < pool_percent <= 100:
            raise ValueError("zswap_max_pool_percent must be within 1..100")

        def pool_alloc() -> int | None:
            if mem.frames.free_pages <= 1:
                return None
            return mem.frames.alloc(0)

        def pool_free(pfn: int) -> None:
            mem.frames.put(pfn)

        if pages:
            memory = PoolMemory(pool_alloc, pool_free) if device == "zram" else None
            mem.swap.devices.append(
                SwapDevice(0, pages + 1, device, zram_comp if device == "zram" else "lz4", memory)
            )
        if zswap is not None:
            mem.swap.zswap = Zswap(
                zswap,
                mem.frames.total_pages,
                PoolMemory(pool_alloc, pool_free),
                mem.swap.writeback,
                max_pool_percent=pool_percent,
            )

    # --- frames, as kernel debugging interfaces show them --------------------------------
    @property
    def zero_pfn(self) -> int:
        """The frame of the shared zero page (the kernel's empty_zero_page, my_zero_pfn())."""
        return self.memory.frames.zero_pfn

    def page_refcount(self, pfn: int) -> int:
        """folio_ref_count() of the folio holding ``pfn``: page-table mappings, the page
        cache, the swap cache and other holders (1 for the zero page, which is not counted).
        Raises vmsim.phys.frames.BadPage if the frame is not allocated."""
        return self.memory.frames.refcount(pfn)

    def page_mapcount(self, pfn: int) -> int:
        """folio_mapcount() of the folio holding ``pfn``: how many page-table entries map it
        (/proc/kpagecount; 0 for the zero page)."""
        return self.memory.frames.mapcount(pfn)

    def kpageflags(self, pfn: int) -> int:
        """The 64-bit word /proc/kpageflags gives for frame ``pfn`` (``vmsim.procfs.kpageflags``:
        KPF_THP, KPF_COMPOUND_HEAD/TAIL, KPF_ZERO_PAGE, KPF_ANON, KPF_LRU, KPF_ACTIVE,
        KPF_REFERENCED, KPF_DIRTY, KPF_MMAP, ...)."""
        return kpageflags(self.memory, pfn)

    def thp_size_stats(self, size: str | int) -> dict[str, int]:
        """/sys/kernel/mm/transparent_hugepage/hugepages-<size>kB/stats: each file's value
        by its name, for ``size`` "16kB" .. "2048kB" (or the number of kB); see
        ``vmsim.mm.mthp``."""
        return mthp.size_stats(self.memory, size)

    def read_frame(self, pfn: int, offset: int = 0, n: int = PAGE_SIZE) -> bytes:
        """``n`` bytes at ``offset`` in the 4 KiB frame ``pfn``, read physically (like
        /dev/mem or a crash dump): no page tables, no fault."""
        return self.memory.frames.read(pfn, offset, n)

    @property
    def alive_processes(self) -> list[Process]:
        return [p for p in self.processes if p.alive]

    def oom_score(self, p: Process) -> int:
        """oom_badness() of the process (``vmsim.mm.oom_kill``)."""
        return oom_badness(self.memory, p)

    def _oom_kill(self) -> bool:
        """out_of_memory() over the live processes (``vmsim.mm.oom_kill``)."""
        return out_of_memory(self.memory, self.alive_processes)

    def tick(self, n: int = 1) -> None:
        """Let the memory daemons run ``n`` times: the flusher writes dirty file pages back,
        kswapd reclaims to the high watermark when it was woken (or free memory is below
        low), ksmd scans pages_to_scan pages, kcompactd compacts (``vmsim.mm.compaction``),
        khugepaged scans its pages_to_scan pages' worth of THP-eligible ranges and collapses
        those that qualify."""
        if n < 0:
            raise ValueError("tick(n) needs n >= 0")
        mem = self.memory
        for _ in range(n):
            self.ticks += 1
            page_writeback.flush(mem)  # the flusher threads write dirty file pages back
            if mem.node.kswapd_wanted or mem.frames.free_pages <= mem.node.wmark_low:
                vmscan.kswapd(mem)
            self.ksm.scan()
            compaction.kcompactd(mem)  # woken for an order, or proactive
            khugepaged_scan(mem)  # khugepaged: collapse eligible ranges into THPs

    def zswap_stats(self) -> dict[str, int]:
        """/sys/kernel/debug/zswap (all 0 without zswap)."""
        z = self.memory.swap.zswap
        if z is None:
            return dict.fromkeys(ZSWAP_STAT_NAMES, 0)
        return z.stats()

    def ksm_stats(self) -> dict[str, int]:
        """Every file of /sys/kernel/mm/ksm, as a number (``vmsim.mm.ksm.Ksm.stats``)."""
        return self.ksm.stats()

    # The model has one node with one zone (vmsim.mm.mmzone). It is shown as "Normal": on
    # x86-64 user pages and page tables come from ZONE_NORMAL first (the zonelist order
    # Normal, DMA32, DMA), and on the reference machine (24 GiB) it holds 23 of the 24 GiB;
    # the small DMA (16 MiB) and DMA32 (< 4 GiB) zones are not modelled.
    ZONE_NAME: ClassVar[str] = "Normal"

    def buddyinfo(self) -> str:
        """/proc/buddyinfo: the free blocks of each order, 0..MAX_PAGE_ORDER (10), of the
        model's one zone (``ZONE_NAME``), in the kernel's format."""
        return self.memory.frames.buddyinfo(self.ZONE_NAME)

    def pagetypeinfo(self) -> str:
        """/proc/pagetypeinfo: free blocks by order and migrate type, pageblocks by type."""
        return self.memory.frames.pagetypeinfo(self.ZONE_NAME)

    def ksm_set(self, name: str, value: int | str) -> None:
        """Write /sys/kernel/mm/ksm/<name> (the kernel's checks and errnos)."""
        self.ksm.set_knob(name, value)

    def vmstat(self) -> str:
        """/proc/vmstat, for the counters the model keeps (``vmsim.procfs.vmstat_text``)."""
        return vmstat_text(self.memory)


__all__ = [
    "DEFAULT_MMAP_BASE",
    "DEFAULT_START_BRK",
    "MAX_RAM_BYTES",
    "MAX_SWAP_BYTES",
    "MIN_RAM_BYTES",
    "MIN_SWAP_BYTES",
    "Machine",
    "parse_size",
]
