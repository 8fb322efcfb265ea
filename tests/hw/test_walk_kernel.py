"""The vectorised walk of many addresses, compiled and in numpy, against the hardware walker.

``walk_tables_many`` classifies each level's descriptors with one compiled loop on the
compiled engine and with whole-array numpy passes on the Python engine.  Over real
tables of every format (mixed page sizes and attributes) with some descriptors
overwritten by random words (invalid, reserved, size-fault and access-flag cases,
tables pointing anywhere), both must give the same rows, and every row must be what
the one-address walker :func:`walk_tables` says of that address, also when a level
meets more attribute sets than the compiled loop numbers itself.
"""

from __future__ import annotations

import contextlib
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vcmm.attrs import RO_WB, RW_WB, PageAttrs
from vcmm.errors import VcmmError
from vcmm.hw.engine import numba_available, use_engine
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.hw.pgtable import ARMV7_LPAE, ARMV7S, VMSAV8_4K, PageTable, walkmany
from vcmm.hw.pgtable.format import Role
from vcmm.hw.pgtable.walker import walk_tables
from vcmm.hw.pgtable.walkmany import walk_tables_many
from vcmm.hw.tablemem import TableMemory
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_4M, SZ_256M

pytestmark = pytest.mark.skipif(not numba_available(), reason="numba is not installed")

RAM = 0x8000_0000
SPAN = 64 << 20  # input addresses walked: the first 64 MiB
USER_RO = PageAttrs(user=True, write=False)


def slots_of(table: PageTable, memory: PhysicalMemory, va: int) -> list[int]:
    """Where the descriptors a walk of ``va`` reads sit, level by level (ARM manual:
    each level indexes its table with its slice of the address)."""
    addrs, base = [], table.root
    for gl in table.fmt.geometry(table.va_bits).levels:
        if not memory.is_backed(base + gl.index(va) * gl.entry_bytes, gl.entry_bytes):
            break  # an earlier scribble sent the walk into a hole
        addrs.append(base + gl.index(va) * gl.entry_bytes)
        desc = int.from_bytes(memory.read(addrs[-1], gl.entry_bytes), "little")
        kind = gl.classify(desc)
        if kind is None or kind.role is not Role.TABLE:
            break
        base = kind.output_address(desc)
    return addrs


