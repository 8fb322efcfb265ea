"""The CPU as a bus master: an MMU (VMSAv8-64 tables, ASID-tagged TLB) and a data cache.

The CPU matters to the VCMM because it is the other party of every shared buffer: the
kernel reaches RAM through its *linear map*, which is cacheable, and through vmalloc-
style mappings the VMM VCM creates.  Its data cache holds real bytes, so a device that
does not snoop it sees stale memory, and a CPU with a cacheable alias sees stale lines
after a device write.  With speculative prefetch switched on the CPU fills lines of
anything it maps cacheable at random, and a Normal non-cacheable read that finds such a
line returns the line's bytes (``cpu.cache.uncached_lookup``, on by default): that is
why ARMv6+ outlaws uncached aliases of cacheable memory (Russell King, seed 000
L2075-2094), and why the mapping graph refuses them.

Address space layout (arm64 with 48-bit VAs):

- kernel VAs ``0xffff_0000_0000_0000`` upward go through the TTBR1 table; the linear map
  starts at :data:`PAGE_OFFSET` (``__va(pa) = pa - PHYS_OFFSET + PAGE_OFFSET``) and the
  vmalloc area is :data:`VMALLOC_AREA`.  The table itself is indexed by VA[47:0]: the
  sign-extension bits are stripped before it is walked, as the hardware does.
- user VAs below 2**48 go through a TTBR0 table per ASID
  (:meth:`Cpu.create_address_space`).

Decisions:

- TLB entries are tagged by ASID; kernel mappings are global (nG=0), so they hit for
  every ASID.  Accesses made while no user address space is current use the reserved
  :data:`KERNEL_ASID` (0).  User mappings entered through :meth:`Cpu.map_user` are
  always non-global, whatever ``attrs.global_`` says: a global user entry would leak
  into other processes.
- Write-combine is Normal non-cacheable (``MemType.NORMAL_NC``), as Linux on ARM maps
  ``pgprot_writecombine``; :data:`KERNEL_WC` and :data:`KERNEL_NC` are therefore equal.
- A faulting user access raises :class:`SegmentationFault`; a faulting kernel access
  raises :class:`KernelFault` (what Linux reports as an oops).  Both name the address,
  the access and the fault kind.  Every page of an access is translated before any
  byte moves, so a faulting access reads or writes nothing.
- Cache maintenance by VA translates with the kernel's privilege (read permission is
  enough, as for DC CVAC) and operates on the physical lines whatever the memory type
  of the mapping, as the architecture specifies.
- Loads and stores are reported to access observers (:mod:`vcmm.hw.observe`) after
  translation, before any byte moves; an observer may refuse them.  Every public call
  that moves data, maintains the cache or TLB or edits a table runs under the machine
  lock (:mod:`vcmm.hw.lock`): the system's, or a private one for a standalone CPU.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import replace

from vcmm.attrs import Access, FaultKind, MemType, PageAttrs
from vcmm.checks import check_int, is_int
from vcmm.errors import (
    AlignmentError,
    FaultError,
    InvalidArgumentError,
    KernelFault,
    NotFoundError,
    NotMappedError,
    SegmentationFault,
)
from vcmm.hw.cache import CacheConfig, DataCache
from vcmm.hw.lock import MachineLock, check_lock, machine_locked
from vcmm.hw.master import TranslationPath
from vcmm.hw.memory import Bytes, PhysicalMemory, as_u8
from vcmm.hw.mmuwalk import MmuWalker
from vcmm.hw.observe import AccessEvent, Observable, Observer
from vcmm.hw.pgtable import VMSAV8_4K, PageTable
from vcmm.hw.prefetch import SpeculativePrefetcher
from vcmm.hw.tablemem import TableMemory
from vcmm.hw.tlb import TLB, TLBConfig
from vcmm.hw.tlbgather import TlbGather
from vcmm.hw.translate import Translation, TranslationFault, Translator
from vcmm.hw.walk import Walk
from vcmm.ranges import AddressRange, coalesce
from vcmm.sizes import SZ_4K

#: Width of a virtual address (VA_BITS=48).
VA_BITS = 48
_VA_MASK = (1 << VA_BITS) - 1
#: First kernel virtual address: VA[63:48] all ones selects TTBR1.
KERNEL_VA_BASE = 0xFFFF_0000_0000_0000
#: Start of the linear map of RAM (arm64 PAGE_OFFSET for 48-bit VAs).
PAGE_OFFSET = KERNEL_VA_BASE
#: The vmalloc area: where the VMM VCM may place kernel mappings.
VMALLOC_AREA = AddressRange(0xFFFF_8000_0000_0000, 0x0000_7F00_0000_0000)
#: User VAs are below this.
USER_VA_LIMIT = 1 << VA_BITS
#: ASID of accesses made with no user address space current (reserved, never allocated).
KERNEL_ASID = 0
#: ASIDs are 16 bits wide.
MAX_ASID = 0xFFFF

#: The linear map: kernel-only, read/write, never executable, write-back, shareable,
#: non-secure.  The kernel is Non-secure world software: everything it maps is NS=1,
#: as its VCM and user mappings of the same pages are (a Secure-state walk honours NS,
#: a Non-secure one ignores it, so NS=1 is right in both and the aliases agree).
LINEAR_MAP_ATTRS = PageAttrs(
    read=True,
    write=True,
    exec=False,
    user=False,
    memtype=MemType.NORMAL_WB_WA,
    shareable=True,
    global_=True,
    ns=True,
)
#: Cacheable kernel mapping (vmalloc of RAM).
KERNEL_WB = LINEAR_MAP_ATTRS
#: Non-cacheable kernel mapping (a DMA alias for a non-coherent device).
KERNEL_NC = LINEAR_MAP_ATTRS.with_(memtype=MemType.NORMAL_NC)
#: Write-combine kernel mapping: Normal non-cacheable, as Linux on ARM does it.
KERNEL_WC = KERNEL_NC


def is_kernel_va(va: int) -> bool:
    """Whether ``va`` is a canonical kernel address (VA[63:48] all ones)."""
    return va >> VA_BITS == 0xFFFF


def is_user_va(va: int) -> bool:
    """Whether ``va`` is a canonical user address (VA[63:48] all zeros)."""
    return 0 <= va < USER_VA_LIMIT


class Cpu(Observable):
    """The CPU: MMU, TLB, data cache and (optionally) a speculative prefetcher.

    ``linear_map`` lists ``(kernel_va, pa, size)`` windows of the linear map; by
    default every RAM region is mapped at ``PAGE_OFFSET + (pa - PHYS_OFFSET)`` where
    PHYS_OFFSET is the lowest RAM address.  The linear map uses 1 GiB and 2 MiB blocks
    wherever alignment allows.
    """

    path: TranslationPath = TranslationPath.CPU

    def __init__(
        self,
        memory: PhysicalMemory,
        table_memory: TableMemory,
        *,
        cache: CacheConfig,
        tlb: TLBConfig,
        linear_map: Sequence[tuple[int, int, int]] | None = None,
        prefetch_seed: int | None = None,
        prefetch_lines_per_tick: int = 4,
        name: str = "cpu",
        lock: MachineLock | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"Cpu name {name!r} must be a non-empty string")
        if not isinstance(memory, PhysicalMemory):
            raise InvalidArgumentError(f"Cpu needs a PhysicalMemory, got {memory!r}")
        if not isinstance(table_memory, TableMemory) or table_memory.memory is not memory:
            raise InvalidArgumentError(
                "Cpu needs a TableMemory carved from the same PhysicalMemory"
            )
        if not isinstance(cache, CacheConfig):
            raise InvalidArgumentError(f"Cpu cache {cache!r} is not a CacheConfig")
        if not isinstance(tlb, TLBConfig):
            raise InvalidArgumentError(f"Cpu tlb {tlb!r} is not a TLBConfig")
        windows = self._check_linear_map(memory, linear_map)
        #: The machine lock the CPU's public calls hold (the system's, or a private one).
        self.lock = check_lock(f"Cpu {name!r}", lock)
        self._observers: list[Observer] = []
        #: The bus master's name, as fault reports and the mapping graph show it.
        self.name = name
        self.memory = memory
        self.table_memory = table_memory
        self.cache = DataCache(memory, cache)
        self.tlb = TLB(tlb)
        #: The kernel's TTBR1 table, indexed by VA[47:0].  The CPU's tables give back
        #: the tables an unmap empties (keeping them is io-pgtable's rule, for IOMMUs).
        self.kernel_table = PageTable(VMSAV8_4K, memory, table_memory, keep_tables=False)
        try:
            for va, pa, size in windows:
                # entries=False: the leaves are not read here (a window of RAM that is
                # not 2M-aligned is thousands of 4K pages, one object each otherwise)
                self.kernel_table.map(va & _VA_MASK, pa, size, LINEAR_MAP_ATTRS, entries=False)
        except BaseException:
            self.kernel_table.destroy()
            raise
        self.linear_map: tuple[tuple[int, int, int], ...] = tuple(windows)
        self._spaces: dict[int, PageTable] = {}
        self._current: int | None = None
        self._translators: dict[tuple[Hashable, bool], Translator] = {}
        self._version = 0
        self._candidates_version = -1
        self._candidates: list[AddressRange] = []
        self.prefetcher: SpeculativePrefetcher | None = None
        if prefetch_seed is not None:
            self.prefetcher = SpeculativePrefetcher(
                self.cache,
                seed=prefetch_seed,
                lines_per_tick=prefetch_lines_per_tick,
                candidates=self.cacheable_ranges,
            )

    @staticmethod
    def _check_linear_map(
        memory: PhysicalMemory, linear_map: Sequence[tuple[int, int, int]] | None
    ) -> list[tuple[int, int, int]]:
        if linear_map is None:
            ram = [r for r in memory.regions if r.kind == "ram"]
            if not ram:
                return []
            phys_offset = min(r.base for r in ram)
            return [(PAGE_OFFSET + (r.base - phys_offset), r.base, r.size) for r in ram]
        if not isinstance(linear_map, list | tuple):
            raise InvalidArgumentError(
                f"linear_map must be a list of (kernel_va, pa, size), got {linear_map!r}"
            )
        windows: list[tuple[int, int, int]] = []
        for entry in linear_map:
            if not isinstance(entry, tuple | list) or len(entry) != 3:
                raise InvalidArgumentError(
                    f"linear map entry {entry!r} is not (kernel_va, pa, size)"
                )
            va, pa, size = (
                check_int("linear map", n, v)
                for n, v in zip(("kernel_va", "pa", "size"), entry, strict=True)
            )
            if not is_kernel_va(va) or not is_kernel_va(va + size - 1) or size == 0:
                raise InvalidArgumentError(
                    f"linear map window va={va:#x} size={size:#x} must be non-empty and lie "
                    "in the kernel half (VA[63:48] all ones)"
                )
            if va % SZ_4K or pa % SZ_4K or size % SZ_4K:
                raise AlignmentError(
                    f"linear map window va={va:#x} pa={pa:#x} size={size:#x} must be 4 KiB aligned"
                )
            if not memory.is_backed(pa, size):
                raise InvalidArgumentError(
                    f"linear map window pa={pa:#x} size={size:#x} is not all physical memory"
                )
            windows.append((va, pa, size))
        ordered = sorted(windows)
        for a, b in itertools.pairwise(ordered):
            if a[0] + a[2] > b[0]:
                raise InvalidArgumentError(f"linear map windows at {a[0]:#x} and {b[0]:#x} overlap")
        return ordered

    def __repr__(self) -> str:
        return (
            f"Cpu(asid={self._current}, spaces={sorted(self._spaces)}, "
            f"prefetch={'on' if self.prefetcher else 'off'})"
        )

    # -- linear map -----------------------------------------------------------------------

    def _linear(self, address: int, *, to_virt: bool) -> int | None:
        """``address`` across the linear map (physical to kernel VA or back), or None."""
        for va, pa, size in self.linear_map:
            start, dest = (pa, va) if to_virt else (va, pa)
            if start <= address < start + size:
                return dest + (address - start)
        return None

    def phys_to_virt(self, pa: int) -> int:
        """The linear-map kernel VA of ``pa`` (the kernel's ``__va``)."""
        va = self._linear(check_int("phys_to_virt", "pa", pa), to_virt=True)
        if va is None:
            raise NotMappedError(f"physical address {pa:#x} is not in the CPU's linear map")
        return va

    def virt_to_phys(self, va: int) -> int:
        """The physical address of linear-map address ``va`` (the kernel's ``__pa``)."""
        pa = self._linear(check_int("virt_to_phys", "va", va), to_virt=False)
        if pa is None:
            raise NotMappedError(f"{va:#x} is not a linear-map address")
        return pa

    def _in_linear_map(self, va: int, size: int) -> bool:
        return any(base < va + size and va < base + n for base, _, n in self.linear_map)

    # -- kernel mappings ------------------------------------------------------------------

    def _check_kernel_range(self, who: str, va: object, size: object) -> tuple[int, int]:
        v = check_int(who, "va", va)
        n = check_int(who, "size", size)
        if n == 0:
            raise InvalidArgumentError(f"{who}: size must be > 0")
        if not is_kernel_va(v) or not is_kernel_va(v + n - 1):
            raise InvalidArgumentError(
                f"{who}: va {v:#x} size {n:#x} is not inside the kernel half of the address "
                "space (VA[63:48] all ones)"
            )
        if v % SZ_4K or n % SZ_4K:
            raise AlignmentError(f"{who}: va {v:#x} and size {n:#x} must be 4 KiB aligned")
        return v, n

    @machine_locked
    def map_kernel(self, va: int, pa: int, size: int, attrs: PageAttrs) -> None:
        """Map ``[va, va+size)`` to ``pa`` in the kernel table (vmalloc-style).

        Uses the largest block sizes alignment allows.  Kernel mappings are not
        user-accessible.
        """
        v, n = self._check_kernel_range("map_kernel", va, size)
        p = check_int("map_kernel", "pa", pa)
        if p % SZ_4K:
            raise AlignmentError(f"map_kernel: pa {p:#x} must be 4 KiB aligned")
        if not isinstance(attrs, PageAttrs):
            raise InvalidArgumentError(f"map_kernel: attrs {attrs!r} is not a PageAttrs")
        if attrs.user:
            raise InvalidArgumentError(
                f"map_kernel: attrs {attrs.short()!r} grant user access; kernel mappings "
                "are kernel-only (use map_user)"
            )
        self.kernel_table.map(v & _VA_MASK, p, n, attrs, entries=False)
        self._changed(v, n, None)

    @machine_locked
    def unmap_kernel(self, va: int, size: int) -> None:
        """Remove a kernel mapping made by :meth:`map_kernel` and invalidate the TLB."""
        v, n = self._check_kernel_range("unmap_kernel", va, size)
        if self._in_linear_map(v, n):
            raise InvalidArgumentError(
                f"unmap_kernel: {AddressRange(v, n)} overlaps the linear map, which stays"
            )
        self.kernel_table.unmap(v & _VA_MASK, n)
        self._changed(v, n, None)

    # -- user address spaces ----------------------------------------------------------------

    def _check_asid(self, who: str, asid: object) -> int:
        if not is_int(asid) or not 1 <= asid <= MAX_ASID:
            raise InvalidArgumentError(
                f"{who}: ASID {asid!r} must be an integer in 1..{MAX_ASID} "
                f"({KERNEL_ASID} is reserved for the kernel)"
            )
        return asid

    @machine_locked
    def create_address_space(self, asid: int) -> PageTable:
        """A new empty TTBR0 table for user process ``asid``."""
        asid = self._check_asid("create_address_space", asid)
        if asid in self._spaces:
            raise InvalidArgumentError(f"create_address_space: ASID {asid} already exists")
        # munmap frees the page tables it empties (Linux's free_pgtables)
        table = PageTable(VMSAV8_4K, self.memory, self.table_memory, keep_tables=False)
        self._spaces[asid] = table
        return table

    def address_space(self, asid: int) -> PageTable:
        asid = self._check_asid("address_space", asid)
        table = self._spaces.get(asid)
        if table is None:
            raise NotFoundError(f"no user address space with ASID {asid}")
        return table

    @machine_locked
    def destroy_address_space(self, asid: int) -> None:
        """Free ``asid``'s table and drop its TLB entries."""
        table = self.address_space(asid)
        table.destroy()
        del self._spaces[asid]
        self.tlb.invalidate_tag(asid)
        if self._current == asid:
            self._current = None
        for key in [k for k in self._translators if k[0] == asid]:
            del self._translators[key]
        self._version += 1

    @machine_locked
    def switch_to(self, asid: int | None) -> None:
        """Make ``asid`` the current user address space (None: kernel only).

        No TLB maintenance is needed: entries are ASID-tagged.
        """
        if asid is not None:
            self.address_space(asid)
        self._current = asid

    @machine_locked
    def map_user(self, asid: int, va: int, pa: int, size: int, attrs: PageAttrs) -> None:
        """Map ``[va, va+size)`` in ``asid``'s table; the entries are made non-global."""
        table = self.address_space(asid)
        v = check_int("map_user", "va", va)
        p = check_int("map_user", "pa", pa)
        n = check_int("map_user", "size", size)
        if n == 0 or v + n > USER_VA_LIMIT:
            raise InvalidArgumentError(
                f"map_user: va {v:#x} size {n:#x} must be non-empty and below {USER_VA_LIMIT:#x}"
            )
        if v % SZ_4K or p % SZ_4K or n % SZ_4K:
            raise AlignmentError(
                f"map_user: va {v:#x}, pa {p:#x} and size {n:#x} must be 4 KiB aligned"
            )
        if not isinstance(attrs, PageAttrs):
            raise InvalidArgumentError(f"map_user: attrs {attrs!r} is not a PageAttrs")
        table.map(v, p, n, attrs.with_(global_=False), entries=False)
        self._changed(v, n, asid)

    @machine_locked
    def unmap_user(self, asid: int, va: int, size: int) -> None:
        table = self.address_space(asid)
        v = check_int("unmap_user", "va", va)
        n = check_int("unmap_user", "size", size)
        if n == 0 or v + n > USER_VA_LIMIT:
            raise InvalidArgumentError(
                f"unmap_user: va {v:#x} size {n:#x} must be non-empty and below {USER_VA_LIMIT:#x}"
            )
        table.unmap(v, n)
        self._changed(v, n, asid)

    @machine_locked
    def flush_tlb_range(self, va: int, size: int, *, asid: int | None = None) -> int:
        """Invalidate TLB entries over a range (all ASIDs unless ``asid`` is given).

        For upper layers that edit a table from :meth:`create_address_space` directly.
        """
        v = check_int("flush_tlb_range", "va", va)
        n = check_int("flush_tlb_range", "size", size)
        if n == 0 or v + n > 1 << 64:
            raise InvalidArgumentError(
                f"flush_tlb_range: va {v:#x} size {n:#x} must be non-empty within 64 bits"
            )
        if asid is not None:
            self._check_asid("flush_tlb_range", asid)
        self._version += 1
        return self.tlb.invalidate_range(v, n, asid)

    @machine_locked
    def flush_tlb_all(self) -> int:
        """Invalidate every entry of every ASID, kernel ones included (TLBIALL)."""
        self._version += 1
        return self.tlb.invalidate_all()

    @machine_locked
    def flush_tlb_asid(self, asid: int) -> int:
        """Invalidate the non-global entries of ``asid`` (TLBIASID); kernel ones stay."""
        self._check_asid("flush_tlb_asid", asid)
        self._version += 1
        return self.tlb.invalidate_tag(asid)

    def tlb_gather(self, asid: int | None = None) -> TlbGather:
        """The TLB maintenance of a batch of table changes (:mod:`vcmm.hw.tlbgather`):
        of the kernel's mappings (``asid`` None; they are global, so flushing them all
        is TLBIALL) or of user address space ``asid`` (TLBIASID)."""
        if asid is not None:
            self._check_asid("tlb_gather", asid)
        return TlbGather(_AddressSpaceTlb(self, asid))

    def _changed(self, va: int, size: int, asid: int | None) -> None:
        """The CPU's own mapping calls report their one changed range, and flush it."""
        gather = self.tlb_gather(asid)
        gather.add_range(va, size)
        gather.sync()

    # -- translation ----------------------------------------------------------------------

    def _walk(self, asid: int, va: int) -> Walk:
        """The MMU walker: TTBR1 for kernel VAs, ``asid``'s TTBR0 table for user VAs."""
        if is_kernel_va(va):
            walk = self.kernel_table.walk(va & _VA_MASK)
        elif is_user_va(va) and asid in self._spaces:
            walk = self._spaces[asid].walk(va)
        else:
            return Walk(va=va, reads=0, level=0, fault=FaultKind.TRANSLATION)
        # The table saw VA[47:0]; the walk reports the address that was asked for.
        return walk if walk.va == va else replace(walk, va=va)

    def _translator(self, asid: int, privileged: bool) -> Translator:
        key = (asid, privileged)
        tr = self._translators.get(key)
        if tr is None:
            walker = MmuWalker(
                functools.partial(self._walk, asid),
                self.kernel_table,
                functools.partial(self._spaces.get, asid),
            )
            tr = Translator(self.tlb, asid, walker, privileged=privileged, honour_global=True)
            self._translators[key] = tr
        return tr

    def _resolve_asid(self, asid: int | None) -> int:
        if asid is None:
            return self._current if self._current is not None else KERNEL_ASID
        self.address_space(asid)
        return asid

    def _fault(self, fault: TranslationFault, user: bool, asid: int, va: int) -> FaultError:
        mode = "user" if user else "kernel"
        message = (
            f"{mode} {fault.access.value} at {va:#x} (ASID {asid}): {fault.kind.value} "
            f"fault at level {fault.level}"
        )
        cls = SegmentationFault if user else KernelFault
        return cls(message, address=va, va=va, access=fault.access, kind=fault.kind, asid=asid)

    @machine_locked
    def translate(
        self,
        va: int,
        access: Access = Access.READ,
        *,
        asid: int | None = None,
        user: bool = False,
    ) -> Translation:
        """Translate one access through the TLB; raises the fault as an exception."""
        v = check_int("translate", "va", va)
        if v >= 1 << 64:
            raise InvalidArgumentError(f"translate: va {v:#x} is wider than 64 bits")
        if not isinstance(access, Access):
            raise InvalidArgumentError(f"translate: access {access!r} is not an Access")
        if not isinstance(user, bool):
            raise InvalidArgumentError(f"translate: user={user!r} is not a bool")
        tag = self._resolve_asid(asid)
        result = self._translator(tag, not user).translate(v, access)
        if isinstance(result, TranslationFault):
            raise self._fault(result, user, tag, v)
        return result

    def _runs(
        self, who: str, va: object, length: object, access: Access, asid: int | None, user: bool
    ) -> list[tuple[int, int, MemType]]:
        """Translate every page of an access first: ``(pa, n, memtype)`` runs, merged."""
        v = check_int(who, "va", va)
        n = check_int(who, "length", length)
        if v + n > 1 << 64:
            raise InvalidArgumentError(f"{who}: {v:#x} + {n:#x} runs past 2**64")
        if not isinstance(user, bool):
            raise InvalidArgumentError(f"{who}: user={user!r} is not a bool")
        tag = self._resolve_asid(asid)
        # every page in turn, as translate() would (on the compiled engine: walks ahead,
        # the TLB kernel over the pages)
        span = self._translator(tag, not user).translate_span(v, n, access, with_attrs=True)
        runs: list[tuple[int, int, MemType]] = []
        for pa, step, attrs in zip(span.pa.tolist(), span.length.tolist(), span.attrs, strict=True):
            memtype = attrs.memtype
            if runs and runs[-1][0] + runs[-1][1] == pa and runs[-1][2] is memtype:
                runs[-1] = (runs[-1][0], runs[-1][1] + step, memtype)
            else:
                runs.append((pa, step, memtype))
        if span.fault is not None:
            raise self._fault(span.fault, user, tag, span.fault.va)
        pos = v
        for pa, size, _ in runs:  # refuse an access that would hit a hole, before any change
            if not self.memory.is_backed(pa, size):
                cls = SegmentationFault if user else KernelFault
                raise cls(
                    f"{'user' if user else 'kernel'} {access.value} at {pos:#x} (ASID {tag}): "
                    f"physical {pa:#x} (+{size:#x}) is not memory: bus fault",
                    address=pos,
                    va=pos,
                    access=access,
                    kind=FaultKind.BUS,
                    asid=tag,
                )
            pos += size
        return runs

    def _tick(self) -> None:
        if self.prefetcher is not None:
            self.prefetcher.tick()

    # -- data access ----------------------------------------------------------------------

    def _access_runs(
        self, who: str, va: int, length: int, access: Access, asid: int | None, user: bool
    ) -> list[tuple[int, int, MemType]]:
        """:meth:`_runs` for a load or store, told to the observers (faults too)."""
        try:
            runs = self._runs(who, va, length, access, asid, user)
        except FaultError as exc:
            if self._observers:
                self._tell(access, va, length, (), exc.details.get("asid"), user, exc)
            raise
        if self._observers:
            physical = tuple((pa, n) for pa, n, _ in runs)
            self._tell(access, va, length, physical, self._resolve_asid(asid), user, None)
        return runs

    def _tell(
        self,
        access: Access,
        va: int,
        length: int,
        runs: tuple[tuple[int, int], ...],
        asid: int | None,
        user: bool,
        fault: FaultError | None,
    ) -> None:
        self._notify(
            AccessEvent(
                self.name, access, int(va), int(length), runs, asid=asid, user=user, fault=fault
            )
        )

    def read(self, va: int, length: int, *, asid: int | None = None, user: bool = False) -> bytes:
        """Load ``length`` bytes at ``va`` through the MMU and the data cache."""
        with self.lock:
            runs = self._access_runs("cpu.read", va, length, Access.READ, asid, user)
            parts = [self.cache.read(pa, n, memtype) for pa, n, memtype in runs]
            self._tick()
        return b"".join(parts)

    def write(self, va: int, data: Bytes, *, asid: int | None = None, user: bool = False) -> None:
        """Store ``data`` at ``va`` through the MMU and the data cache."""
        try:
            src = as_u8(data)
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(f"cpu.write: {exc}") from None
        with self.lock:
            runs = self._access_runs("cpu.write", va, int(src.size), Access.WRITE, asid, user)
            pos = 0
            for pa, n, memtype in runs:
                self.cache.write(pa, src[pos : pos + n], memtype)
                pos += n
            self._tick()

    # -- cache maintenance ------------------------------------------------------------------

    def _maintain_va(self, op: str, va: int, size: int, asid: int | None) -> int:
        runs = self._runs(op, va, size, Access.READ, asid, False)
        fn = {
            "clean_range": self.cache.clean,
            "invalidate_range": self.cache.invalidate,
            "flush_range": self.cache.clean_invalidate,
        }[op]
        return sum(fn(pa, n) for pa, n, _ in runs)

    @machine_locked
    def clean_range(self, va: int, size: int, *, asid: int | None = None) -> int:
        """Write back dirty lines of a VA range (DC CVAC); returns lines written."""
        return self._maintain_va("clean_range", va, size, asid)

    @machine_locked
    def invalidate_range(self, va: int, size: int, *, asid: int | None = None) -> int:
        """Drop the lines of a VA range, losing dirty data (DC IVAC); lines dropped."""
        return self._maintain_va("invalidate_range", va, size, asid)

    @machine_locked
    def flush_range(self, va: int, size: int, *, asid: int | None = None) -> int:
        """Clean then invalidate a VA range (DC CIVAC); lines dropped."""
        return self._maintain_va("flush_range", va, size, asid)

    @machine_locked
    def clean_pa(self, pa: int, size: int) -> int:
        """Clean by physical range (what a DMA API with only a PA would do)."""
        return self.cache.clean(pa, size)

    @machine_locked
    def flush_pa(self, pa: int, size: int) -> int:
        return self.cache.clean_invalidate(pa, size)

    # -- speculative prefetch --------------------------------------------------------------

    @machine_locked
    def cacheable_ranges(self) -> list[AddressRange]:
        """Physical ranges the CPU maps cacheable anywhere (the prefetcher's candidates).

        Recomputed only when a mapping changed.
        """
        if self._candidates_version != self._version:
            tables: Iterable[PageTable] = [self.kernel_table, *self._spaces.values()]
            found: list[tuple[int, int]] = []
            for table in tables:
                for entry in table.mappings():
                    if entry.attrs.memtype.cacheable:
                        found.append((entry.pa, entry.size))
            self._candidates = [
                AddressRange(pa, n) for pa, n in coalesce(found) if self.memory.is_backed(pa, n)
            ]
            self._candidates_version = self._version
        return list(self._candidates)


class _AddressSpaceTlb:
    """The CPU's TLB entries of one address space, as a gather's flush target."""

    __slots__ = ("_asid", "_cpu")

    def __init__(self, cpu: Cpu, asid: int | None) -> None:
        self._cpu = cpu
        self._asid = asid

    def __repr__(self) -> str:
        return "kernel TLB entries" if self._asid is None else f"TLB entries of ASID {self._asid}"

    def flush_range(self, va: int, size: int) -> int:
        return self._cpu.flush_tlb_range(va, size, asid=self._asid)

    def flush_all(self) -> int:
        if self._asid is None:
            return self._cpu.flush_tlb_all()
        return self._cpu.flush_tlb_asid(self._asid)
