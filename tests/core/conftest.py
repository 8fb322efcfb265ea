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


# VMSAv8-64, 4 KiB granule, 48-bit input (ARM ARM D8.3): four levels indexed by
# VA[47:39], VA[38:30], VA[29:21], VA[20:12]; eight bytes per descriptor.
#   [1:0] = 0b11 at levels 0-2: table, next-level address in [47:12]
#   [1:0] = 0b01 at levels 1-2: block (1 GiB / 2 MiB), output address [47:30] / [47:21]
#   [1:0] = 0b11 at level 3: page, output address [47:12]
# Leaf attributes: AttrIndx [4:2], NS 5, AP[2:1] [7:6], SH [9:8] (0b11 inner shareable,
# 0b10 outer, 0b00 non-shareable), AF 10, nG 11.
LEVEL_SHIFTS = (39, 30, 21, 12)
OA_MASK = ((1 << 48) - 1) & ~0xFFF


@dataclass(frozen=True)
class LongLeaf:
    level: int
    desc: int
    pa: int  # output address of the VA asked for
    size: int
    sh: int
    ng: bool
    ap: int


class LongDescriptors:
    """Reads VMSAv8-64 (4 KiB granule, 48-bit) tables from physical memory."""

    def __init__(self, memory: object) -> None:
        self.memory = memory

    def word(self, pa: int) -> int:
        return int(self.memory.read_u64(pa))  # type: ignore[attr-defined]

    def leaf(self, root: int, va: int) -> LongLeaf | None:
        table = root
        for level, shift in enumerate(LEVEL_SHIFTS):
            desc = self.word(table + ((va >> shift) & 0x1FF) * 8)
            kind = desc & 0b11
            if kind in (0b00, 0b10):
                return None
            if kind == 0b11 and level < 3:
                table = desc & OA_MASK
                continue
            size = 1 << shift
            base = desc & OA_MASK & ~(size - 1)
            return LongLeaf(
                level, desc, base | (va & (size - 1)), size, (desc >> 8) & 0b11,
                bool(desc >> 11 & 1), (desc >> 6) & 0b11,
            )  # fmt: skip
        return None


@pytest.fixture
def armv8(system: vcmm.System) -> LongDescriptors:
    return LongDescriptors(system.memory)
