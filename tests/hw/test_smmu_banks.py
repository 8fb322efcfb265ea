"""More virtual contexts than hardware banks (issue 15 item 3, seed 000 L442-531).

Contexts take turns on an SMMU's banks: activation binds a free bank, else the least
recently used idle one (its context evicted, its TLB entries invalidated and counted),
and is refused, naming the active contexts, when every bank is active.  The LRU choice
is checked against a small reference model of the rule, over random sequences.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vcmm.attrs import RW_WB, Access
from vcmm.errors import BusyError, DeviceFaultError, InvalidArgumentError, StateError
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.hw.smmu import Smmu, SmmuContext
from vcmm.hw.tablemem import TableMemory
from vcmm.hw.tlb import TLBConfig
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_4K, SZ_4M, SZ_256M

RAM = 0x8000_0000
PA = RAM + 0x0400_0000
VA = 0x0010_0000


def make_smmu(banks: int) -> Smmu:
    memory = PhysicalMemory([MemoryRegion("ddr", AddressRange(RAM, SZ_256M))])
    tables = TableMemory(memory, AddressRange(RAM, SZ_4M))
    return Smmu("smmu0", memory, tables, context_banks=banks, tlb=TLBConfig(64, 64))


def with_pages(smmu: Smmu, name: str, pages: int) -> SmmuContext:
    """A context mapping ``pages`` 4K pages at VA (tables are the context's own)."""
    ctx = smmu.context_init(name)
    ctx.update_start()
    ctx.map_range(VA, PA, pages * SZ_4K, RW_WB)
    ctx.update_done()
    return ctx


def touch(ctx: SmmuContext, pages: int) -> None:
    for i in range(pages):
        ctx.translate_access(VA + i * SZ_4K, Access.READ)


def entries_of(smmu: Smmu, bank: int) -> int:
    return sum(1 for entries in smmu.tlb.snapshot().sets for e in entries if e.tag == bank)


def test_activation_steals_the_idle_bank_and_counts_the_tlb_cost() -> None:
    smmu = make_smmu(2)
    a, b, c = (with_pages(smmu, n, 3) for n in "abc")
    a.activate()
    b.activate()
    assert (a.bank, b.bank) == (0, 1)
    touch(a, 3)  # three TLB entries tagged with bank 0
    assert entries_of(smmu, 0) == 3
    a.deactivate()
    c.activate()  # no free bank: a's idle bank 0 is taken
    assert (c.bank, a.bank, a.is_bound) == (0, None, False)
    assert entries_of(smmu, 0) == 0
    stats = smmu.bank_stats()
    assert (stats.switches, stats.invalidated) == (1, 3)
    assert a.stats().evictions == 1 and c.stats().evictions == 0
    # c sees its own tables, not a's cached translations
    assert c.translate_access(VA, Access.READ).pa == PA
    # the evicted context binds again at its next activation (b's bank, once idle)
    b.deactivate()
    a.activate()
    assert a.bank == 1 and not b.is_bound
    assert a.translate_access(VA + SZ_4K, Access.READ).pa == PA + SZ_4K


def test_all_banks_active_is_refused_naming_them_and_changes_nothing() -> None:
    smmu = make_smmu(2)
    a, b, c = (with_pages(smmu, n, 1) for n in ("vcodec", "mdp", "camera"))
    a.activate()
    b.activate()
    before = smmu.snapshot()
    with pytest.raises(BusyError, match=r"all 2 .*bank 0: 'vcodec', bank 1: 'mdp'.*'camera'"):
        c.activate()
    with pytest.raises(BusyError, match="all 2"):
        c.bind(smmu)
    assert smmu.snapshot() == before
    assert not c.is_bound and not c.is_active


def test_explicit_bank_steals_from_an_idle_holder_not_an_active_one() -> None:
    smmu = make_smmu(3)
    a, b = with_pages(smmu, "a", 1), with_pages(smmu, "b", 1)
    assert a.bind(smmu, 2) == 2
    assert b.bind(smmu, 2) == 2  # a is idle: it loses bank 2
    assert not a.is_bound and smmu.bank_stats().switches == 1
    b.activate()
    before = smmu.snapshot()
    with pytest.raises(BusyError, match=r"bank 2 is active for context 'b'.*'a'"):
        a.bind(smmu, 2)
    with pytest.raises(InvalidArgumentError, match="bank 3 does not exist"):
        a.bind(smmu, 3)
    assert smmu.snapshot() == before


def test_lru_is_the_least_recently_used_not_the_least_recently_bound() -> None:
    smmu = make_smmu(3)
    ctxs = {n: with_pages(smmu, n, 1) for n in "abcde"}
    for n in "abc":
        ctxs[n].activate()
    for n in "bac":  # used (translated, then stopped) in the order b, a, c
        touch(ctxs[n], 1)
        ctxs[n].deactivate()
    ctxs["d"].activate()
    assert ctxs["d"].bank == 1 and not ctxs["b"].is_bound  # b's bank went first
    ctxs["e"].activate()
    assert ctxs["e"].bank == 0 and not ctxs["a"].is_bound  # then a's


def test_an_activation_that_translated_nothing_is_not_a_use() -> None:
    """An upper layer that activates and undoes leaves the LRU order as it was."""
    smmu = make_smmu(2)
    a, b, c = (with_pages(smmu, n, 1) for n in "abc")
    for ctx in (a, b):
        ctx.activate()
        touch(ctx, 1)
        ctx.deactivate()
    before = smmu.snapshot()
    a.activate()
    a.deactivate()  # nothing translated in between
    after = smmu.snapshot()
    assert (after.last_used, after.bindings) == (before.last_used, before.bindings)
    c.activate()
    assert c.bank == 0  # a's bank is still the least recently used


def test_evicting_a_context_inside_its_update_bracket_keeps_its_changes() -> None:
    smmu = make_smmu(1)
    a, b = with_pages(smmu, "a", 1), with_pages(smmu, "b", 1)
    a.activate()
    a.deactivate()
    a.update_start()
    a.map(PA + SZ_4K, VA + SZ_4K, SZ_4K, RW_WB)
    b.activate()  # takes a's bank while a is between update_start and update_done
    assert a.update_done() == 0  # unbound: nothing of a left to invalidate
    b.deactivate()
    a.activate()
    assert a.translate_access(VA + SZ_4K, Access.WRITE).pa == PA + SZ_4K


def test_unbound_contexts_cannot_translate_or_unbind() -> None:
    smmu = make_smmu(1)
    a, b = with_pages(smmu, "a", 1), with_pages(smmu, "b", 1)
    a.activate()
    a.deactivate()
    b.activate()
    with pytest.raises(StateError, match="not active"):
        a.translate_access(VA, Access.READ)
    with pytest.raises(StateError, match="not bound"):
        a.unbind()
    with pytest.raises(DeviceFaultError):
        b.translate_access(VA + 8 * SZ_4K, Access.READ)  # b's own space: unmapped


# -- the rule against a reference model, over random sequences ------------------------------


@dataclass
class Model:
    """The bank rule written out plainly: free lowest first, else LRU idle."""

    banks: int
    holder: dict[int, str] = field(default_factory=dict)
    active: set[str] = field(default_factory=set)
    stamp: dict[int, int] = field(default_factory=dict)
    clock: int = 0
    switches: int = 0

    def bank_of(self, name: str) -> int | None:
        return next((b for b, h in self.holder.items() if h == name), None)

    def activate(self, name: str) -> bool:
        """False when the model refuses (every bank active)."""
        if name in self.active:
            return False
        if self.bank_of(name) is None:
            free = [b for b in range(self.banks) if b not in self.holder]
            if free:
                self.holder[free[0]] = name
            else:
                idle = [b for b, h in self.holder.items() if h not in self.active]
                if not idle:
                    return False
                victim = min(idle, key=lambda b: (self.stamp.get(b, 0), b))
                self.holder[victim] = name
                self.switches += 1
        self.active.add(name)
        return True

    def deactivate(self, name: str, used: bool) -> None:
        self.active.discard(name)
        if used:
            self.clock += 1
            bank = self.bank_of(name)
            assert bank is not None
            self.stamp[bank] = self.clock


#: "run" is a whole turn (activate, translate, deactivate): the LRU order's main input.
OPS = st.lists(
    st.tuples(st.sampled_from(["on", "off", "use", "run", "run"]), st.integers(0, 4)),
    min_size=5,
    max_size=40,
)


@settings(max_examples=40, deadline=None)
@given(OPS, st.integers(1, 3))
def test_bank_choice_matches_the_reference_model(ops: list[tuple[str, int]], banks: int) -> None:
    smmu = make_smmu(banks)
    ctxs = [with_pages(smmu, f"c{i}", 1) for i in range(5)]
    model = Model(banks)
    used: set[str] = set()
    for op, i in ops:
        ctx = ctxs[i]
        if op == "run" and not ctx.is_active and model.activate(ctx.name):
            ctx.activate()
            touch(ctx, 1)
            model.deactivate(ctx.name, True)
            ctx.deactivate()
        elif op in ("on", "run"):
            expect = model.activate(ctx.name)
            if expect:
                ctx.activate()
            else:
                with pytest.raises((BusyError, StateError)):
                    ctx.activate()
        elif op == "off" and ctx.is_active:
            model.deactivate(ctx.name, ctx.name in used)
            used.discard(ctx.name)
            ctx.deactivate()
        elif op == "use" and ctx.is_active:
            touch(ctx, 1)
            used.add(ctx.name)
        for c in ctxs:
            assert c.bank == model.bank_of(c.name), (op, i, c.name)
            assert c.is_active == (c.name in model.active)
    assert smmu.bank_stats().switches == model.switches


def test_an_idle_context_returning_to_its_bank_keeps_its_entries() -> None:
    """Same bank, same registers, nothing switched: the TLB entries survive the
    deactivate/activate pair; pointing the idle context at other tables drops them."""
    from vcmm.hw.pgtable import PageTable

    smmu = make_smmu(2)
    first, second = (PageTable(smmu.fmt, smmu.memory, smmu.table_memory) for _ in range(2))
    first.map(VA, PA, 3 * SZ_4K, RW_WB)
    second.map(VA, PA + 0x10_0000, 3 * SZ_4K, RW_WB)
    a = smmu.context_init("a")
    a.set_tables(first)
    a.activate()
    touch(a, 3)
    a.deactivate()
    a.activate()
    assert entries_of(smmu, a.bank) == 3
    misses = a.stats().tlb.misses
    touch(a, 3)
    assert a.stats().tlb.misses == misses  # all hits
    a.deactivate()
    a.set_tables(first)  # the same table again: still warm
    a.activate()
    assert entries_of(smmu, a.bank) == 3
    a.deactivate()
    a.set_tables(second)  # another table: nothing flushed it, so activation must
    a.activate()
    assert entries_of(smmu, a.bank) == 0
    assert a.translate_access(VA, Access.READ).pa == PA + 0x10_0000


def test_a_change_to_an_idle_contexts_tables_reaches_its_bank() -> None:
    smmu = make_smmu(2)
    a = with_pages(smmu, "a", 3)
    a.activate()
    touch(a, 3)
    a.deactivate()
    a.update_start()
    a.unmap(VA, SZ_4K)
    assert a.update_done() == 1  # the idle bank's entry for VA is gone
    a.activate()
    with pytest.raises(DeviceFaultError):
        a.translate_access(VA, Access.READ)
    assert a.translate_access(VA + SZ_4K, Access.READ).pa == PA + SZ_4K
