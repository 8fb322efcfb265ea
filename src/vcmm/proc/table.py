"""The process table: spawning processes (pid, ASID) and the namespace of paths.

Paths stand in for the file system: a /dev node or any other :class:`File` is
registered under a path and processes ``open`` it by name.  The sharing layer
registers its device nodes (``/dev/vcodec_a_mm1`` ...) here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from vcmm.core.interfaces import VcmmApi
from vcmm.errors import InvalidArgumentError, NotFoundError, OutOfMemoryError, StateError
from vcmm.hw.cpu import MAX_ASID
from vcmm.proc.file import File
from vcmm.proc.process import MMAP_WINDOW, Process
from vcmm.undo import Transaction

#: A registered path resolves to a File, or to a factory making one per open.
PathEntry = File | Callable[[], File]
#: A mounted directory: the names in it now, and the File a name stands for (or None).
Lister = Callable[[], Iterable[str]]
Resolver = Callable[[str], File | None]


class ProcessTable:
    """Every process of one :class:`~vcmm.System`, and the paths they can open.

    ``anon_target`` is the memory target anonymous mappings take pages from (by
    default the platform's kernel RAM, ``system.memory_roles.kernel``, which is in the
    cacheable linear map).
    """

    def __init__(self, system: VcmmApi, *, anon_target: str | None = None) -> None:
        if anon_target is None:
            anon_target = str(system.memory_roles.kernel)
        system.target(anon_target)
        self.system = system
        self.anon_target = anon_target
        self._procs: dict[int, Process] = {}
        self._paths: dict[str, PathEntry] = {}
        self._mounts: dict[str, tuple[Lister, Resolver]] = {}
        self._next_pid = 1

    @property
    def processes(self) -> list[Process]:
        return [self._procs[p] for p in sorted(self._procs)]

    def spawn(self, name: str = "proc") -> Process:
        """A new process with an empty address space under a free ASID.

        The address space is the CPU's TTBR0 table for the ASID and, for the VCMM, a
        user VCM over :data:`MMAP_WINDOW` (labelled ``pid<N>`` in the mapping graph),
        associated with the CPU and active while the process lives.
        """
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"spawn: name {name!r} must be a non-empty string")
        used = {p.asid for p in self._procs.values()}
        asid = next((a for a in range(1, MAX_ASID + 1) if a not in used), None)
        if asid is None:
            raise OutOfMemoryError(f"spawn: all {MAX_ASID} ASIDs are in use")
        system = self.system
        pid = self._next_pid
        with Transaction("spawn", boundary=True) as txn:
            system.cpu.create_address_space(asid)
            txn.on_undo(system.cpu.destroy_address_space, asid)
            vcm = system.vcm_create_from_prebuilt(asid, label=f"pid{pid}", window=MMAP_WINDOW)
            txn.on_undo(system.vcm_free, vcm)
            assoc = system.vcm_assoc(vcm, system.cpu)
            txn.on_undo(system.vcm_deassoc, assoc)
            system.vcm_activate(assoc)
        self._next_pid += 1
        proc = Process(self, pid, asid, name, vcm, assoc)
        self._procs[pid] = proc
        return proc

    def forget(self, proc: Process) -> None:
        """Drop an exited process from the table (called by the process itself)."""
        self._procs.pop(proc.pid, None)

    def register(self, path: str, entry: PathEntry) -> None:
        """Make ``path`` openable; ``entry`` is a File or a factory called per open."""
        if not isinstance(path, str) or not path.startswith("/"):
            raise InvalidArgumentError(f"register: path {path!r} must be absolute")
        if not (isinstance(entry, File) or callable(entry)):
            raise InvalidArgumentError(f"register: {entry!r} is not a File or a factory")
        if path in self._paths:
            raise StateError(f"register: {path} is already registered")
        self._paths[path] = entry

    def mount(self, directory: str, names: Lister, resolve: Resolver) -> None:
        """Make ``directory`` a directory whose entries are asked for at each lookup
        (``/dev/dma_heap``: one node per memory target, targets registered later too):
        ``names()`` lists them, ``resolve(name)`` gives the File or None."""
        if not isinstance(directory, str) or not directory.startswith("/"):
            raise InvalidArgumentError(f"mount: directory {directory!r} must be absolute")
        directory = directory.rstrip("/")
        if not (callable(names) and callable(resolve)):
            raise InvalidArgumentError(f"mount {directory}: names and resolve must be callable")
        if directory in self._mounts:
            raise StateError(f"mount: {directory} is already mounted")
        self._mounts[directory] = (names, resolve)

    def listdir(self, directory: str) -> list[str]:
        """The entries of a mounted directory, or of registered paths under it, sorted."""
        directory = directory.rstrip("/")
        found = {p[len(directory) + 1 :] for p in self._paths if p.startswith(directory + "/")}
        if directory in self._mounts:
            found.update(self._mounts[directory][0]())
        return sorted(found)

    def _mounted(self, path: str) -> File | None:
        directory, _, name = path.rpartition("/")
        mounted = self._mounts.get(directory)
        return mounted[1](name) if mounted is not None and name else None

    def unregister(self, path: str) -> None:
        if path not in self._paths:
            raise NotFoundError(f"unregister: {path} is not registered")
        del self._paths[path]

    def lookup(self, path: str) -> File:
        """The File a path names (a factory is called to make one)."""
        if not isinstance(path, str) or not path.startswith("/"):
            raise InvalidArgumentError(f"open: path {path!r} must be absolute")
        entry = self._paths.get(path) or self._mounted(path)
        if entry is None:
            mounted = [f"{d}/{n}" for d in self._mounts for n in self._mounts[d][0]()]
            known = ", ".join(sorted([*self._paths, *mounted])) or "none"
            raise NotFoundError(f"open: no such file {path!r} (registered: {known})")
        if isinstance(entry, File):
            return entry
        made = entry()
        if not isinstance(made, File):
            raise InvalidArgumentError(f"open {path}: the factory returned {made!r}, not a File")
        return made
