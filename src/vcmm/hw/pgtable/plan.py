"""How a mapping request is cut into leaves: the runs :meth:`PageTable.map` installs.

``map`` picks, at each step, the largest page or block size at which both the current
input and output address are aligned and which fits in what is left (so 2M+4K at a
1M-aligned address is two sections and a small page), or exactly the forced size; each
run is a stretch of equal leaves inside one table, so it is installed with one
vectorised write.
"""

from __future__ import annotations

from dataclasses import dataclass

from vcmm.hw.pgtable.format import DescriptorKind, Geometry


@dataclass(frozen=True, slots=True)
class Run:
    """``count`` consecutive leaves of one kind inside one table."""

    va: int
    pa: int
    #: Index of the leaves' level in ``Geometry.levels``.
    li: int
    kind: DescriptorKind
    count: int

    @property
    def end(self) -> int:
        return self.va + self.count * self.kind.size


def plan_runs(geo: Geometry, va: int, pa: int, size: int, forced: int | None) -> list[Run]:
    """Cut ``[va, va+size) -> pa`` into runs of equal leaves, each inside one table.

    Arguments are checked by the caller (aligned to the smallest page, ``forced`` one of
    the geometry's sizes and aligning all three).
    """
    runs: list[Run] = []
    end = va + size
    while va < end:
        remaining = end - va
        if forced is not None:
            step = forced
        else:
            step = next(s for s in geo.sizes if va % s == 0 and pa % s == 0 and s <= remaining)
        count = remaining // step
        if forced is None:
            # Stop where a larger size becomes usable (va and pa both aligned to it).
            for big in geo.sizes:
                if big <= step:
                    break
                if (va - pa) % big or va % big == 0:
                    continue
                k = (big - va % big) // step
                if remaining - k * step >= big:
                    count = min(count, k)
        li, kind = geo.leaf[step]
        span = geo.levels[li].table_span
        while count:
            n = min(count, (span - va % span) // step)
            runs.append(Run(va, pa, li, kind, n))
            va += n * step
            pa += n * step
            count -= n
    return runs
