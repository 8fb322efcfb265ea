"""Fault injection: make the n-th allocation fail, as Linux's ``fail_nth`` does.

Every compound call of vcmm promises all or nothing: if any step fails, every piece of
state is as it was.  The steps that can fail after validation are allocations (a
physical block, a page-table page, an IOVA range, a VCM address range), and a real
shortage hits only the one that happens to run out.  To show the promise for *every*
failure point, Linux's iommufd selftests write ``n`` to ``/proc/self/task/<tid>/
fail-nth``: the n-th fault-injection point the task passes fails, and the test repeats
the operation for n = 1, 2, ... until it succeeds, checking after each failure that
nothing changed.  :func:`fail_nth` is that switch, for one thread:

.. code-block:: python

    with vcmm.inject.fail_nth(3) as injector:
        system.vcm_back(res, physmem)   # the third allocation raises OutOfMemoryError
    injector.fired                      # False: the call made fewer than 3 allocations

The fault-injection points are the allocators themselves, each at the entry of its
public allocation calls, after the arguments were checked and before anything moved:

===========  ==========================================================================
site         allocations counted
===========  ==========================================================================
``PHYS``     physical blocks: block pools, contiguous and on-chip pools, the buddy
             allocator (kernel RAM and the DMA API's coherent pool)
``TABLE``    page-table pages and second-level tables (:class:`~vcmm.hw.tablemem.
             TableMemory`)
``IOVA``     IOVA ranges (:class:`~vcmm.mm.iova.IovaDomain`)
``ADDRESS``  address ranges of range allocators: VCM reservations, kernel virtual
             areas, user mappings, one-to-one placements
===========  ==========================================================================

An injected failure raises exactly what the allocator raises when it is exhausted
(``OutOfMemoryError``, or ``OutOfAddressSpaceError`` for the range and IOVA
allocators), so callers take the path a real shortage takes; the message says it was
injected.  A caller
that falls back (another target, a smaller alignment) gets its next allocation
counted too, as in Linux.

The injector is per thread (a context variable), as fail-nth is per task: a device
job running in another thread is neither counted nor failed.  With no injector armed
anywhere, a point costs a call and one global read; the IOVA domains' hot paths test
:data:`armed` first and skip the call.
"""

from __future__ import annotations

import contextvars
import enum
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from vcmm.checks import is_int
from vcmm.errors import InvalidArgumentError, OutOfMemoryError, StateError


class AllocSite(enum.Enum):
    """The kinds of allocation a fault can be injected into."""

    PHYS = "physical block"
    TABLE = "page-table page"
    IOVA = "IOVA range"
    ADDRESS = "address range"


ALL_SITES = frozenset(AllocSite)


@dataclass
class FailNth:
    """One armed injector: fails the ``n``-th allocation (counting only ``sites``).

    ``seen`` lists every counted allocation in order (its site and allocator), so a
    test can tell which step each ``n`` hit; ``failed`` is the one that was made to
    fail, ``None`` while fewer than ``n`` happened.
    """

    n: int
    sites: frozenset[AllocSite] = ALL_SITES
    seen: list[tuple[AllocSite, str]] = field(default_factory=list)
    failed: tuple[AllocSite, str] | None = None

    @property
    def fired(self) -> bool:
        """Whether the n-th allocation happened (and was failed)."""
        return self.failed is not None

    def hit(self, site: AllocSite, allocator: object) -> bool:
        """Count one allocation; True when it is the one to fail."""
        if site not in self.sites:
            return False
        self.seen.append((site, type(allocator).__name__))
        if len(self.seen) != self.n:
            return False
        self.failed = self.seen[-1]
        return True


_current: contextvars.ContextVar[FailNth | None] = contextvars.ContextVar(
    "vcmm_fail_nth", default=None
)
#: Injectors armed in any thread (0: none).  :func:`check` returns at once while it is
#: 0, and an allocator's hot path may test ``inject.armed`` itself before calling
#: :func:`check` (a module attribute read instead of a call).  Read it through the
#: module, never ``from vcmm.inject import armed`` (that copies today's value).
armed = 0
_armed_lock = threading.Lock()


@contextmanager
def fail_nth(n: int, *, sites: Iterable[AllocSite] | None = None) -> Iterator[FailNth]:
    """Fail the ``n``-th allocation (n >= 1) this thread makes inside the block.

    ``sites`` restricts the count to some kinds of allocation (default: all).  The
    injector is yielded so the caller can ask whether it :attr:`~FailNth.fired` and
    what it :attr:`~FailNth.seen`.  Injectors do not nest.
    """
    global armed
    if not is_int(n) or n < 1:
        raise InvalidArgumentError(f"fail_nth: n {n!r} must be an integer >= 1")
    chosen = ALL_SITES if sites is None else frozenset(sites)
    if not chosen or not all(isinstance(s, AllocSite) for s in chosen):
        raise InvalidArgumentError(
            f"fail_nth: sites {sites!r} must be a non-empty collection of AllocSite"
        )
    if _current.get() is not None:
        raise StateError("fail_nth: an injector is already armed in this thread")
    injector = FailNth(n, chosen)
    token = _current.set(injector)
    with _armed_lock:
        armed += 1
    try:
        yield injector
    finally:
        with _armed_lock:
            armed -= 1
        _current.reset(token)


def check(
    site: AllocSite, allocator: object, error: type[OutOfMemoryError] = OutOfMemoryError
) -> None:
    """A fault-injection point: raise ``error`` (what ``allocator`` raises when it is
    exhausted) if this thread's injector says this allocation is the n-th.  Allocators
    call it at the entry of an allocation, after checking their arguments and before
    changing anything."""
    if not armed:
        return
    injector = _current.get()
    if injector is None or not injector.hit(site, allocator):
        return
    nth = injector.n
    raise error(f"{allocator!r}: {site.value} allocation #{nth} failed by fault injection")
