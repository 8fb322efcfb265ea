"""Access observers: every CPU and device transaction is seen after translation and
before data moves, with the physical runs it resolved to; an observer can refuse it."""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import numpy as np
import pytest

import vcmm
from vcmm.attrs import RW_WB, Access
from vcmm.core.flags import Attr, PhysAttr
from vcmm.errors import DeviceFaultError, InvalidArgumentError, NotFoundError, StateError
from vcmm.hw.bus import Interconnect, PhysicalDevice, SmmuDevice
from vcmm.hw.cpu import KERNEL_ASID
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.hw.observe import AccessEvent
from vcmm.hw.smmu import Smmu
from vcmm.hw.tablemem import TableMemory
from vcmm.hw.tlb import TLBConfig
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1M, SZ_4K, SZ_4M, SZ_256M

RAM = 0x8000_0000
PA = RAM + 0x0400_0000
VA = 0x0010_0000
#: Scattered physical pages behind VA, VA+4K, VA+8K.
SCATTERED = [PA + 0x5000, PA + 0x1000, PA + 0x9000]


def random_bytes(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def smmu_rig() -> tuple[PhysicalMemory, SmmuDevice]:
    memory = PhysicalMemory([MemoryRegion("ddr", AddressRange(RAM, SZ_256M))])
    tables = TableMemory(memory, AddressRange(RAM, SZ_4M))
    smmu = Smmu("smmu0", memory, tables, context_banks=2, tlb=TLBConfig(16, 4))
    ctx = smmu.context_init("ctx0")
    ctx.bind(smmu)
    ctx.activate()
    ctx.update_start()
    for i, pa in enumerate(SCATTERED):
        ctx.map(pa, VA + i * SZ_4K, SZ_4K, RW_WB)
    ctx.update_done()
    return memory, SmmuDevice("dma", ctx, Interconnect(memory))


class Recorder:
    """An observer that keeps every event and what memory held at its runs then."""

    def __init__(self, memory: PhysicalMemory) -> None:
        self.memory = memory
        self.events: list[AccessEvent] = []
        self.seen: list[bytes] = []

    def __call__(self, event: AccessEvent) -> None:
        self.events.append(event)
        self.seen.append(b"".join(self.memory.read(pa, n) for pa, n in event.runs))


def test_device_read_and_write_events_carry_the_physical_runs() -> None:
    memory, dev = smmu_rig()
    data = random_bytes(3 * SZ_4K - 0x300)
    rec = Recorder(memory)
    dev.add_observer(rec)
    old = b"".join(memory.read(pa, SZ_4K) for pa in SCATTERED)
    dev.write(VA + 0x100, data)
    (ev,) = rec.events
    assert (ev.master, ev.access, ev.address, ev.length) == (
        "dma",
        Access.WRITE,
        VA + 0x100,
        len(data),
    )
    # the runs, written out by hand from the page list
    assert ev.runs == (
        (PA + 0x5100, SZ_4K - 0x100),
        (PA + 0x1000, SZ_4K),
        (PA + 0x9000, SZ_4K - 0x200),
    )
    assert not ev.is_batch and not ev.faulted and ev.asid is None
    # called before the data moved: memory still held the old bytes at those runs
    assert rec.seen[0] == old[0x100 : 0x100 + len(data)]
    # and the runs are where the data landed
    assert b"".join(memory.read(pa, n) for pa, n in ev.runs) == data
    got = dev.read(VA + 0x100, len(data))
    assert rec.events[1].access is Access.READ and rec.events[1].runs == ev.runs
    assert got == data == rec.seen[1]
    with pytest.raises(FrozenInstanceError):
        ev.length = 0  # type: ignore[misc]


def test_copy_is_two_events_read_then_write() -> None:
    memory, dev = smmu_rig()
    memory.write(PA + 0x5000, b"abcdefgh")
    rec = Recorder(memory)
    dev.add_observer(rec)
    dev.copy(VA, VA + SZ_4K + 0x10, 8)
    assert [(e.access, e.address, e.runs) for e in rec.events] == [
        (Access.READ, VA, ((PA + 0x5000, 8),)),
        (Access.WRITE, VA + SZ_4K + 0x10, ((PA + 0x1010, 8),)),
    ]
    assert memory.read(PA + 0x1010, 8) == b"abcdefgh"


def test_physical_device_runs_follow_its_dma_ranges() -> None:
    memory = PhysicalMemory([MemoryRegion("ddr", AddressRange(RAM, SZ_256M))])
    dev = PhysicalDevice("dsp", Interconnect(memory), dma_ranges=[(0x4000_0000, RAM, SZ_256M)])
    rec = Recorder(memory)
    dev.add_observer(rec)
    memory.write(RAM + 0x2000, b"seed")
    assert dev.read(0x4000_2000, 4) == b"seed"
    assert rec.events[0].runs == ((RAM + 0x2000, 4),) and rec.seen == [b"seed"]
    addrs = np.array([0x4000_0000, 0x4000_1040], dtype=np.uint64)
    dev.access_batch(addrs, Access.READ, 64)
    batch = rec.events[1]
    assert batch.is_batch and batch.pas is not None
    assert batch.pas.tolist() == [RAM, RAM + 0x1040] and batch.burst == 64 and batch.length == 128


def test_a_refusing_observer_stops_the_access_and_leaves_memory_and_counters() -> None:
    memory, dev = smmu_rig()
    memory.write(PA + 0x5000, b"keep")

    def refuse(event: AccessEvent) -> None:
        raise StateError(f"refused {event.access.value} at {event.address:#x}")

    dev.add_observer(refuse)
    before = (memory.digest(), dev.counters(), dev.ctx.bytes_read, dev.ctx.bytes_written)
    with pytest.raises(StateError, match="refused write"):
        dev.write(VA, b"nope")
    with pytest.raises(StateError, match="refused read"):
        dev.read(VA, 4)
    with pytest.raises(StateError, match="refused"):
        dev.copy(VA, VA + SZ_4K, 16)
    with pytest.raises(StateError, match="refused"):
        dev.access_batch(np.array([VA, VA + 64], dtype=np.uint64), Access.WRITE)
    assert (memory.digest(), dev.counters(), dev.ctx.bytes_read, dev.ctx.bytes_written) == before
    dev.remove_observer(refuse)
    dev.write(VA, b"done")
    assert memory.read(PA + 0x5000, 4) == b"done" and dev.counters()["transactions"] == 1


def test_a_faulting_access_is_reported_with_its_fault_and_moves_nothing() -> None:
    memory, dev = smmu_rig()
    rec = Recorder(memory)
    dev.add_observer(rec)
    with pytest.raises(DeviceFaultError):
        dev.write(VA + 3 * SZ_4K - 4, b"12345678")  # runs into the unmapped fourth page
    (ev,) = rec.events
    assert ev.faulted and ev.runs == () and isinstance(ev.fault, DeviceFaultError)
    assert dev.faults == 1 and dev.counters()["bytes_written"] == 0
    addrs = np.array([VA, VA + SZ_4K, VA + 5 * SZ_4K], dtype=np.uint64)
    with pytest.raises(DeviceFaultError):
        dev.access_batch(addrs, Access.READ)
    batch = rec.events[1]
    assert batch.is_batch and batch.faulted and batch.pas is None
    assert isinstance(batch.fault, DeviceFaultError)
    assert batch.fault.details["completed"] == batch.fault.completed == 2


def test_a_batch_is_one_event_with_read_only_address_arrays() -> None:
    memory, dev = smmu_rig()
    rec = Recorder(memory)
    dev.add_observer(rec)
    addrs = np.arange(VA, VA + 3 * SZ_4K, 64, dtype=np.uint64)
    dev.access_batch(addrs, Access.READ, 64)
    (ev,) = rec.events
    assert ev.is_batch and ev.addrs is not None and ev.pas is not None
    assert np.array_equal(ev.addrs, addrs) and ev.length == addrs.size * 64
    expected = np.array([dev.ctx.translate(int(a)) for a in addrs], dtype=np.uint64)
    assert np.array_equal(ev.pas, expected)
    assert not ev.addrs.flags.writeable and not ev.pas.flags.writeable


def test_observer_registration_is_checked() -> None:
    _, dev = smmu_rig()

    def cb(event: AccessEvent) -> None:
        pass

    with pytest.raises(InvalidArgumentError, match="not callable"):
        dev.add_observer(42)  # type: ignore[arg-type]
    dev.add_observer(cb)
    with pytest.raises(InvalidArgumentError, match="already observes"):
        dev.add_observer(cb)
    assert dev.observers == (cb,)
    dev.remove_observer(cb)
    with pytest.raises(NotFoundError):
        dev.remove_observer(cb)
    assert dev.observers == ()


def test_cpu_events_carry_the_runs_and_the_asid() -> None:
    system = vcmm.System.default()
    cpu, memory = system.cpu, system.memory
    physmem = system.vcm_phys_alloc("ebi", 4 * SZ_4K, PhysAttr.NONE)
    base = physmem.chunk_ranges[0].start
    rec = Recorder(memory)
    cpu.add_observer(rec)
    # kernel linear map: one run
    data = random_bytes(0x1800, 3)
    memory.write(base + 0x800, data)
    assert cpu.read(cpu.phys_to_virt(base + 0x800), len(data)) == data
    (ev,) = rec.events
    assert ev.master == "cpu" and ev.access is Access.READ
    assert ev.runs == ((base + 0x800, 0x1800),) and ev.asid == KERNEL_ASID and not ev.user
    assert rec.seen == [data]
    # a user space with two pages mapped in reverse physical order: two runs
    cpu.create_address_space(7)
    user = RW_WB.with_(user=True)
    cpu.map_user(7, 0x40_0000, base + 3 * SZ_4K, SZ_4K, user)
    cpu.map_user(7, 0x40_1000, base + 2 * SZ_4K, SZ_4K, user)
    cpu.write(0x40_0800, b"u" * SZ_4K, asid=7, user=True)
    ev = rec.events[-1]
    assert ev.access is Access.WRITE and ev.asid == 7 and ev.user
    assert ev.runs == ((base + 3 * SZ_4K + 0x800, 0x800), (base + 2 * SZ_4K, 0x800))
    # refused: no byte reaches the cache or memory
    cpu.remove_observer(rec)
    cpu.add_observer(lambda e: (_ for _ in ()).throw(StateError("no")))
    before = (memory.digest(), cpu.cache.snapshot())
    with pytest.raises(StateError):
        cpu.write(cpu.phys_to_virt(base), b"x" * 64)
    assert (memory.digest(), cpu.cache.snapshot()) == before


def test_a_faulting_cpu_access_is_reported_with_its_fault() -> None:
    system = vcmm.System.default()
    rec = Recorder(system.memory)
    system.cpu.add_observer(rec)
    system.cpu.create_address_space(9)
    with pytest.raises(vcmm.errors.SegmentationFault):
        system.cpu.read(0x1000, 4, asid=9, user=True)
    (ev,) = rec.events
    assert ev.faulted and ev.runs == () and ev.asid == 9 and ev.address == 0x1000


def test_vcmm_device_mapping_events_match_the_reservation() -> None:
    """Through the VCMM: the runs are the chunks the reservation is backed with."""
    system = vcmm.System.default()
    dev = system.device("vcodec_b_mm2")
    vcm = system.vcm_create(16 * SZ_1M, 16 * SZ_1M)
    system.vcm_activate(system.vcm_assoc(vcm, dev, 0))
    res = system.vcm_reserve(vcm, SZ_1M, Attr.RW)
    physmem = system.vcm_phys_alloc("blocks", SZ_1M, PhysAttr.NONE)
    system.vcm_back(res, physmem)
    rec = Recorder(system.memory)
    dev.add_observer(rec)
    dev.write(res.dev_addr, b"z" * 256)
    (ev,) = rec.events
    assert ev.runs == ((physmem.chunk_ranges[0].start, 256),)
    assert system.memory.read(physmem.chunk_ranges[0].start, 256) == b"z" * 256
