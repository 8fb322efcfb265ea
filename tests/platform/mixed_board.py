"""A small SoC mixing all three SMMU table formats, and a reference walker per format
written from the ARM manuals (not from vcmm's format descriptions), for the tests of
mixed formats, IOMMU groups and commands on imported boards (written to a blob by the
``make_dtb`` fixture of tests/conftest.py)."""

from __future__ import annotations

from typing import Any

from .dtnodes import smmu_node

GIC, M4U, MMU500, MMU401 = 1, 7, 8, 9


def mixed_tree() -> dict[str, Any]:
    """1 GiB of RAM; an MT8173 M4U (ARMv7 short descriptor) with a display and a
    codec (one group), an MMU-500 (VMSAv8-64) with a display and a video codec whose
    two nodes have the same stream ID (one group), and an MMU-401 (LPAE) with an
    HDLCD; a reserved pool that is one master's memory-region."""
    return {
        "#address-cells": 1,
        "#size-cells": 1,
        "interrupt-parent": GIC,
        "memory@80000000": {"device_type": "memory", "reg": [0x8000_0000, 0x4000_0000]},
        "reserved-memory": {
            "#address-cells": 1,
            "#size-cells": 1,
            "ranges": True,
            "pool@b0000000": {
                "compatible": "shared-dma-pool",
                "reg": [0xB000_0000, 0x40_0000],
                "no-map": True,
                "phandle": 20,
            },
            "cma@a0000000": {
                "compatible": "shared-dma-pool",
                "reg": [0xA000_0000, 0x80_0000],
                "reusable": True,
                "linux,cma-default": True,
            },
        },
        "interrupt-controller@1000": {
            "reg": [0x1000, 0x1000],
            "#interrupt-cells": 3,
            "interrupt-controller": True,
            "phandle": GIC,
        },
        "iommu@10205000": smmu_node("mediatek,mt8173-m4u", [0x1020_5000, 0x1000], M4U),
        "iommu@15000000": smmu_node("arm,mmu-500", [0x1500_0000, 0x1_0000], MMU500, interrupts=3),
        "iommu@2b500000": smmu_node("arm,mmu-401", [0x2B50_0000, 0x1_0000], MMU401, interrupts=2),
        "ovl@1400c000": {"reg": [0x1400_C000, 0x1000], "iommus": [M4U, 0]},
        "vcodec@16020000": {"reg": [0x1602_0000, 0x1000], "iommus": [M4U, 1 << 5 | 2]},
        "display@ae00000": {
            "reg": [0xAE0_0000, 0x1000],
            "iommus": [MMU500, 0x10],
            "memory-region": 20,
        },
        "video@aa00000": {"reg": [0xAA0_0000, 0x1000], "iommus": [MMU500, 0x20]},
        "video-enc@aa10000": {"reg": [0xAA1_0000, 0x1000], "iommus": [MMU500, 0x20]},
        "hdlcd@7ff50000": {"reg": [0x7FF5_0000, 0x1000], "iommus": [MMU401, 1]},
    }


def _u32(memory: Any, pa: int) -> int:
    return int.from_bytes(memory.read(pa, 4), "little")


def _u64(memory: Any, pa: int) -> int:
    return int.from_bytes(memory.read(pa, 8), "little")


def walk_v7s(memory: Any, root: int, va: int) -> int:
    """ARMv7 short descriptor (ARM DDI 0406C B3.5): first level VA[31:20], 4-byte
    entries; type 0b01 a page table (base bits[31:10], second level VA[19:12]), 0b10 a
    section (bit 18 set: supersection); second level bit 1 a small page, 0b01 large."""
    first = _u32(memory, root + (va >> 20) * 4)
    kind = first & 0b11
    if kind == 0b10:
        if first >> 18 & 1:
            return (first & 0xFF00_0000) | (va & 0xFF_FFFF)
        return (first & 0xFFF0_0000) | (va & 0xF_FFFF)
    assert kind == 0b01, f"first-level descriptor {first:#x} at VA {va:#x} is a fault"
    second = _u32(memory, (first & 0xFFFF_FC00) + ((va >> 12) & 0xFF) * 4)
    if second & 0b10:
        return (second & 0xFFFF_F000) | (va & 0xFFF)
    assert second & 0b11 == 0b01, f"second-level descriptor {second:#x} is a fault"
    return (second & 0xFFFF_0000) | (va & 0xFFFF)


def walk_long(memory: Any, root: int, va: int, levels: int) -> int:
    """Long descriptors with a 4 KiB granule (ARM DDI 0487 D5.3; LPAE, DDI 0406C B3.6):
    8-byte entries, 9 index bits per level ending at VA[20:12]; four levels from
    VA[47:39] (VMSAv8-64, 48-bit input) or three from VA[31:30] (LPAE, 32-bit input).
    Bits[1:0] 0b11 are a table (a page at the last level), 0b01 a block; the output
    address is bits[47:12]."""
    table = root
    for level in range(4 - levels, 4):
        shift = 39 - 9 * level
        desc = _u64(memory, table + ((va >> shift) & 0x1FF) * 8)
        address = desc & 0xFFFF_FFFF_F000
        if level == 3:
            assert desc & 0b11 == 0b11, f"level 3 descriptor {desc:#x} is not a page"
            return address | (va & 0xFFF)
        if desc & 0b11 == 0b01:
            return (address & ~((1 << shift) - 1)) | (va & ((1 << shift) - 1))
        assert desc & 0b11 == 0b11, f"level {level} descriptor {desc:#x} is a fault"
        table = address
    raise AssertionError("unreachable")


def reference_walk(fmt_name: str, memory: Any, root: int, va: int) -> int:
    """The physical address ``va`` reaches through the table at ``root``."""
    if fmt_name == "armv7s":
        return walk_v7s(memory, root, va)
    return walk_long(memory, root, va, 4 if fmt_name == "vmsav8" else 3)
