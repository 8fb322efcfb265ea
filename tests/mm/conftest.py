"""A reference model of mainline Linux's IOVA allocator, for the ``"linux"`` policy tests.

Written from drivers/iommu/iova.c and the IOVA glue of drivers/iommu/dma-iommu.c
(Linux 6.7 and later), function by function, in the kernel's terms and *not* from
vcmm's implementation: ``struct iova`` objects in an ordered set with an anchor at
``ULONG_MAX``, cached nodes held as object references, 64-bit unsigned arithmetic,
``iova_find_limit`` returning the lowest node that reaches the limit (vcmm starts its
retry elsewhere; the kernel's rbtree may start at either), magazines as fixed arrays
with a ``size``, and the depot as a singly linked list.  One CPU is online.
"""

from __future__ import annotations

import pytest

ULONG_MAX = (1 << 64) - 1
IOVA_ANCHOR = ULONG_MAX
IOVA_RANGE_CACHE_MAX_SIZE = 6
IOVA_MAG_SIZE = 127


def fls_long(x: int) -> int:
    return x.bit_length()


def order_base_2(n: int) -> int:
    return 0 if n <= 1 else fls_long(n - 1)


def roundup_pow_of_two(n: int) -> int:
    return 1 << fls_long(n - 1)


class Iova:
    """``struct iova``."""

    def __init__(self, pfn_lo: int, pfn_hi: int) -> None:
        self.pfn_lo = pfn_lo
        self.pfn_hi = pfn_hi


class Magazine:
    """``struct iova_magazine``: ``size`` live entries of ``pfns``; ``next`` in the depot."""

    def __init__(self, capacity: int) -> None:
        self.size = 0
        self.pfns = [0] * capacity
        self.next: Magazine | None = None


class CpuRcache:
    def __init__(self, capacity: int) -> None:
        self.loaded = Magazine(capacity)
        self.prev = Magazine(capacity)


class Rcache:
    """``struct iova_rcache`` with the one online CPU's ``iova_cpu_rcache``."""

    def __init__(self, capacity: int) -> None:
        self.depot: Magazine | None = None
        self.depot_size = 0
        self.cpu = CpuRcache(capacity)


