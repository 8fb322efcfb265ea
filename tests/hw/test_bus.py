"""Bus masters: real bytes at the right physical addresses, offsets, batch accounting."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from vcmm.attrs import RO_WB, RW_WB, Access, FaultKind
from vcmm.errors import DeviceFaultError, InvalidArgumentError, NotMappedError
from vcmm.hw.bus import Interconnect, PhysicalDevice, SmmuDevice
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.hw.smmu import Smmu, SmmuContext, SmmuFault
from vcmm.hw.tablemem import TableMemory
from vcmm.hw.tlb import TLBConfig
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1M, SZ_4K, SZ_4M, SZ_64K, SZ_256M

RAM = 0x8000_0000
PA = RAM + 0x0400_0000


@dataclass
class Rig:
    memory: PhysicalMemory
    smmu: Smmu
    ctx: SmmuContext
    dev: SmmuDevice


def make_rig(tlb: TLBConfig | None = None) -> Rig:
    memory = PhysicalMemory(
        [
            MemoryRegion("ddr", AddressRange(RAM, SZ_256M)),
            MemoryRegion("ocmem", AddressRange(0x1000_0000, SZ_1M), kind="sram"),
        ]
    )
    tables = TableMemory(memory, AddressRange(RAM, SZ_4M))
    smmu = Smmu("smmu0", memory, tables, context_banks=2, tlb=tlb or TLBConfig(16, 4))
    ctx = smmu.context_init("ctx0")
    ctx.bind(smmu)
    ctx.activate()
    return Rig(memory, smmu, ctx, SmmuDevice("dma", ctx, Interconnect(memory)))


def pages(ctx: SmmuContext, va: int, pas: list[int], attrs=RW_WB) -> None:
    """Map consecutive 4K pages at ``va`` to the (scattered) physical pages ``pas``."""
    ctx.update_start()
    for i, pa in enumerate(pas):
        ctx.map(pa, va + i * SZ_4K, SZ_4K, attrs)
    ctx.update_done()


def random_bytes(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


@pytest.fixture
def rig() -> Rig:
    return make_rig()


class TestSmmuDeviceData:
    def test_write_lands_at_each_pages_physical_address(self, rig: Rig) -> None:
        scattered = [PA + 0x5000, PA + 0x1000, PA + 0x9000]
        pages(rig.ctx, 0x0010_0000, scattered)
        data = random_bytes(3 * SZ_4K - 0x300)
        rig.dev.write(0x0010_0100, data)
        # independent view: what physical memory holds, page by page
        assert rig.memory.read(PA + 0x5100, SZ_4K - 0x100) == data[: SZ_4K - 0x100]
        assert rig.memory.read(PA + 0x1000, SZ_4K) == data[SZ_4K - 0x100 : 2 * SZ_4K - 0x100]
        assert rig.memory.read(PA + 0x9000, SZ_4K - 0x200) == data[2 * SZ_4K - 0x100 :]
        assert rig.dev.read(0x0010_0100, len(data)) == data
        assert rig.dev.read_array(0x0010_0100, 16).tobytes() == data[:16]

    def test_read_returns_memory_contents(self, rig: Rig) -> None:
        rig.ctx.update_start()
        rig.ctx.map(PA, 0x0020_0000, SZ_64K, RW_WB)
        rig.ctx.update_done()
        data = random_bytes(SZ_64K, 1)
        rig.memory.write(PA, data)
        assert rig.dev.read(0x0020_0000, SZ_64K) == data

    def test_copy_within_device_space(self, rig: Rig) -> None:
        src_pages = [PA + 0x3000, PA + 0x0000, PA + 0x7000, PA + 0x4000]
        dst_pages = [PA + 0x20000, PA + 0x12000, PA + 0x11000, PA + 0x15000]
        pages(rig.ctx, 0x0010_0000, src_pages)
        pages(rig.ctx, 0x0030_0000, dst_pages)
        data = random_bytes(4 * SZ_4K, 2)
        for i, pa in enumerate(src_pages):
            rig.memory.write(pa, data[i * SZ_4K : (i + 1) * SZ_4K])
        rig.dev.copy(0x0010_0010, 0x0030_0800, 3 * SZ_4K)
        expected = data[0x10 : 0x10 + 3 * SZ_4K]
        got = b"".join(rig.memory.read(pa, SZ_4K) for pa in dst_pages)[0x800 : 0x800 + 3 * SZ_4K]
        assert got == expected
        assert (rig.dev.bytes_read, rig.dev.bytes_written) == (3 * SZ_4K, 3 * SZ_4K)

    def test_overlapping_copy_is_a_memmove(self, rig: Rig) -> None:
        pages(rig.ctx, 0x0010_0000, [PA + 0x2000, PA + 0x3000, PA + 0x1000])
        data = random_bytes(3 * SZ_4K, 3)
        rig.dev.write(0x0010_0000, data)
        rig.dev.copy(0x0010_0000, 0x0010_0123, 2 * SZ_4K)
        reference = bytearray(data)
        reference[0x123 : 0x123 + 2 * SZ_4K] = data[: 2 * SZ_4K]
        assert rig.dev.read(0x0010_0000, 3 * SZ_4K) == bytes(reference)

    def test_copy_across_regions(self, rig: Rig) -> None:
        rig.ctx.update_start()
        rig.ctx.map(PA, 0x0010_0000, SZ_64K, RW_WB)
        rig.ctx.map(0x1000_0000, 0x0020_0000, SZ_64K, RW_WB)  # on-chip SRAM
        rig.ctx.update_done()
        data = random_bytes(SZ_64K, 4)
        rig.memory.write(PA, data)
        rig.dev.copy(0x0010_0000, 0x0020_0000, SZ_64K)
        assert rig.memory.read(0x1000_0000, SZ_64K) == data

    def test_faulting_copy_writes_nothing(self, rig: Rig) -> None:
        pages(rig.ctx, 0x0010_0000, [PA, PA + SZ_4K])
        pages(rig.ctx, 0x0030_0000, [PA + 0x10000])  # destination one page short
        rig.memory.write(PA, random_bytes(2 * SZ_4K, 5))
        digest = rig.memory.digest()
        with pytest.raises(DeviceFaultError) as info:
            rig.dev.copy(0x0010_0000, 0x0030_0000, 2 * SZ_4K)
        assert info.value.address == 0x0030_1000
        assert rig.memory.digest() == digest
        assert rig.dev.faults == 1 and rig.dev.bytes_written == 0

    def test_write_to_read_only_page_is_a_permission_fault(self, rig: Rig) -> None:
        pages(rig.ctx, 0x0010_0000, [PA], RO_WB)
        rig.ctx.hook_interrupt(lambda fault, data: 0)
        with pytest.raises(DeviceFaultError) as info:
            rig.dev.write(0x0010_0000, b"x")
        assert info.value.kind is FaultKind.PERMISSION
        assert rig.dev.read(0x0010_0000, 1) == b"\0"

    def test_mapping_onto_a_hole_is_a_bus_fault(self, rig: Rig) -> None:
        pages(rig.ctx, 0x0010_0000, [0x2000_0000])  # nothing at 0x20000000
        with pytest.raises(DeviceFaultError, match="not backed") as info:
            rig.dev.read(0x0010_0000, 4)
        assert info.value.kind is FaultKind.BUS

    @pytest.mark.parametrize(("addr", "length"), [(-1, 4), (0, -4), ("0", 4), (0, 1.5)])
    def test_bad_arguments(self, rig: Rig, addr: object, length: object) -> None:
        with pytest.raises(InvalidArgumentError):
            rig.dev.read(addr, length)  # type: ignore[arg-type]
        assert rig.dev.transactions == 0

    def test_write_refuses_non_bytes(self, rig: Rig) -> None:
        with pytest.raises(InvalidArgumentError):
            rig.dev.write(0, "text")  # type: ignore[arg-type]


class TestPhysicalDevice:
    def test_dma_ranges_offset(self) -> None:
        """The seed's example: SDRAM at 0x80000000 physical is 0x40000000 to the device."""
        rig = make_rig()
        ic = Interconnect(rig.memory)
        dev = PhysicalDevice("mdp", ic, dma_ranges=[(0x4000_0000, RAM, SZ_256M)])
        assert dev.phys_to_bus(RAM + 0x1234) == 0x4000_1234
        assert dev.bus_to_phys(0x4000_1234) == RAM + 0x1234
        dev.write(0x4100_0000, b"frame")
        assert rig.memory.read(RAM + 0x0100_0000, 5) == b"frame"
        assert dev.read(0x4100_0000, 5) == b"frame"

    def test_bus_offset_form(self) -> None:
        rig = make_rig()
        dev = PhysicalDevice("dsp", Interconnect(rig.memory), bus_offset=0x4000_0000)
        assert dev.phys_to_bus(RAM) == 0x4000_0000
        dev.write(0x4000_2000, b"abc")
        assert rig.memory.read(RAM + 0x2000, 3) == b"abc"

    def test_identity_by_default(self) -> None:
        rig = make_rig()
        dev = PhysicalDevice("plain", Interconnect(rig.memory))
        dev.write(PA, b"same")
        assert rig.memory.read(PA, 4) == b"same"
        assert dev.phys_to_bus(PA) == PA

    def test_transfer_across_two_windows(self) -> None:
        rig = make_rig()
        ranges = [(0x1000, PA + 0x8000, 0x1000), (0x2000, PA, 0x1000)]
        dev = PhysicalDevice("cam", Interconnect(rig.memory), dma_ranges=ranges)
        data = random_bytes(0x1000, 9)
        dev.write(0x1800, data)
        assert rig.memory.read(PA + 0x8800, 0x800) == data[:0x800]
        assert rig.memory.read(PA, 0x800) == data[0x800:]

    def test_outside_every_window(self) -> None:
        rig = make_rig()
        dev = PhysicalDevice(
            "mdp", Interconnect(rig.memory), dma_ranges=[(0x4000_0000, RAM, SZ_1M)]
        )
        digest = rig.memory.digest()
        with pytest.raises(DeviceFaultError) as info:
            dev.write(0x4000_0000 + SZ_1M - 2, b"abcd")  # last 2 bytes fall outside
        assert "mdp" in str(info.value) and hex(0x4000_0000 + SZ_1M) in str(info.value)
        assert rig.memory.digest() == digest
        with pytest.raises(NotMappedError, match="mdp"):
            dev.phys_to_bus(RAM + SZ_1M)
        with pytest.raises(NotMappedError):
            dev.bus_to_phys(0x1000)
        with pytest.raises(DeviceFaultError):
            dev.access_batch(np.array([0x4000_0000, 0x10], dtype=np.uint64), Access.READ)

    @pytest.mark.parametrize(
        "ranges",
        [[], [(0, RAM, 0)], [(0, RAM, SZ_1M), (SZ_4K, RAM, SZ_1M)], [(0, RAM)], "x"],
    )
    def test_bad_dma_ranges(self, ranges: object) -> None:
        rig = make_rig()
        with pytest.raises(InvalidArgumentError):
            PhysicalDevice("bad", Interconnect(rig.memory), dma_ranges=ranges)  # type: ignore[arg-type]

    def test_offset_and_ranges_together_refused(self) -> None:
        rig = make_rig()
        with pytest.raises(InvalidArgumentError, match="not both"):
            PhysicalDevice(
                "bad", Interconnect(rig.memory), bus_offset=4096, dma_ranges=[(0, RAM, SZ_1M)]
            )


