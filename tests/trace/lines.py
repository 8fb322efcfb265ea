"""Trace lines written from the kernel's documented formats, for the trace tests.

The header is ftrace's ``<comm>-<pid> [(tgid)] [<cpu>] <flags> <secs.usecs>: <event>:``
and the bodies follow the TP_printk strings of include/trace/events/iommu.h and
dma.h (6.12-era and newest mainline); every helper writes one line as the kernel
would print it, so the tests read what a real trace holds.
"""

from __future__ import annotations


def header(
    comm: str = "kworker/0:1",
    pid: int = 42,
    cpu: int = 0,
    ts: float = 10.0,
    flags: str | None = "d..1.",
    tgid: str | None = None,
) -> str:
    tgid_col = "" if tgid is None else f" ({tgid:>7})"
    flags_col = "" if flags is None else f" {flags}"
    return f"{comm:>16}-{pid:<7}{tgid_col} [{cpu:03d}]{flags_col} {ts:12.6f}: "


def map_line(iova: int, paddr: int, size: int, *, end: bool = True, **h: object) -> str:
    """``iommu:map``; ``end=False`` is the format of kernels before 2021."""
    span = f" - 0x{iova + size:016x}" if end else ""
    return (
        header(**h)  # type: ignore[arg-type]
        + f"map: IOMMU: iova=0x{iova:016x}{span} paddr=0x{paddr:016x} size={size}"
    )


def unmap_line(iova: int, size: int, unmapped: int | None = None, *, end: bool = True,
               **h: object) -> str:  # fmt: skip
    span = f" - 0x{iova + size:016x}" if end else ""
    done = size if unmapped is None else unmapped
    return (
        header(**h)  # type: ignore[arg-type]
        + f"unmap: IOMMU: iova=0x{iova:016x}{span} size={size} unmapped_size={done}"
    )


def fault_line(device: str, iova: int, flags: int, driver: str = "arm-smmu", **h: object) -> str:
    return (
        header(**h)  # type: ignore[arg-type]
        + f"io_page_fault: IOMMU:{driver} {device} iova=0x{iova:016x} flags=0x{flags:04x}"
    )


def dma_map_line(device: str, dma: int, size: int, phys: int, event: str = "dma_map_page",
                 direction: str = "TO_DEVICE", attrs: str = "", **h: object) -> str:  # fmt: skip
    return (
        header(**h)  # type: ignore[arg-type]
        + f"{event}: {device} dir={direction} dma_addr={dma:x} size={size} "
        f"phys_addr={phys:x} attrs={attrs}"
    )


def dma_unmap_line(device: str, dma: int, size: int, event: str = "dma_unmap_page",
                   direction: str = "TO_DEVICE", **h: object) -> str:  # fmt: skip
    return (
        header(**h)  # type: ignore[arg-type]
        + f"{event}: {device} dir={direction} dma_addr={dma:x} size={size} attrs="
    )


def array(values: list[int]) -> str:
    """``__print_array``: ``{0x..,0x..}``."""
    return "{" + ",".join(f"0x{v:x}" for v in values) + "}"


def dma_map_sg_line(device: str, dma_addrs: list[int], sizes: list[int], phys: list[int],
                    *, counts: bool = False, **h: object) -> str:  # fmt: skip
    """6.12's ``dma_map_sg``; ``counts=True`` adds newest mainline's ``nents=a/b ents=a/b``."""
    extra = (
        f" nents={len(phys)}/{len(phys)} ents={len(dma_addrs)}/{len(dma_addrs)}" if counts else ""
    )
    return (
        header(**h)  # type: ignore[arg-type]
        + f"dma_map_sg: {device} dir=FROM_DEVICE{extra} dma_addrs={array(dma_addrs)} "
        f"sizes={array(sizes)} phys_addrs={array(phys)} attrs="
    )


def dma_unmap_sg_line(device: str, phys: list[int], **h: object) -> str:
    return (
        header(**h)  # type: ignore[arg-type]
        + f"dma_unmap_sg: {device} dir=FROM_DEVICE phys_addrs={array(phys)} attrs="
    )


def dma_alloc_line(device: str, dma: int, size: int, *, direction: bool = False,
                   **h: object) -> str:  # fmt: skip
    """6.12's ``dma_alloc``; ``direction=True`` is newest mainline's (with ``dir=``)."""
    d = " dir=BIDIRECTIONAL" if direction else ""
    return (
        header(**h)  # type: ignore[arg-type]
        + f"dma_alloc: {device}{d} dma_addr={dma:x} size={size} virt_addr=00000000c0ffee00 "
        "flags=GFP_KERNEL attrs="
    )


def dma_free_line(device: str, dma: int, size: int, **h: object) -> str:
    return (
        header(**h)  # type: ignore[arg-type]
        + f"dma_free: {device} dma_addr={dma:x} size={size} virt_addr=00000000c0ffee00 attrs="
    )


def trace(*lines: str) -> str:
    """A trace file's text: ftrace's header comment, then ``lines`` (from line 3)."""
    return "# tracer: nop\n#\n" + "\n".join(lines) + "\n"
