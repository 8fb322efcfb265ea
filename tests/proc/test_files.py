"""File descriptors: open/close/dup/dup2, passing a descriptor to another process,
open modes, and when a file is released."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import vcmm
from vcmm import SZ_4K
from vcmm.errors import InvalidArgumentError, NotFoundError, StateError
from vcmm.proc import (
    MAP_PRIVATE,
    MAP_SHARED,
    O_RDONLY,
    O_RDWR,
    O_WRONLY,
    PROT_READ,
    PROT_WRITE,
    BadFileDescriptorError,
    File,
    MemFile,
    OpenFile,
    PermissionDeniedError,
    ProcessTable,
)


class Recorder(File):
    """Counts releases, so the lifetime rules can be observed."""

    def __init__(self, name: str = "rec", *, writable: bool = True) -> None:
        super().__init__(name)
        self.writable = writable
        self.released: list[int] = []

    def release(self, description: OpenFile) -> None:
        self.released.append(description.id)


def test_descriptors_are_the_lowest_free_numbers(table: ProcessTable) -> None:
    proc = table.spawn()
    f = Recorder()
    assert [proc.open(f) for _ in range(3)] == [0, 1, 2]
    proc.close(1)
    assert proc.open(f) == 1
    assert f.open_count == 3


def test_dup_shares_the_description_and_release_waits_for_the_last(table: ProcessTable) -> None:
    proc = table.spawn()
    f = Recorder()
    fd = proc.open(f, O_RDONLY)
    copy = proc.dup(fd)
    assert copy == 1 and proc.file(copy) is proc.file(fd)
    assert proc.file(fd).refs == 2 and proc.file(fd).mode is O_RDONLY
    proc.close(fd)
    assert f.released == []
    proc.close(copy)
    assert len(f.released) == 1 and f.open_count == 0


def test_dup2_replaces_and_releases_what_the_target_held(table: ProcessTable) -> None:
    proc = table.spawn()
    a, b = Recorder("a"), Recorder("b")
    fa, fb = proc.open(a), proc.open(b)
    assert proc.dup2(fa, fb) == fb
    assert proc.file(fb).file is a and len(b.released) == 1
    assert proc.dup2(fa, 7) == 7 and proc.file(7).file is a
    assert proc.dup2(fa, fa) == fa


def test_passing_a_descriptor_shares_the_description(
    system: vcmm.System, table: ProcessTable
) -> None:
    sender, receiver = table.spawn("sender"), table.spawn("receiver")
    mem = MemFile(system, 2 * SZ_4K)
    fd = sender.open(mem)
    theirs = sender.send_fd(fd, receiver)
    assert receiver.file(theirs) is sender.file(fd)
    sender.close(fd)  # the receiver's descriptor keeps the file open
    assert not mem.freed
    va = receiver.mmap(SZ_4K, PROT_READ | PROT_WRITE, MAP_SHARED, theirs)
    receiver.write(va, b"passed")
    assert receiver.read(va, 6) == b"passed"
    receiver.close(theirs)
    assert not mem.freed  # the mapping holds the description
    receiver.munmap(va, SZ_4K)
    assert mem.freed


def test_open_modes_are_enforced(system: vcmm.System, table: ProcessTable, state: Callable) -> None:
    proc = table.spawn()
    readonly = Recorder("ro", writable=False)
    mem = MemFile(system, SZ_4K)
    before = state()
    with pytest.raises(PermissionDeniedError, match="read-only"):
        proc.open(readonly, O_RDWR)
    wr = proc.open(mem, O_WRONLY)
    ro = proc.open(mem, O_RDONLY)
    mid = state()
    with pytest.raises(PermissionDeniedError, match="readable descriptor"):
        proc.mmap(SZ_4K, PROT_READ, MAP_SHARED, wr)
    with pytest.raises(PermissionDeniedError, match="open it O_RDWR"):
        proc.mmap(SZ_4K, PROT_READ | PROT_WRITE, MAP_SHARED, ro)
    with pytest.raises(InvalidArgumentError, match="copy-on-write"):
        proc.mmap(SZ_4K, PROT_READ | PROT_WRITE, MAP_PRIVATE, ro)
    assert state() == mid
    va = proc.mmap(SZ_4K, PROT_READ, MAP_PRIVATE, ro)  # read-only private is fine
    assert proc.read(va, 4) == bytes(4)
    assert isinstance(PermissionDeniedError("x"), PermissionError)
    assert before != mid  # sanity: opening changed the tables


def test_bad_descriptors(table: ProcessTable, state: Callable) -> None:
    proc, other = table.spawn(), table.spawn()
    before = state()
    for call in (
        lambda: proc.close(3),
        lambda: proc.dup(-1),
        lambda: proc.send_fd(0, other),
        lambda: proc.mmap(SZ_4K, PROT_READ, MAP_SHARED, 5),
    ):
        with pytest.raises(BadFileDescriptorError):
            call()
    assert issubclass(BadFileDescriptorError, NotFoundError)
    with pytest.raises(InvalidArgumentError):
        proc.open("relative/path")  # type: ignore[arg-type]
    with pytest.raises(NotFoundError, match="no such file"):
        proc.open("/dev/nothing")
    assert state() == before


def test_paths_name_files_and_factories(table: ProcessTable) -> None:
    shared = Recorder("shared")
    table.register("/dev/shared", shared)
    made: list[Recorder] = []
    table.register("/dev/per-open", lambda: made.append(Recorder("p")) or made[-1])
    proc = table.spawn()
    assert proc.file(proc.open("/dev/shared")).file is shared
    proc.open("/dev/per-open")
    proc.open("/dev/per-open")
    assert len(made) == 2 and made[0] is not made[1]
    with pytest.raises(StateError):
        table.register("/dev/shared", shared)


def test_exit_closes_everything_and_frees_the_asid(
    system: vcmm.System, table: ProcessTable
) -> None:
    proc = table.spawn()
    f = Recorder()
    proc.open(f)
    proc.dup(0)
    asid = proc.asid
    proc.exit()
    assert len(f.released) == 1
    with pytest.raises(NotFoundError):
        system.cpu.address_space(asid)
    with pytest.raises(StateError, match="exited"):
        proc.open(f)
    assert table.spawn().asid == asid  # reused