class TestBatch:
    def _workload(self, rig: Rig) -> np.ndarray:
        rig.ctx.update_start()
        rig.ctx.map_range(0, PA, SZ_1M, RW_WB, page_size=SZ_4K)
        rig.ctx.map_range(SZ_1M, PA + SZ_1M, SZ_1M, RW_WB, page_size=SZ_64K)
        rig.ctx.update_done()

        def on_demand(fault: SmmuFault, data: object) -> int:
            rig.ctx.update_start()
            rig.ctx.map(PA + 4 * SZ_1M, fault.va & ~(SZ_1M - 1), SZ_1M, RW_WB)
            rig.ctx.update_done()
            return 1

        rig.ctx.hook_interrupt(on_demand)
        rng = np.random.default_rng(11)
        addrs = rng.integers(0, 2 * SZ_1M, 600) & ~np.int64(63)
        addrs = np.concatenate([addrs, [3 * SZ_1M + 128], rng.integers(0, SZ_1M, 50) & ~63])
        return addrs.astype(np.uint64)

    @pytest.mark.parametrize("access", [Access.READ, Access.WRITE])
    def test_batch_counters_equal_per_access_path(self, access: Access) -> None:
        per, batch = make_rig(TLBConfig(16, 2)), make_rig(TLBConfig(16, 2))
        addrs = self._workload(per)
        assert np.array_equal(addrs, self._workload(batch))
        for a in addrs.tolist():
            if access is Access.READ:
                per.dev.read(a, 64)
            else:
                per.dev.write(a, bytes(64))
        counts = batch.dev.access_batch(addrs, access, burst=64)
        assert (counts.transactions, counts.bytes) == (addrs.size, addrs.size * 64)
        assert batch.smmu.tlb.snapshot() == per.smmu.tlb.snapshot()
        assert batch.dev.counters() == per.dev.counters()
        assert batch.ctx.stats() == per.ctx.stats()
        assert batch.ctx.stats().faults == 1

    def test_terminated_batch_counts_what_completed(self) -> None:
        per, batch = make_rig(), make_rig()
        addrs = np.array([0, 64, 128, SZ_1M, 192], dtype=np.uint64)  # SZ_1M is unmapped
        for rig in (per, batch):
            rig.ctx.update_start()
            rig.ctx.map(PA, 0, SZ_4K, RW_WB)
            rig.ctx.update_done()
            rig.ctx.hook_interrupt(lambda fault, data: 0)
        with pytest.raises(DeviceFaultError):
            for a in addrs.tolist():
                per.dev.read(a, 64)
        with pytest.raises(DeviceFaultError) as info:
            batch.dev.access_batch(addrs, Access.READ, 64)
        assert info.value.completed == 3
        assert batch.dev.counters() == per.dev.counters()
        assert batch.dev.counters()["transactions"] == 3
        assert batch.ctx.stats() == per.ctx.stats()
        assert batch.smmu.tlb.snapshot() == per.smmu.tlb.snapshot()

    def test_burst_must_not_cross_a_page(self, rig: Rig) -> None:
        before = rig.smmu.snapshot()
        with pytest.raises(InvalidArgumentError, match="crosses"):
            rig.dev.access_batch(np.array([SZ_4K - 32], dtype=np.uint64), Access.READ, 64)
        with pytest.raises(InvalidArgumentError):
            rig.dev.access_batch(np.array([0], dtype=np.uint64), Access.READ, 0)
        with pytest.raises(InvalidArgumentError):
            rig.dev.access_batch([0, 64], Access.READ)  # type: ignore[arg-type]
        assert rig.smmu.snapshot() == before

    def test_physical_device_batch_counts(self, rig: Rig) -> None:
        dev = PhysicalDevice("pd", Interconnect(rig.memory))
        counts = dev.access_batch(np.arange(0, 64 * 100, 64, dtype=np.uint64), Access.WRITE, 32)
        assert (counts.transactions, counts.bytes) == (100, 3200)
        assert dev.counters() == {
            "bytes_read": 0,
            "bytes_written": 3200,
            "transactions": 100,
            "faults": 0,
        }
