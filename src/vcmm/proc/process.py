"""A simulated user process: its own address space, file descriptors and mappings.

Each process owns a VMSAv8-64 TTBR0 table under its own ASID on the CPU
(``cpu.create_address_space``), so its mappings are real page-table entries the MMU
walks, TLB entries are tagged with its ASID, and a bad access is the CPU's own
:class:`~vcmm.errors.SegmentationFault` (outside every mapping: translation fault;
against the protection: permission fault).  The address space is also a VCM of the
VCMM core (``vcm_create_from_prebuilt(asid)``), so every mapping is a reservation and
an edge of the mapping graph like a device's (:mod:`vcmm.proc.usermap`).

File descriptors index open file descriptions (:class:`~vcmm.proc.file.OpenFile`);
``dup`` and passing a descriptor to another process share the description, as
``SCM_RIGHTS`` does.  ``mmap`` of a file hands a new :class:`~vcmm.proc.vma.Vma` to
the file's ``mmap`` hook; anonymous mappings take zeroed pages from a memory target.

Rules enforced (each a typed error that changes nothing):

- a descriptor must be open (``BadFileDescriptorError``, EBADF);
- a file mapping needs a readable descriptor, and a writable shared mapping a
  writable one (``PermissionDeniedError``, EACCES); private writable file mappings
  would need copy-on-write, which is not modelled, and are refused;
- ``MAP_FIXED`` never replaces an existing mapping (it behaves as
  ``MAP_FIXED_NOREPLACE``); offsets and fixed addresses are page aligned.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from vcmm.attrs import MemType
from vcmm.checks import check_int, is_int
from vcmm.core.flags import Attr
from vcmm.core.interfaces import VcmmApi
from vcmm.core.objects import Association, PhysMem, Reservation, Vcm
from vcmm.errors import (
    AlignmentError,
    InvalidArgumentError,
    OutOfAddressSpaceError,
    StateError,
    VcmmError,
)
from vcmm.hw.memory import Bytes
from vcmm.proc.errors import BadFileDescriptorError, PermissionDeniedError
from vcmm.proc.file import File, OpenFile
from vcmm.proc.flags import (
    MapFlags,
    OpenMode,
    Prot,
    check_map_flags,
    check_mode,
    check_prot,
)
from vcmm.proc.usermap import Source, user_attr
from vcmm.proc.vma import Vma
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_4K, align_up, format_size
from vcmm.undo import Transaction

if TYPE_CHECKING:
    from vcmm.proc.table import ProcessTable

#: Where mmap places mappings (below the 48-bit user limit, above the low 256 MiB).
MMAP_WINDOW = AddressRange(0x1000_0000, (1 << 47) - 0x1000_0000)
#: Most descriptors one process may hold (RLIMIT_NOFILE).
MAX_FDS = 1024


class AnonymousMemory:
    """The pages behind an anonymous mapping, freed when the last VMA using them goes."""

    def __init__(self, system: VcmmApi, physmem: PhysMem) -> None:
        self.system = system
        self.physmem = physmem
        self.users = 0

    def open(self, vma: Vma) -> None:
        self.users += 1

    def close(self, vma: Vma) -> None:
        self.users -= 1
        if self.users == 0:
            self.system.vcm_phys_free(self.physmem)


class Process:
    """One user process.  Create it with :meth:`ProcessTable.spawn`."""

    def __init__(
        self, table: ProcessTable, pid: int, asid: int, name: str, vcm: Vcm, assoc: Association
    ) -> None:
        self.table = table
        self.system = table.system
        self.pid = pid
        self.asid = asid
        self.name = name
        #: The process's address space as a VCM of the core, and its association with
        #: the CPU (active while the process lives).
        self.vcm = vcm
        self.assoc = assoc
        self.space = vcm.space
        self.fds: dict[int, OpenFile] = {}
        self._vmas: list[Vma] = []
        self.alive = True

    def __repr__(self) -> str:
        state = "alive" if self.alive else "exited"
        return f"<Process {self.name}[{self.pid}] asid={self.asid} {state}>"

    def _live(self, call: str) -> None:
        if not self.alive:
            raise StateError(f"{call}: process {self.name}[{self.pid}] has exited")

    # -- file descriptors -------------------------------------------------------------------

    def _lowest_free_fd(self, call: str) -> int:
        for fd in range(MAX_FDS):
            if fd not in self.fds:
                return fd
        raise VcmmError(f"{call}: {self.name}[{self.pid}] already holds {MAX_FDS} descriptors")

    def file(self, fd: int) -> OpenFile:
        """The open file description behind ``fd`` (EBADF if none)."""
        if not is_int(fd) or fd not in self.fds:
            raise BadFileDescriptorError(
                f"{self.name}[{self.pid}]: {fd!r} is not an open file descriptor "
                f"(open: {sorted(self.fds)})"
            )
        return self.fds[fd]

    def open(self, file: File | str, mode: OpenMode = OpenMode.RDWR) -> int:
        """Open a :class:`File` (or a path registered in the process table); returns
        the lowest free descriptor."""
        call = "open"
        self._live(call)
        mode = check_mode(call, mode)
        target = self.table.lookup(file) if isinstance(file, str) else file
        if not isinstance(target, File):
            raise InvalidArgumentError(f"{call}: {file!r} is not a File or a registered path")
        fd = self._lowest_free_fd(call)
        self.fds[fd] = OpenFile.open(target, mode)
        return fd

    def close(self, fd: int) -> None:
        """Drop the descriptor; the description lives on while mappings or other
        descriptors hold it."""
        self._live("close")
        description = self.file(fd)
        del self.fds[fd]
        description.put()

    def dup(self, fd: int) -> int:
        """A second descriptor for the same description (same mode, same file)."""
        self._live("dup")
        description = self.file(fd)
        new = self._lowest_free_fd("dup")
        self.fds[new] = description.get()
        return new

    def dup2(self, fd: int, newfd: int) -> int:
        """Make ``newfd`` refer to ``fd``'s description, closing what it held."""
        self._live("dup2")
        description = self.file(fd)
        newfd = check_int("dup2", "newfd", newfd)
        if newfd >= MAX_FDS:
            raise InvalidArgumentError(f"dup2: newfd {newfd} is not below {MAX_FDS}")
        if newfd == fd:
            return fd
        old = self.fds.get(newfd)
        self.fds[newfd] = description.get()
        if old is not None:
            old.put()
        return newfd

    def send_fd(self, fd: int, to: Process) -> int:
        """Pass ``fd`` to process ``to`` (``SCM_RIGHTS``); returns its number there."""
        self._live("send_fd")
        if not isinstance(to, Process):
            raise InvalidArgumentError(f"send_fd: {to!r} is not a Process")
        to._live("send_fd")
        description = self.file(fd)
        new = to._lowest_free_fd("send_fd")
        to.fds[new] = description.get()
        return new

    # -- mappings ----------------------------------------------------------------------------

    @property
    def vmas(self) -> list[Vma]:
        return list(self._vmas)

    def vma_at(self, va: int) -> Vma | None:
        """The VMA containing ``va``, if any."""
        i = bisect.bisect_right([v.start for v in self._vmas], va) - 1
        if i >= 0 and va < self._vmas[i].end:
            return self._vmas[i]
        return None

    def mmap(
        self,
        length: int,
        prot: int = Prot.READ | Prot.WRITE,
        flags: int = MapFlags.SHARED,
        fd: int | None = None,
        offset: int = 0,
        *,
        addr: int | None = None,
    ) -> int:
        """Map ``length`` bytes (rounded up to pages); returns the address.

        With ``MAP_ANONYMOUS`` (and no ``fd``) the pages are zeroed kernel RAM;
        otherwise the file's ``mmap`` hook fills the mapping, starting ``offset`` bytes
        (a page multiple) into the file.  ``addr`` is a hint, or the exact place with
        ``MAP_FIXED``.
        """
        call = "mmap"
        self._live(call)
        size = check_int(call, "length", length, minimum=1)
        size = align_up(size, SZ_4K)
        prot_ = check_prot(call, prot)
        flags_ = check_map_flags(call, flags)
        off = check_int(call, "offset", offset)
        if off % SZ_4K:
            raise AlignmentError(f"{call}: offset {off:#x} is not a multiple of the 4 KiB page")
        description: OpenFile | None = None
        if flags_ & MapFlags.ANONYMOUS:
            if fd is not None:
                raise InvalidArgumentError(f"{call}: MAP_ANONYMOUS takes no fd (got {fd!r})")
            if off:
                raise InvalidArgumentError(f"{call}: MAP_ANONYMOUS takes offset 0, got {off:#x}")
        else:
            if fd is None:
                raise InvalidArgumentError(f"{call}: a file mapping needs an fd (or MAP_ANONYMOUS)")
            description = self.file(fd)
            self._check_file_access(call, description, prot_, flags_)
        attr = user_attr(call, prot_, MemType.NORMAL_WB_WA)
        res = self._reserve(call, size, attr, addr, bool(flags_ & MapFlags.FIXED))
        assert res.addr is not None
        vma = Vma(self, res.addr, size, prot_, flags_, off // SZ_4K, description)
        vma.res = res
        with Transaction(call, boundary=True) as txn:
            txn.on_undo(self._unreserve_unpopulated, vma)
            if description is None:
                self._populate_anonymous(vma)
            else:
                vma.file = description.get()
                txn.on_undo(self._drop_file, vma, description)
                description.file.mmap(vma)
                if not vma.populated:
                    raise StateError(
                        f"{call}: {description.file.name}'s mmap hook returned without "
                        "populating the VMA (it must call vma.remap)"
                    )
        bisect.insort(self._vmas, vma, key=lambda v: v.start)
        return vma.start

    def _check_file_access(
        self, call: str, description: OpenFile, prot: Prot, flags: MapFlags
    ) -> None:
        name = description.file.name
        if not description.mode.readable:
            raise PermissionDeniedError(
                f"{call}: {name} is open {description.mode.name}; mapping a file needs a "
                "readable descriptor (EACCES)"
            )
        if prot & Prot.WRITE and flags & MapFlags.SHARED and not description.mode.writable:
            raise PermissionDeniedError(
                f"{call}: PROT_WRITE with MAP_SHARED through {name} opened "
                f"{description.mode.name} (EACCES); open it O_RDWR"
            )
        if prot & Prot.WRITE and flags & MapFlags.PRIVATE:
            raise InvalidArgumentError(
                f"{call}: a writable MAP_PRIVATE mapping of {name} needs copy-on-write, "
                "which this model does not have; use MAP_SHARED or PROT_READ"
            )

    def _reserve(
        self, call: str, size: int, attr: Attr, addr: int | None, fixed: bool
    ) -> Reservation:
        """A reservation of the process's VCM: at ``addr`` if given and free, else
        where the VCM's allocator places it (lowest free address)."""
        system = self.system
        if addr is None:
            if fixed:
                raise InvalidArgumentError(f"{call}: MAP_FIXED needs an addr")
            try:
                return system.vcm_reserve(self.vcm, size, attr, align=SZ_4K)
            except OutOfAddressSpaceError as exc:
                raise OutOfAddressSpaceError(
                    f"{call}: no room for {format_size(size)}: {exc}"
                ) from None
        where = check_int(call, "addr", addr)
        if where % SZ_4K:
            raise AlignmentError(f"{call}: addr {where:#x} is not page aligned")
        wanted = AddressRange(where, size)
        if wanted in MMAP_WINDOW:
            try:
                return system.vcm_reserve(self.vcm, size, attr, addr=where)
            except StateError:
                if fixed:
                    raise StateError(
                        f"{call}: MAP_FIXED at {wanted} overlaps an existing mapping "
                        "(this model never replaces mappings: MAP_FIXED_NOREPLACE)"
                    ) from None
        elif fixed:
            raise InvalidArgumentError(f"{call}: MAP_FIXED {wanted} is outside {MMAP_WINDOW}")
        return self._reserve(call, size, attr, None, False)

    def populate(self, vma: Vma, source: Source, offset: int, attr: Attr) -> None:
        """Back ``vma`` with a view of ``source`` from ``offset`` (the file's memory, the
        driver's pages); all or nothing.  Called by :meth:`Vma.remap`."""
        system = self.system
        res = vma.res
        assert res is not None
        with Transaction("remap") as txn:
            view = system.vcm_phys_view(source.physmem, offset, vma.length)
            txn.on_undo(system.vcm_phys_free, view)
            if res.attr != attr:
                # Placed with the default memory type before the file said which one.
                system.vcm_unreserve(res)
                txn.on_undo(self._reserve_at, vma, res.attr)
                self._reserve_at(vma, attr)
                txn.on_undo(system.vcm_unreserve, self._reservation(vma))
            if vma.accessible:
                system.vcm_back(self._reservation(vma), view)
        source.get()
        vma.source, vma.view, vma.source_offset = source, view, offset

    def _reserve_at(self, vma: Vma, attr: Attr) -> None:
        """Reserve ``vma``'s range again with ``attr`` (the VMA's reservation changes)."""
        vma.res = self.system.vcm_reserve(self.vcm, vma.length, attr, addr=vma.start)

    def _reservation(self, vma: Vma) -> Reservation:
        """``vma``'s reservation; every VMA of this process holds one until it is gone."""
        res = vma.res
        assert res is not None, f"{vma!r} has no reservation"
        return res

    def _unreserve_unpopulated(self, vma: Vma) -> None:
        """Undo step of mmap: a VMA that was never populated still holds only its
        reservation (a populated one was released with its file)."""
        if not vma.populated:
            self.system.vcm_unreserve(self._reservation(vma))

    def _drop_file(self, vma: Vma, description: OpenFile) -> None:
        """Undo step of a file mmap: release what the file's hook populated (which
        drops the file reference too), or just the reference."""
        if vma.populated:
            self._release(vma)
        else:
            description.put()
        vma.file = None

    def _populate_anonymous(self, vma: Vma) -> None:
        system = self.system
        with Transaction("mmap anonymous", boundary=True) as txn:
            physmem = system.vcm_phys_alloc(self.table.anon_target, vma.length)
            txn.on_undo(system.vcm_phys_free, physmem)
            for chunk in physmem.chunk_ranges:
                system.cpu.cache.invalidate(chunk.start, chunk.size)
                system.memory.fill(chunk.start, chunk.size, 0)
            target = system.target(self.table.anon_target)
            memtype = MemType.NORMAL_WB_WA if target.linear_mapped else MemType.NORMAL_NC
            vma.remap(physmem, memtype, AnonymousMemory(system, physmem))

    def munmap(self, addr: int, length: int) -> None:
        """Remove mappings in ``[addr, addr+length)`` (rounded up to pages); parts of
        the range that are not mapped are ignored, a VMA cut in the middle splits.

        Each mapping is removed all or nothing (page-table memory can run out when a
        block of another alias must be split to rewrite its shareable bit); a munmap
        over several mappings that fails part way leaves those before it removed.
        """
        call = "munmap"
        self._live(call)
        where = check_int(call, "addr", addr)
        size = check_int(call, "length", length, minimum=1)
        if where % SZ_4K:
            raise AlignmentError(f"{call}: addr {where:#x} is not page aligned")
        cut = AddressRange(where, align_up(size, SZ_4K))
        for vma in [v for v in self._vmas if v.range.overlaps(cut)]:
            inside = vma.range & cut
            assert inside is not None
            if inside == vma.range:
                self._release(vma)
                self._vmas.remove(vma)
            else:
                self._split(vma, inside)

    def _release(self, vma: Vma) -> None:
        """Unmap a whole VMA and drop what it held (view, source, ops, file, range).
        The unbacking is the only step that can fail, and it goes first."""
        system = self.system
        res = vma.res
        assert res is not None
        if res.physmem is not None:
            system.vcm_unback(res)
        system.vcm_unreserve(res)
        vma.res = None
        if vma.view is not None:
            system.vcm_phys_free(vma.view)
            vma.view = None
        if vma.source is not None:
            vma.source.put()
            vma.source = None
        if vma.ops is not None:
            vma.ops.close(vma)
        if vma.file is not None:
            vma.file.put()

    def _split(self, vma: Vma, cut: AddressRange) -> None:
        """Unmap ``cut`` (strictly inside ``vma`` or at one end of it): the reservation
        is split around it (no page-table change for what stays) and only the cut part
        is unbacked; what stays becomes one or two VMAs."""
        system = self.system
        res, source = vma.res, vma.source
        assert res is not None and source is not None and vma.view is not None
        s, e, a, b = vma.start, vma.end, cut.start, cut.end
        backed = res.physmem is not None
        mid, right, mid_view, right_view = res, None, None, None
        with Transaction("munmap", boundary=True) as txn:
            if a > s:
                mid_view = system.vcm_phys_view(source.physmem, vma.source_offset + (a - s), e - a)
                txn.on_undo(system.vcm_phys_free, mid_view)
                mid = system.vcm_split(res, a - s, mid_view if backed else None)
                txn.on_undo(system.vcm_merge, res, mid)
            if b < e:
                right_view = system.vcm_phys_view(
                    source.physmem, vma.source_offset + (b - s), e - b
                )
                txn.on_undo(system.vcm_phys_free, right_view)
                right = system.vcm_split(mid, b - a, right_view if backed else None)
                txn.on_undo(system.vcm_merge, mid, right)
            if backed:
                system.vcm_unback(mid)
        system.vcm_unreserve(mid)
        if mid_view is not None:
            system.vcm_phys_free(mid_view)  # the view the cut part was backed with
        else:
            system.vcm_phys_free(vma.view)  # the cut part was the front: its view goes
        parts: list[tuple[AddressRange, Reservation, PhysMem | None, int]] = []
        if a > s:
            parts.append((AddressRange(s, a - s), res, vma.view, vma.source_offset))
        if right is not None:
            parts.append((AddressRange(b, e - b), right, right_view, vma.source_offset + (b - s)))
        pieces = [vma.pieces_in(p[0]) for p in parts]
        pgoff = vma.pgoff
        news: list[Vma] = []
        for i, ((part, part_res, part_view, part_off), part_pieces) in enumerate(
            zip(parts, pieces, strict=True)
        ):
            target = vma
            if i > 0:
                target = Vma(self, part.start, part.size, vma.prot, vma.flags, 0, vma.file)
                news.append(target)
            target.pgoff = pgoff + (part.start - s) // SZ_4K
            target.start, target.length = part.start, part.size
            target.res, target.view, target.source = part_res, part_view, source
            target.source_offset = part_off
            target.pieces = part_pieces
            target.memtype = vma.memtype
            target.ops = vma.ops
            target.populated = True
        for new in news:
            source.get()
            if new.file is not None:
                new.file.get()
            if new.ops is not None:
                new.ops.open(new)
            bisect.insort(self._vmas, new, key=lambda v: v.start)

    # -- memory access -----------------------------------------------------------------------

    def read(self, va: int, n: int) -> bytes:
        """Load ``n`` bytes at ``va`` as this process (user mode, its ASID)."""
        self._live("read")
        return bytes(self.system.cpu.read(va, n, asid=self.asid, user=True))

    def write(self, va: int, data: Bytes) -> None:
        """Store ``data`` at ``va`` as this process (user mode, its ASID)."""
        self._live("write")
        self.system.cpu.write(va, data, asid=self.asid, user=True)

    # -- lifetime ----------------------------------------------------------------------------

    def exit(self) -> None:
        """Unmap everything, close every descriptor and free the address space (its
        VCM, then the CPU's table)."""
        self._live("exit")
        for vma in list(self._vmas):
            self._release(vma)
            self._vmas.remove(vma)
        for fd in sorted(self.fds):
            self.fds.pop(fd).put()
        system = self.system
        system.vcm_deactivate(self.assoc)
        system.vcm_deassoc(self.assoc)
        system.vcm_free(self.vcm)
        system.cpu.destroy_address_space(self.asid)
        self.alive = False
        self.table.forget(self)
