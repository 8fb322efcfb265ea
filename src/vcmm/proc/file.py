"""Files as processes see them: an object with hooks, and the open file description.

The sharing layers plug into processes through one generic object, :class:`File`,
the way Linux drivers plug into the VFS through ``struct file_operations``: a /dev
node, a dma-buf, a shared-memory file all subclass it and override the hooks they
need.  The hook that matters most here is :meth:`File.mmap`, the driver's ``mmap``:
it receives the new :class:`~vcmm.proc.vma.Vma` and must populate it with
:meth:`Vma.remap <vcmm.proc.vma.Vma.remap>` (``remap_pfn_range``), choosing the
physical pages and their memory type.  That is where ``dma_mmap_coherent`` lives.

An :class:`OpenFile` is the *description* (``struct file``): what ``open`` made, with
its mode.  File descriptors in several processes (after ``dup`` or passing the fd)
and mappings (``vma->vm_file``) refer to it; the file is released when the last of
them goes, which is what lets memory outlive the descriptor but not the mapping.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Protocol

from vcmm.errors import InvalidArgumentError, StateError
from vcmm.proc.errors import PermissionDeniedError
from vcmm.proc.flags import OpenMode

if TYPE_CHECKING:
    from vcmm.proc.vma import Vma


class VmaOps(Protocol):
    """Callbacks a file's ``mmap`` attaches to a VMA (``vm_operations_struct``).

    ``open`` runs whenever a VMA carrying these ops comes into existence (the first
    mmap and each split by a partial ``munmap``), ``close`` whenever one goes away, so
    the exporter can count live user mappings of its memory and refuse to free it
    while any exists.
    """

    def open(self, vma: Vma) -> None: ...

    def close(self, vma: Vma) -> None: ...


class MappingCount:
    """The simplest :class:`VmaOps`: counts the live VMAs carrying it, so an object
    mapped by processes can tell whether any mapping of it remains."""

    def __init__(self) -> None:
        self.count = 0

    def open(self, vma: Vma) -> None:
        self.count += 1

    def close(self, vma: Vma) -> None:
        self.count -= 1


class File:
    """Base of everything a process can open.  Subclasses override the hooks.

    The hooks are called per open file description, as Linux calls a driver's
    ``open``/``release`` per ``struct file``: :meth:`open` may refuse a mode (a
    read-only object refuses ``O_RDWR``, EACCES), :meth:`release` runs when that
    description's last holder (descriptor or mapping) is gone.  ``open_count`` is the
    number of live descriptions.
    """

    readable: bool = True
    writable: bool = True

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"file name {name!r} must be a non-empty string")
        self.name = name
        self.open_count = 0

    def open(self, description: OpenFile) -> None:
        """Accept or refuse a new description (called before it exists for anyone)."""
        mode = description.mode
        if mode.readable and not self.readable:
            raise PermissionDeniedError(f"open {self.name}: it cannot be opened for reading")
        if mode.writable and not self.writable:
            raise PermissionDeniedError(
                f"open {self.name} with {mode.name}: it is read-only; open it O_RDONLY"
            )

    def mmap(self, vma: Vma) -> None:
        """Populate ``vma`` (call ``vma.remap``) or raise; default: not mappable."""
        raise InvalidArgumentError(f"mmap of {self.name}: this file cannot be mapped (ENODEV)")

    def release(self, description: OpenFile) -> None:
        """The last holder (descriptor or mapping) of ``description`` went away."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} open={self.open_count}>"


_description_ids = itertools.count(1)


class OpenFile:
    """An open file description: the file, its mode, and how many holders it has.

    Holders are file descriptors (in any process, after ``dup`` or fd passing) and
    mappings.  :meth:`put` by the last holder releases the description.
    """

    def __init__(self, file: File, mode: OpenMode) -> None:
        self.id = next(_description_ids)
        self.file = file
        self.mode = mode
        self.refs = 0
        self.closed = False

    @classmethod
    def open(cls, file: File, mode: OpenMode) -> OpenFile:
        """Create a description with one holder, after the file accepted it."""
        if not isinstance(file, File):
            raise InvalidArgumentError(f"open: {file!r} is not a File")
        description = cls(file, mode)
        file.open(description)
        file.open_count += 1
        description.refs = 1
        return description

    def get(self) -> OpenFile:
        if self.closed:
            raise StateError(f"{self.file.name}: the file description was already released")
        self.refs += 1
        return self

    def put(self) -> None:
        if self.refs <= 0:
            raise StateError(f"{self.file.name}: file description has no holders left")
        self.refs -= 1
        if self.refs == 0:
            self.closed = True
            self.file.open_count -= 1
            self.file.release(self)

    def __repr__(self) -> str:
        return f"<OpenFile {self.file.name} {self.mode.name} refs={self.refs}>"
