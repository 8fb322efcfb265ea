"""Fixtures for the VCMM core tests: a booted default platform and an independent
decoder of ARMv7 short descriptors that reads table bytes straight from memory.

The decoder is written from the ARM Architecture Reference Manual (B3.5.1), not from
vcmm's format description, so tests that use it check vcmm's tables against the
architecture rather than against themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

import vcmm

# First level (one 32-bit word per 1 MiB of VA, index VA[31:20]):
#   [1:0] = 0b01 page table: [31:10] second-level base, bit 3 NS
#   [1:0] = 0b10 (or 0b11) section/supersection: bit 18 = 1 supersection, bit 16 S,
#         bits [14:12] TEX, bit 3 C, bit 2 B, section base [31:20], supersection [31:24]
# Second level (index VA[19:12]):
#   [1:0] = 0b01 large page (64 KiB): bit 10 S, [31:16] base, TEX [14:12]
#   bit 1 = 1 small page (4 KiB): bit 10 S, [31:12] base, TEX [8:6], C bit 3, B bit 2
L1_FAULT, L1_TABLE = 0b00, 0b01
SECTION_S_BIT = 1 << 16
SUPERSECTION_BIT = 1 << 18
PAGE_S_BIT = 1 << 10


@dataclass(frozen=True)
class Leaf:
    kind: str  # "section", "supersection", "large", "small" or "fault"
    desc: int
    pa: int | None  # output address of the VA asked for
    size: int
    shareable: bool
    tex: int
    c: int
    b: int


class ShortDescriptors:
    """Reads ARMv7 short-descriptor tables from physical memory."""

    def __init__(self, memory: object) -> None:
        self.memory = memory

    def word(self, pa: int) -> int:
        return int(self.memory.read_u32(pa))  # type: ignore[attr-defined]

    def l1(self, root: int, va: int) -> int:
        return self.word(root + (va >> 20) * 4)

    def leaf(self, root: int, va: int) -> Leaf:
        d1 = self.l1(root, va)
        if d1 & 0b11 == L1_FAULT:
            return Leaf("fault", d1, None, 0, False, 0, 0, 0)
        if d1 & 0b11 == L1_TABLE:
            l2 = d1 & 0xFFFF_FC00
            d2 = self.word(l2 + ((va >> 12) & 0xFF) * 4)
            if d2 & 0b11 == 0:
                return Leaf("fault", d2, None, 0, False, 0, 0, 0)
            if d2 & 0b10:  # small page
                pa = (d2 & 0xFFFF_F000) | (va & 0xFFF)
                return Leaf(
                    "small", d2, pa, 4096, bool(d2 & PAGE_S_BIT), (d2 >> 6) & 7,
                    (d2 >> 3) & 1, (d2 >> 2) & 1,
                )  # fmt: skip
            pa = (d2 & 0xFFFF_0000) | (va & 0xFFFF)
            return Leaf(
                "large", d2, pa, 0x10000, bool(d2 & PAGE_S_BIT), (d2 >> 12) & 7,
                (d2 >> 3) & 1, (d2 >> 2) & 1,
            )  # fmt: skip
        if d1 & SUPERSECTION_BIT:
            pa = (d1 & 0xFF00_0000) | (va & 0x00FF_FFFF)
            kind, size = "supersection", 1 << 24
        else:
            pa = (d1 & 0xFFF0_0000) | (va & 0x000F_FFFF)
            kind, size = "section", 1 << 20
        return Leaf(
            kind, d1, pa, size, bool(d1 & SECTION_S_BIT), (d1 >> 12) & 7, (d1 >> 3) & 1,
            (d1 >> 2) & 1,
        )  # fmt: skip


@pytest.fixture
def system() -> vcmm.System:
    return vcmm.System.default()


@pytest.fixture
def armv7(system: vcmm.System) -> ShortDescriptors:
    return ShortDescriptors(system.memory)
