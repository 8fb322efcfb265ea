"""The kernel's virtual mapping of a dma-buf (``dma_buf_vmap``/``dma_buf_vunmap``).

Reads and writes through it must happen inside a kernel CPU-access bracket that covers
them (``DmaBuf.begin_cpu_access``), so the kernel never sees stale cache lines or
races a device job.  The buffer makes and counts these mappings (:meth:`DmaBuf.vmap`);
this module is what the kernel holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vcmm.checks import check_int
from vcmm.errors import InvalidArgumentError, StateError
from vcmm.hw.memory import Bytes, as_u8
from vcmm.share.cpuaccess import KERNEL
from vcmm.sizes import format_size

if TYPE_CHECKING:
    from vcmm.hw.cpu import Cpu
    from vcmm.share.dmabuf import DmaBuf


class KernelMapping:
    """A kernel virtual mapping of a whole dma-buf (``dma_buf_vmap``) at ``va``,
    accessed through ``cpu``."""

    def __init__(self, dmabuf: DmaBuf, va: int, cpu: Cpu) -> None:
        self.dmabuf = dmabuf
        self.va = va
        self.cpu = cpu
        self.unmapped = False

    def _check(self, call: str, offset: object, n: int, write: bool) -> int:
        dmabuf = self.dmabuf
        if self.unmapped:
            raise StateError(f"{call}: the kernel mapping of {dmabuf.name} was vunmapped")
        off = check_int(call, "offset", offset)
        if off + n > dmabuf.size:
            raise InvalidArgumentError(
                f"{call}: [{off:#x}, {off + n:#x}) runs past the end of {dmabuf.name} "
                f"({format_size(dmabuf.size)})"
            )
        session = dmabuf.cpu_access.session(KERNEL)
        if session is None or not session.allows(off, n, write):
            kind = "write" if write else "read"
            if session is not None and write:  # the DMA-debug checker hears of it too
                where = f"vmap va {self.va + off:#x}"
                dmabuf.cpu_access.refused_write(session, "the kernel", where, off, n)
            raise StateError(
                f"{call}: kernel {kind} of [{off:#x}, {off + n:#x}) of {dmabuf.name} is outside "
                "an open begin_cpu_access bracket allowing it"
            )
        return off

    def read(self, offset: int, n: int) -> bytes:
        """Load ``n`` bytes at ``offset`` through the kernel mapping."""
        n = check_int("vmap.read", "length", n)
        off = self._check("vmap.read", offset, n, write=False)
        with self.dmabuf.lock:
            return bytes(self.cpu.read(self.va + off, n))

    def write(self, offset: int, data: Bytes) -> None:
        """Store ``data`` at ``offset`` through the kernel mapping."""
        src = as_u8(data)
        off = self._check("vmap.write", offset, int(src.size), write=True)
        with self.dmabuf.lock:
            self.cpu.write(self.va + off, src)

    def unmap(self) -> None:
        """``dma_buf_vunmap``."""
        self.dmabuf.vunmap(self)