def build(
    data: st.DataObject, fmt: object
) -> tuple[PhysicalMemory, PageTable, list[int], list[int]]:
    """Tables with random mappings, some descriptors on their walks then damaged (a bit
    flipped: type, access flag, size-fault and address bits; or a random word); the
    addresses mapped, and those whose walks were damaged."""
    memory = PhysicalMemory([MemoryRegion("ddr", AddressRange(RAM, SZ_256M))])
    table = PageTable(fmt, memory, TableMemory(memory, AddressRange(RAM, SZ_4M)))  # type: ignore[arg-type]
    sizes = [s for s in table.sizes if s <= SPAN // 4]
    mapped: list[int] = []
    damaged: list[int] = []
    for _ in range(data.draw(st.integers(1, 12))):
        size = data.draw(st.sampled_from(sizes))
        count = data.draw(st.integers(1, min(8, SPAN // size)))
        va = data.draw(st.integers(0, SPAN // size - count)) * size
        pa = RAM + SZ_4M + data.draw(st.integers(0, (SZ_256M - SZ_4M) // size - count)) * size
        attrs = data.draw(st.sampled_from([RW_WB, RO_WB, USER_RO]))
        with contextlib.suppress(VcmmError):  # overlaps are skipped
            table.map(va, pa, size * count, attrs, page_size=size)
            mapped += range(va, va + size * count, table.fmt.min_page)
    width = table.fmt.entry_bytes
    for _ in range(data.draw(st.integers(0, 6)) if mapped else 0):
        va = data.draw(st.sampled_from(mapped))
        slots = slots_of(table, memory, va)
        damaged.append(va)
        if not slots:
            continue
        slot = data.draw(st.sampled_from(slots))
        word = int.from_bytes(memory.read(slot, width), "little")
        if data.draw(st.integers(0, 3)):
            # type bits, NS (v7s: a small page inherits its table's), the access flag
            # (LPAE, v8), the supersection bit (v7s), an address-size bit (LPAE),
            # NSTable (LPAE), or any
            bit = data.draw(st.sampled_from([0, 1, 3, 10, 10, 18, 44, 44, 61, -1]))
            word ^= 1 << (bit if 0 <= bit < 8 * width else data.draw(st.integers(0, 31)))
        else:
            word = data.draw(st.integers(0, (1 << (8 * width)) - 1))
        memory.write(slot, word.to_bytes(width, "little"))
    return memory, table, mapped, damaged


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
@given(st.data())
def test_compiled_and_numpy_walks_agree_with_the_hardware_walker(data: st.DataObject) -> None:
    fmt = data.draw(st.sampled_from([ARMV7S, ARMV7_LPAE, VMSAV8_4K]))
    memory, table, mapped, damaged = build(data, fmt)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    granule = table.fmt.min_page
    anywhere = rng.integers(0, SPAN // granule, data.draw(st.integers(1, 200))) * granule
    inside = rng.choice(np.array([*mapped, 0]), data.draw(st.integers(0, 400)))
    far = [1 << 40, (1 << 32) - granule]
    vas = np.concatenate([anywhere, inside, damaged, far]).astype(np.uint64)
    results = []
    cap = data.draw(st.sampled_from([1, walkmany.ATTR_SETS]))  # 1: past the kernel's cap
    for engine in ("python", "numba"):
        with use_engine(engine), mock.patch.object(walkmany, "ATTR_SETS", cap):
            w = walk_tables_many(table.fmt, memory, table.root, vas, va_bits=table.va_bits)
        cols = (w.ok, w.reads, w.level, w.base, w.shift, w.pa_base)
        found = [w.attrs[i] if i >= 0 else None for i in w.attr_index.tolist()]
        results.append(([c.tolist() for c in cols], found))  # numbering may differ
    assert results[0] == results[1]
    (ok, reads, level, base, shift, pa_base), attrs = results[1]
    for row, va in enumerate(vas.tolist()):
        ref = walk_tables(table.fmt, memory, table.root, va, va_bits=table.va_bits)
        assert reads[row] == ref.reads
        aligned = ref.ok and (ref.pa - va % ref.page_size) % ref.page_size == 0
        assert ok[row] == aligned, (hex(va), ref)
        if ok[row]:
            size = 1 << shift[row]
            assert (level[row], size, base[row]) == (ref.level, ref.page_size, ref.va_base)
            assert pa_base[row] == ref.pa_base
            assert attrs[row] == ref.attrs


def test_a_small_page_inherits_ns_from_its_table_descriptor() -> None:
    """ARMv7 short descriptors: a small page's NS comes from the first-level page-table
    descriptor pointing at its table (bit 3), which the compiled loop must carry down."""
    memory = PhysicalMemory([MemoryRegion("ddr", AddressRange(RAM, SZ_256M))])
    table = PageTable(ARMV7S, memory, TableMemory(memory, AddressRange(RAM, SZ_4M)))
    table.map(0x10_0000, RAM + SZ_4M, 2 * ARMV7S.min_page, RW_WB)
    slot = table.root + 4 * 1  # the first-level slot of VA 0x10_0000
    desc = int.from_bytes(memory.read(slot, 4), "little")
    memory.write(slot, (desc | 1 << 3).to_bytes(4, "little"))
    vas = np.array([0x10_0000, 0x10_1000], dtype=np.uint64)
    ref = walk_tables(ARMV7S, memory, table.root, 0x10_0000)
    assert ref.attrs is not None and ref.attrs.ns
    for engine in ("python", "numba"):
        with use_engine(engine):
            w = walk_tables_many(ARMV7S, memory, table.root, vas)
        assert [w.attrs[i] for i in w.attr_index.tolist()] == [ref.attrs, ref.attrs]