class KernelIova:
    """``struct iova_domain`` plus the dma-iommu cookie calls that use it."""

    def __init__(
        self,
        granule: int,
        aperture_start: int,
        aperture_end: int,
        mag_size: int = IOVA_MAG_SIZE,
        rcache: bool = True,
    ) -> None:
        # iommu_dma_init_domain: base_pfn = max(1, aperture_start >> order)
        self.shift = granule.bit_length() - 1
        self.aperture_end = aperture_end
        self.start_pfn = max(1, aperture_start >> self.shift)
        self.dma_32bit_pfn = 1 << (32 - self.shift)
        self.max32_alloc_size = self.dma_32bit_pfn
        self.anchor = Iova(IOVA_ANCHOR, IOVA_ANCHOR)
        self.tree: list[Iova] = [self.anchor]  # in pfn_lo order
        self.cached_node = self.anchor
        self.cached32_node = self.anchor
        self.mag_size = mag_size
        self.rcaches = [Rcache(mag_size) for _ in range(IOVA_RANGE_CACHE_MAX_SIZE)]
        #: vcmm's DmaApi(rcache=False): the cache calls find and keep nothing.
        self.rcache = rcache

    # -- rbtree helpers -----------------------------------------------------------
    def _index(self, node: Iova) -> int:
        return next(i for i, n in enumerate(self.tree) if n is node)

    def rb_prev(self, node: Iova) -> Iova | None:
        i = self._index(node)
        return self.tree[i - 1] if i > 0 else None

    def rb_next(self, node: Iova) -> Iova | None:
        i = self._index(node)
        return self.tree[i + 1] if i + 1 < len(self.tree) else None

    def insert_rbtree(self, iova: Iova) -> None:
        i = 0
        while self.tree[i].pfn_lo < iova.pfn_lo:
            i += 1
        assert self.tree[i].pfn_lo != iova.pfn_lo
        self.tree.insert(i, iova)

    def private_find_iova(self, pfn: int) -> Iova | None:
        for node in self.tree:
            if node.pfn_lo <= pfn <= node.pfn_hi:
                return node
        return None

    # -- iova.c -------------------------------------------------------------------
    def get_cached_rbnode(self, limit_pfn: int) -> Iova:
        if limit_pfn <= self.dma_32bit_pfn:
            return self.cached32_node
        return self.cached_node

    def cached_rbnode_insert_update(self, new: Iova) -> None:
        if new.pfn_hi < self.dma_32bit_pfn:
            self.cached32_node = new
        else:
            self.cached_node = new

    def cached_rbnode_delete_update(self, free: Iova) -> None:
        cached_iova = self.cached32_node
        if free is cached_iova or (
            free.pfn_hi < self.dma_32bit_pfn and free.pfn_lo >= cached_iova.pfn_lo
        ):
            nxt = self.rb_next(free)
            assert nxt is not None
            self.cached32_node = nxt
        if free.pfn_lo < self.dma_32bit_pfn:
            self.max32_alloc_size = self.dma_32bit_pfn
        cached_iova = self.cached_node
        if free.pfn_lo >= cached_iova.pfn_lo:
            nxt = self.rb_next(free)
            assert nxt is not None
            self.cached_node = nxt

    def iova_find_limit(self, limit_pfn: int) -> Iova:
        if limit_pfn > self.dma_32bit_pfn:
            return self.anchor
        return next(n for n in self.tree if n.pfn_hi >= limit_pfn)

    def alloc_and_insert_iova_range(self, size: int, limit_pfn: int) -> Iova | None:
        align_mask = (ULONG_MAX << fls_long(size - 1)) & ULONG_MAX  # size_aligned
        high_pfn, low_pfn = limit_pfn, self.start_pfn
        if limit_pfn <= self.dma_32bit_pfn and size >= self.max32_alloc_size:
            return None
        curr: Iova | None = self.get_cached_rbnode(limit_pfn)
        assert curr is not None
        retry_pfn = curr.pfn_hi
        while True:
            while True:  # do { ... } while (...)
                assert curr is not None
                high_pfn = min(high_pfn, curr.pfn_lo)
                new_pfn = ((high_pfn - size) & ULONG_MAX) & align_mask
                prev = curr
                curr = self.rb_prev(curr)
                if not (curr is not None and new_pfn <= curr.pfn_hi and new_pfn >= low_pfn):
                    break
            if high_pfn < size or new_pfn < low_pfn:
                if low_pfn == self.start_pfn and retry_pfn < limit_pfn:
                    high_pfn = limit_pfn
                    low_pfn = retry_pfn + 1
                    curr = self.iova_find_limit(limit_pfn)
                    continue
                self.max32_alloc_size = size
                return None
            break
        new = Iova(new_pfn, new_pfn + size - 1)
        del prev  # the kernel only uses it as an insertion hint
        self.insert_rbtree(new)
        self.cached_rbnode_insert_update(new)
        return new

    def alloc_iova(self, size: int, limit_pfn: int) -> Iova | None:
        return self.alloc_and_insert_iova_range(size, limit_pfn + 1)

    def remove_iova(self, iova: Iova) -> None:
        self.cached_rbnode_delete_update(iova)
        self.tree.remove(iova)

    def free_iova(self, pfn: int) -> None:
        iova = self.private_find_iova(pfn)
        if iova is not None:
            self.remove_iova(iova)

    def alloc_iova_fast(self, size: int, limit_pfn: int, flush_rcache: bool) -> int:
        if size < (1 << (IOVA_RANGE_CACHE_MAX_SIZE - 1)):
            size = roundup_pow_of_two(size)
        iova_pfn = self.iova_rcache_get(size, limit_pfn + 1)
        if iova_pfn:
            return iova_pfn
        while True:
            new_iova = self.alloc_iova(size, limit_pfn)
            if new_iova is not None:
                return new_iova.pfn_lo
            if not flush_rcache:
                return 0
            flush_rcache = False
            self.free_cpu_cached_iovas()
            self.free_global_cached_iovas()

    def free_iova_fast(self, pfn: int, size: int) -> None:
        if self.iova_rcache_insert(pfn, size):
            return
        self.free_iova(pfn)

    def reserve_iova(self, pfn_lo: int, pfn_hi: int) -> None:
        """At domain set-up, on a tree holding only the anchor and other reservations
        that do not overlap (the overlap merging of the kernel is not needed here)."""
        assert all(n.pfn_hi < pfn_lo or n.pfn_lo > pfn_hi for n in self.tree)
        self.insert_rbtree(Iova(pfn_lo, pfn_hi))

    # -- magazines -----------------------------------------------------------------
    def magazine_free_pfns(self, mag: Magazine) -> None:
        for i in range(mag.size):
            iova = self.private_find_iova(mag.pfns[i])
            assert iova is not None
            self.remove_iova(iova)
        mag.size = 0

    @staticmethod
    def magazine_pop(mag: Magazine, limit_pfn: int) -> int:
        i = mag.size - 1
        while mag.pfns[i] > limit_pfn:
            if i == 0:
                return 0
            i -= 1
        pfn = mag.pfns[i]
        mag.size -= 1
        mag.pfns[i] = mag.pfns[mag.size]
        return pfn

    def depot_pop(self, rcache: Rcache) -> Magazine:
        mag = rcache.depot
        assert mag is not None
        rcache.depot = mag.next
        mag.size = self.mag_size
        rcache.depot_size -= 1
        return mag

    @staticmethod
    def depot_push(rcache: Rcache, mag: Magazine) -> None:
        mag.next = rcache.depot
        rcache.depot = mag
        rcache.depot_size += 1

    def iova_rcache_insert(self, pfn: int, size: int) -> bool:
        log_size = order_base_2(size)
        if log_size >= IOVA_RANGE_CACHE_MAX_SIZE or not self.rcache:
            return False
        rcache = self.rcaches[log_size]
        cpu = rcache.cpu
        if cpu.loaded.size != self.mag_size:
            pass
        elif cpu.prev.size != self.mag_size:
            cpu.prev, cpu.loaded = cpu.loaded, cpu.prev
        else:
            self.depot_push(rcache, cpu.loaded)
            cpu.loaded = Magazine(self.mag_size)
        cpu.loaded.pfns[cpu.loaded.size] = pfn
        cpu.loaded.size += 1
        return True

    def iova_rcache_get(self, size: int, limit_pfn: int) -> int:
        log_size = order_base_2(size)
        if log_size >= IOVA_RANGE_CACHE_MAX_SIZE or not self.rcache:
            return 0
        rcache = self.rcaches[log_size]
        cpu = rcache.cpu
        limit = (limit_pfn - size) & ULONG_MAX
        if cpu.loaded.size != 0:
            pass
        elif cpu.prev.size != 0:
            cpu.prev, cpu.loaded = cpu.loaded, cpu.prev
        elif rcache.depot is not None:
            cpu.loaded = self.depot_pop(rcache)
        else:
            return 0
        return self.magazine_pop(cpu.loaded, limit)

    def free_cpu_cached_iovas(self) -> None:
        for rcache in self.rcaches:
            self.magazine_free_pfns(rcache.cpu.loaded)
            self.magazine_free_pfns(rcache.cpu.prev)

    def free_global_cached_iovas(self) -> None:
        for rcache in self.rcaches:
            while rcache.depot is not None:
                self.magazine_free_pfns(self.depot_pop(rcache))

    def depot_work_until_idle(self) -> None:
        """Each order's ``iova_depot_work_func`` re-armed until it has nothing to do."""
        for rcache in self.rcaches:
            while rcache.depot_size > 1:
                self.magazine_free_pfns(self.depot_pop(rcache))

    # -- dma-iommu.c -----------------------------------------------------------------
    def iommu_dma_alloc_iova(self, size: int, dma_limit: int) -> int:
        iova_len = size >> self.shift
        dma_limit = min(dma_limit, self.aperture_end)  # force_aperture
        return self.alloc_iova_fast(iova_len, dma_limit >> self.shift, True) << self.shift

    def iommu_dma_free_iova(self, iova: int, size: int) -> None:
        self.free_iova_fast(iova >> self.shift, size >> self.shift)

    # -- observation --------------------------------------------------------------------
    def nodes(self) -> tuple[tuple[int, int], ...]:
        return tuple((n.pfn_lo, n.pfn_hi) for n in self.tree if n is not self.anchor)

    def cached_pfn(self, node: Iova, anchor_as: int) -> int:
        return anchor_as if node is self.anchor else node.pfn_lo

    def magazines(
        self,
    ) -> tuple[tuple[tuple[int, ...], tuple[int, ...], tuple[tuple[int, ...], ...]], ...]:
        """Per order: loaded, prev and the depot bottom first (as vcmm reports them)."""
        out = []
        for rcache in self.rcaches:
            depot = []
            mag = rcache.depot
            while mag is not None:
                depot.append(tuple(mag.pfns[: self.mag_size]))
                mag = mag.next
            cpu = rcache.cpu
            out.append(
                (
                    tuple(cpu.loaded.pfns[: cpu.loaded.size]),
                    tuple(cpu.prev.pfns[: cpu.prev.size]),
                    tuple(reversed(depot)),
                )
            )
        return tuple(out)


@pytest.fixture(scope="session")
def kernel_iova() -> type[KernelIova]:
    """The reference model class: ``kernel_iova(granule, aperture_start, aperture_end)``."""
    return KernelIova
