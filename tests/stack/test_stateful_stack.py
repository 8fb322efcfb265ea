"""Random sequences over every layer at once, checked against a model by reading the
page tables straight from memory.

Steps mix the seed calls (on the context the DMA API leaves free, and the kernel's
VMM), the DMA API (map_page, map_sg, coherent buffers, on the devices it serves) and
dma-bufs (export, attach and map, mmap into processes, partial munmap); any step may
run under ``fail_nth`` so that one of its allocations fails.  Between steps every
device writes through each of its writable mappings.

The model is written from what each call promises, not from vcmm's records: which
physical pages each mapping reaches (the caller's pages, or what the allocation call
returned), laid end to end from the address the call returned, with the permissions,
memory type and address space the call implies.  After every step every table the
system has (each IOMMU VCM's ARMv7 table, the kernel's and each process's VMSAv8
table) is decoded leaf by leaf by the decoders of ``conftest.py`` (written from the
ARM manual) and must hold exactly the model's pages: right output address,
permissions, memory type, NS=1, nG for user pages only, and the shareable bit set
exactly where two address spaces (or the kernel's linear map) reach the page.  Every
active context bank must point at the right table.  A step that fails must leave the
whole stack's state (``Stack.state()``) unchanged, and at the end everything is torn
down and no table page, physical block or kernel address may be left over.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from vcmm import SZ_4K, DmaDirection
from vcmm.core import Attr, PhysAttr
from vcmm.dma import DMA_MAPPING_ERROR, ScatterList
from vcmm.errors import AttributeConflictError, VcmmError
from vcmm.hw.pgtable import MAIR
from vcmm.inject import fail_nth
from vcmm.proc import MAP_SHARED, O_RDWR, PROT_READ, PROT_WRITE, MemFile

PAGE = SZ_4K
_VA_MASK = (1 << 48) - 1
DEVICES = ("vcodec_a_mm1", "vcodec_b_mm2", "mdp")
DIRECTIONS = (DmaDirection.TO_DEVICE, DmaDirection.FROM_DEVICE, DmaDirection.BIDIRECTIONAL)
SEED_ATTRS = {
    Attr.RW: "wb-wa",
    Attr.READ: "wb-wa",
    Attr.RW | Attr.WT: "wt",
    Attr.RW | Attr.NONCACHED: "nc",
}
SEED_PAGES = (1, 16, 256, 257)
#: Records taken down by one rule: streaming mappings, coherent buffers, attachments.
TAKE_DOWN = ("dma", "coherent", "attachment")
#: 0: no injection; n: the step's n-th allocation fails.
FAIL = st.sampled_from((0, 0, 0, 1, 2, 3, 5))


@dataclass
class Expect:
    """Pages one mapping should put in one table: ``pages[i]`` at ``va + i*PAGE``."""

    table: tuple[object, ...]
    va: int
    pages: list[int]
    write: bool
    memtype: str
    space: object

    @property
    def user(self) -> bool:
        return self.table[0] == "user"


@dataclass
class Record:
    """A live mapping the model made: what it expects, how to take it down, and where
    a device may write through it (``(device, address, physical address)``)."""

    kind: str
    expects: list[Expect]
    undo: Callable[[], None]
    write_at: tuple[Any, int, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _pages(chunks: Any, npages: int | None = None) -> list[int]:
    out = [p for c in chunks for p in range(c.start, c.end, PAGE)]
    return out if npages is None else out[:npages]


class StackMachine(RuleBasedStateMachine):
    def __init__(self, booted: Callable[..., Any], decoders: tuple[Any, Any]) -> None:
        super().__init__()
        self.stack = booted()
        self.short, self.long = decoders
        self.records: dict[int, Record] = {}
        self.tokens = itertools.count()
        self.allocs: dict[int, dict[str, Any]] = {}  # seed allocations: physmem, attr, users
        self.bufs: list[dict[str, Any]] = []  # exported dma-bufs
        self.fail = 0

    # -- set-up -------------------------------------------------------------------------------

    @initialize()
    def boot(self) -> None:
        st_, s = self.stack, self.stack.system
        self.seed_vcms = [s.vcm_create(0x1000_0000, 0x1000_0000) for _ in range(2)]
        s.vcm_activate(s.vcm_assoc(self.seed_vcms[0], "vcodec_stream", 0))  # [1] stays idle
        self.vmm = s.vcm_create_from_prebuilt(0)
        kbufs = [s.vcm_phys_alloc("ebi", 2 * PAGE, PhysAttr.CONTIGUOUS) for _ in range(8)]
        self.kbufs = [_pages(k.chunk_ranges) for k in kbufs]
        self.procs = [st_.table.spawn(f"p{i}") for i in range(2)]
        self.memfiles = [MemFile(s, 16 * PAGE, target="contig") for _ in range(2)]
        for memfile in self.memfiles:  # a memfd lives while a descriptor holds it
            self.procs[0].open(memfile, O_RDWR)
        self.linear = [(va & _VA_MASK, pa, size) for va, pa, size in s.cpu.linear_map]
        # The only kernel mappings the model did not make: the atomic pool's alias.
        self.baseline = [
            Expect(
                ("kernel",),
                leaf.va,
                _pages([_Run(leaf.pa, leaf.size)]),
                leaf.write,
                leaf.memtype,
                "cpu",
            )
            for leaf in self.long(s.memory, s.cpu.kernel_table.root, MAIR)
            if not self._in_linear_va(leaf.va)
        ]
        self.boot_tables = s.table_memory.used_bytes
        self.boot_free = {n: t.free_bytes for n, t in s.targets.items()}

    def _in_linear_va(self, va: int) -> bool:
        return any(base <= va < base + size for base, _, size in self.linear)

    def _linear_pa(self, pa: int) -> bool:
        return any(b <= pa < b + size for _, b, size in self.linear)

    # -- helpers -------------------------------------------------------------------------------

    def attempt(self, op: Callable[[], Any], fail: int) -> Any:
        """Run a step, its ``fail``-th allocation failing; a failure changes nothing."""
        before = self.stack.state()
        try:
            with fail_nth(fail) if fail else nullcontext():
                return op()
        except VcmmError:
            assert self.stack.state() == before, "a failed step changed the state"
            return None

    def add(self, record: Record) -> None:
        self.records[next(self.tokens)] = record

    def domain_table(self, dev: str) -> tuple[tuple[object, ...], object]:
        vcm = self.stack.api.domain(dev).vcm
        return ("v7", vcm.table.root), ("vcm", vcm.id)

    def pick(self, kinds: tuple[str, ...], i: int) -> tuple[int, Record] | None:
        found = [(t, r) for t, r in self.records.items() if r.kind in kinds]
        return found[i % len(found)] if found else None

    # -- the seed's calls --------------------------------------------------------------------------

    @rule(
        where=st.integers(0, 2),
        npages=st.sampled_from(SEED_PAGES),
        attr=st.sampled_from(tuple(SEED_ATTRS)),
        pool=st.sampled_from(("blocks", "contig")),
        fail=FAIL,
    )
    def seed_map(self, where: int, npages: int, attr: Attr, pool: str, fail: int) -> None:
        s = self.stack.system

        def op() -> tuple[Any, Any]:
            physmem = s.vcm_phys_alloc(pool, npages * PAGE, PhysAttr.NONE)
            try:
                return physmem, self._seed_back(where, physmem, attr)
            except BaseException:
                s.vcm_phys_free(physmem)
                raise

        done = self.attempt(op, fail)
        if done is not None:
            physmem, token = done
            self.allocs[physmem.id] = {"physmem": physmem, "attr": attr, "users": {token}}

    def _seed_back(self, where: int, physmem: Any, attr: Attr) -> int:
        s = self.stack.system
        vcm = self.vmm if where == 2 else self.seed_vcms[where]
        res = s.vcm_reserve(vcm, physmem.size, attr)
        try:
            s.vcm_back(res, physmem)
        except BaseException:
            s.vcm_unreserve(res)
            raise
        if where == 2:
            table, va, space = ("kernel",), res.dev_addr & _VA_MASK, "cpu"
        else:
            table, va, space = ("v7", vcm.table.root), res.dev_addr, ("vcm", vcm.id)
        expect = Expect(
            table,
            va,
            _pages(physmem.chunk_ranges),
            bool(attr & Attr.WRITE),
            SEED_ATTRS[attr],
            space,
        )

        def undo() -> None:
            s.vcm_unback(res)
            s.vcm_unreserve(res)

        dev = s.device("vcodec_stream") if where == 0 and attr & Attr.WRITE else None
        token = next(self.tokens)
        write_at = (dev, res.dev_addr, expect.pages[0]) if dev is not None else None
        self.records[token] = Record(
            "seed", [expect], undo, write_at, {"physmem": physmem.id, "where": where}
        )
        return token

    @precondition(lambda self: self.allocs)
    @rule(
        i=st.integers(0, 99),
        where=st.integers(0, 2),
        attr=st.sampled_from(tuple(SEED_ATTRS)),
        fail=FAIL,
    )
    def seed_alias(self, i: int, where: int, attr: Attr, fail: int) -> None:
        """A second mapping of a seed allocation; another memory type must be refused."""
        alloc = list(self.allocs.values())[i % len(self.allocs)]
        physmem = alloc["physmem"]
        token = self.attempt(lambda: self._seed_back(where, physmem, attr), fail)
        if token is not None:
            assert SEED_ATTRS[attr] == SEED_ATTRS[alloc["attr"]], "a conflicting alias was accepted"
            alloc["users"].add(token)
        elif SEED_ATTRS[attr] != SEED_ATTRS[alloc["attr"]] and not fail:
            before = self.stack.state()
            try:
                self._seed_back(where, physmem, attr)
            except AttributeConflictError:
                assert self.stack.state() == before
            else:
                raise AssertionError("a conflicting alias was accepted")

    @precondition(lambda self: any(r.kind == "seed" for r in self.records.values()))
    @rule(i=st.integers(0, 99), fail=FAIL)
    def seed_unmap(self, i: int, fail: int) -> None:
        picked = self.pick(("seed",), i)
        assert picked is not None
        token, record = picked
        alloc = self.allocs[record.extra["physmem"]]
        last = alloc["users"] == {token}

        def op() -> bool:
            record.undo()
            if last:
                self.stack.system.vcm_phys_free(alloc["physmem"])
            return True

        if self.attempt(op, fail):
            del self.records[token]
            alloc["users"].discard(token)
            if last:
                del self.allocs[alloc["physmem"].id]

    # -- the DMA API ----------------------------------------------------------------------------

    @rule(
        dev=st.sampled_from(DEVICES),
        k=st.integers(0, 7),
        offset=st.sampled_from((0, 0x100)),
        npages=st.integers(1, 2),
        direction=st.sampled_from(DIRECTIONS),
        fail=FAIL,
    )
    def map_page(
        self, dev: str, k: int, offset: int, npages: int, direction: DmaDirection, fail: int
    ) -> None:
        api, pages = self.stack.api, self.kbufs[k]
        size = npages * PAGE - offset

        def op() -> int:
            handle = api.map_page(dev, pages[0], offset, size, direction)
            if handle == DMA_MAPPING_ERROR:
                raise api.last_error  # type: ignore[misc]
            return int(handle)

        handle = self.attempt(op, fail)
        if handle is None:
            return
        table, space = self.domain_table(dev)
        write = direction is not DmaDirection.TO_DEVICE
        expect = Expect(table, handle - offset, pages[:npages], write, "wb-wa", space)
        device = self.stack.system.device(dev)
        self.add(
            Record(
                "dma",
                [expect],
                lambda: api.unmap_page(dev, handle, size, direction),
                (device, handle - offset, pages[0]) if write else None,
            )
        )

    @rule(
        dev=st.sampled_from(DEVICES),
        ks=st.lists(st.integers(0, 7), min_size=1, max_size=6),
        direction=st.sampled_from(DIRECTIONS),
        fail=FAIL,
    )
    def map_sg(self, dev: str, ks: list[int], direction: DmaDirection, fail: int) -> None:
        api = self.stack.api
        entries = [(self.kbufs[k][i % 2], PAGE) for i, k in enumerate(ks)]
        sgl = ScatterList(entries)

        def op() -> int:
            if api.map_sg(dev, sgl, len(entries), direction) == 0:
                raise api.last_error  # type: ignore[misc]
            return int(sgl[0].dma_address)

        base = self.attempt(op, fail)
        if base is None:
            return
        table, space = self.domain_table(dev)
        write = direction is not DmaDirection.TO_DEVICE
        expect = Expect(table, base, [pa for pa, _ in entries], write, "wb-wa", space)
        device = self.stack.system.device(dev)
        self.add(
            Record(
                "dma",
                [expect],
                lambda: api.unmap_sg(dev, sgl, len(entries), direction),
                (device, base, entries[0][0]) if write else None,
            )
        )

    @rule(dev=st.sampled_from(DEVICES), npages=st.integers(1, 4), atomic=st.booleans(), fail=FAIL)
    def alloc_coherent(self, dev: str, npages: int, atomic: bool, fail: int) -> None:
        api = self.stack.api
        buf = self.attempt(lambda: api.alloc_coherent(dev, npages * PAGE, atomic=atomic), fail)
        if buf is None:
            return
        table, space = self.domain_table(dev)
        pages = _pages(buf.chunks)
        expects = [Expect(table, buf.dma_handle, pages, True, "nc", space)]
        if not atomic:  # the atomic pool's alias is there from boot
            expects.append(Expect(("kernel",), buf.cpu_addr & _VA_MASK, pages, True, "nc", "cpu"))
        device = self.stack.system.device(dev)
        self.add(
            Record(
                "coherent",
                expects,
                lambda: api.free_coherent(dev, buf.size, buf.cpu_addr, buf.dma_handle),
                (device, buf.dma_handle, pages[0]),
            )
        )

    @precondition(lambda self: any(r.kind in TAKE_DOWN for r in self.records.values()))
    @rule(i=st.integers(0, 99), fail=FAIL)
    def take_down(self, i: int, fail: int) -> None:
        """Unmap a streaming mapping, free a coherent buffer, or unmap and detach an
        attachment."""
        picked = self.pick(TAKE_DOWN, i)
        assert picked is not None
        token, record = picked
        if self.attempt(lambda: record.undo() or True, fail):
            del self.records[token]

    # -- dma-bufs and processes -------------------------------------------------------------------

    @precondition(lambda self: len(self.bufs) < 4)
    @rule(npages=st.integers(1, 5), fail=FAIL)
    def export(self, npages: int, fail: int) -> None:
        s, exporter = self.stack.system, self.stack.exporter

        def op() -> Any:
            physmem = s.vcm_phys_alloc("ebi", npages * PAGE, PhysAttr.NONE)
            return physmem, exporter.export(physmem, owned=True)

        done = self.attempt(op, fail)
        if done is not None:
            physmem, dmabuf = done
            self.bufs.append({"dmabuf": dmabuf, "pages": _pages(physmem.chunk_ranges)})

    @precondition(lambda self: self.bufs)
    @rule(
        i=st.integers(0, 99),
        dev=st.sampled_from(DEVICES),
        direction=st.sampled_from(DIRECTIONS),
        fail=FAIL,
    )
    def attach_and_map(self, i: int, dev: str, direction: DmaDirection, fail: int) -> None:
        buf = self.bufs[i % len(self.bufs)]
        dmabuf = buf["dmabuf"]

        def op() -> Any:
            att = dmabuf.attach(dev)
            try:
                return att, att.map(direction)
            except BaseException:
                att.detach()
                raise

        done = self.attempt(op, fail)
        if done is None:
            return
        att, sg = done
        table, space = self.domain_table(dev)
        write = direction is not DmaDirection.TO_DEVICE
        expect = Expect(table, sg.dma_address, buf["pages"], write, "wb-wa", space)
        device = self.stack.system.device(dev)

        def undo() -> None:
            att.unmap(sg)
            att.detach()

        self.add(
            Record(
                "attachment",
                [expect],
                undo,
                (device, sg.dma_address, buf["pages"][0]) if write else None,
            )
        )

    @rule(p=st.integers(0, 1), i=st.integers(0, 99), writable=st.booleans(), fail=FAIL)
    def mmap(self, p: int, i: int, writable: bool, fail: int) -> None:
        """A process maps a dma-buf (kernel RAM) or a memfd in a carve-out."""
        proc = self.procs[p]
        sources = [(b["dmabuf"].file, b["pages"]) for b in self.bufs]
        sources += [(m, _pages(m.physmem.chunk_ranges)) for m in self.memfiles]
        file, pages = sources[i % len(sources)]
        prot = PROT_READ | (PROT_WRITE if writable else 0)

        def op() -> int:
            fd = proc.open(file, O_RDWR)
            try:
                return int(proc.mmap(len(pages) * PAGE, prot, MAP_SHARED, fd))
            finally:
                proc.close(fd)

        va = self.attempt(op, fail)
        if va is None:
            return
        memtype = "wb-wa"
        expect = Expect(
            ("user", proc.asid), va, list(pages), writable, memtype, ("proc", proc.asid)
        )
        self.add(Record("user", [expect], lambda: None, extra={"proc": proc}))

    @precondition(lambda self: any(r.kind == "user" for r in self.records.values()))
    @rule(i=st.integers(0, 99), first=st.integers(0, 15), count=st.integers(1, 16), fail=FAIL)
    def munmap(self, i: int, first: int, count: int, fail: int) -> None:
        """Unmap some pages of a user mapping (a middle part splits it in two)."""
        picked = self.pick(("user",), i)
        assert picked is not None
        token, record = picked
        (expect,) = record.expects
        n = len(expect.pages)
        first %= n
        count = min(count, n - first)
        proc = record.extra["proc"]
        start = expect.va + first * PAGE
        if self.attempt(lambda: proc.munmap(start, count * PAGE) or True, fail) is None:
            return
        del self.records[token]
        for lo, hi in ((0, first), (first + count, n)):
            if hi > lo:
                part = Expect(
                    expect.table,
                    expect.va + lo * PAGE,
                    expect.pages[lo:hi],
                    expect.write,
                    expect.memtype,
                    expect.space,
                )
                self.add(Record("user", [part], lambda: None, extra={"proc": proc}))

    # -- the check -----------------------------------------------------------------------------

    def expected(self) -> dict[tuple[object, ...], tuple[object, ...]]:
        expects = [e for r in self.records.values() for e in r.expects] + self.baseline
        spaces: dict[int, set[object]] = {}
        for e in expects:
            for pa in e.pages:
                spaces.setdefault(pa, set()).add(e.space)
        out: dict[tuple[object, ...], tuple[object, ...]] = {}
        for e in expects:
            for n, pa in enumerate(e.pages):
                shared = len(spaces[pa]) >= 2 or self._linear_pa(pa)
                key = (*e.table, e.va + n * PAGE)
                assert key not in out, f"the model maps {key} twice"
                out[key] = (pa, e.write, e.user, e.memtype, shared, True, not e.user)
        return out

    def decoded(self) -> dict[tuple[object, ...], tuple[object, ...]]:
        s = self.stack.system
        tables: list[tuple[tuple[object, ...], list[Any]]] = []
        for vcm in [*self.seed_vcms, *(d.vcm for d in self.stack.api.domains.values())]:
            tables.append((("v7", vcm.table.root), self.short(s.memory, vcm.table.root)))
        kernel = self.long(s.memory, s.cpu.kernel_table.root, MAIR)
        for leaf in kernel:
            if self._in_linear_va(leaf.va):  # the linear map: __va(pa) = pa - PHYS + PAGE
                base, pa, _ = next(w for w in self.linear if w[0] <= leaf.va < w[0] + w[2])
                assert leaf.pa == pa + (leaf.va - base)
                assert (leaf.write, leaf.user, leaf.memtype, leaf.shareable, leaf.ns) == (
                    True,
                    False,
                    "wb-wa",
                    True,
                    True,
                )
        tables.append((("kernel",), [leaf for leaf in kernel if not self._in_linear_va(leaf.va)]))
        for proc in self.procs:
            root = s.cpu.address_space(proc.asid).root
            tables.append((("user", proc.asid), self.long(s.memory, root, MAIR)))
        out: dict[tuple[object, ...], tuple[object, ...]] = {}
        for key, leaves in tables:
            for leaf in leaves:
                attrs = (leaf.write, leaf.user, leaf.memtype, leaf.shareable, leaf.ns, leaf.global_)
                for off in range(0, leaf.size, PAGE):
                    out[(*key, leaf.va + off)] = (leaf.pa + off, *attrs)
        return out

    @invariant()
    def every_leaf_is_the_models(self) -> None:
        if not hasattr(self, "procs"):
            return
        expected, decoded = self.expected(), self.decoded()
        missing = sorted(set(expected) - set(decoded), key=str)[:3]
        stray = sorted(set(decoded) - set(expected), key=str)[:3]
        assert not missing and not stray, f"missing {missing}, stray {stray}"
        for key, want in expected.items():
            assert decoded[key] == want, f"{key}: table has {decoded[key]}, model wants {want}"

    @invariant()
    def devices_write_where_the_model_says(self) -> None:
        """Every device writes a fresh tag through each of its writable mappings and
        it lands on the model's page: a table or a stale IOTLB entry pointing
        elsewhere shows here (the writes also fill the IOTLBs for later steps)."""
        memory = self.stack.system.memory
        for record in self.records.values():
            if record.write_at is not None:
                device, addr, pa = record.write_at
                tag = next(self.tokens).to_bytes(8, "little")
                device.write(addr, tag)
                assert memory.read(pa, 8) == tag, f"{device.name} wrote {addr:#x} elsewhere"

    @invariant()
    def every_context_runs_its_table(self) -> None:
        if not hasattr(self, "procs"):
            return
        s = self.stack.system
        wanted = {"vcodec_stream": self.seed_vcms[0].table.root}
        for dev in DEVICES:
            domain = self.stack.api.domain(dev)
            if domain is not None:
                wanted[dev] = domain.vcm.table.root
        tables = {e.table for r in self.records.values() for e in r.expects}
        for name, root in wanted.items():
            ctx = s.device(name).ctx
            regs = ctx.smmu.bank_registers(ctx.bank) if ctx.is_bound else None
            enabled = regs is not None and regs.enabled
            # A device with a live mapping runs its table; an enabled bank runs no other.
            if ("v7", root) in tables or name == "vcodec_stream":
                assert enabled, name
            if regs is not None and enabled:
                assert regs.ttbr0 & ~0x3FFF == root, name

    def teardown(self) -> None:
        if not hasattr(self, "procs"):
            return
        s = self.stack.system
        for token in sorted(self.records, reverse=True):
            record = self.records.pop(token)
            if record.kind == "user":
                (e,) = record.expects
                record.extra["proc"].munmap(e.va, len(e.pages) * PAGE)
            else:
                record.undo()
        for alloc in self.allocs.values():
            s.vcm_phys_free(alloc["physmem"])
        for buf in self.bufs:
            buf["dmabuf"].put()
        # Unmaps keep the tables they emptied, as Linux's io-pgtable does, while a VCM
        # lives: give those back (a table still mapping something stays), then nothing
        # is left over (the DMA API may even give back what it set up at boot).
        for vcm in s.vcms:
            if vcm.table is not None:
                vcm.table.release_empty([pa for pa, _ in vcm.table.table_pages()])
        assert s.table_memory.used_bytes <= self.boot_tables
        assert all(t.free_bytes >= self.boot_free[n] for n, t in s.targets.items())


@dataclass(frozen=True)
class _Run:
    start: int
    size: int

    @property
    def end(self) -> int:
        return self.start + self.size


def test_every_layer_at_once_against_the_model(booted, decoders) -> None:
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(
        lambda: StackMachine(booted, decoders),
        settings=settings(
            max_examples=12,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
