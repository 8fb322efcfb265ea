"""Simulated user processes: address spaces, file descriptors, mmap.

A :class:`ProcessTable` spawns :class:`Process` objects, each with its own VMSAv8-64
address space (an ASID on the CPU), a descriptor table and mappings.  Anything a
process can open is a :class:`File`; its ``mmap`` hook populates the new
:class:`Vma` with :meth:`Vma.remap`.  :class:`MemFile` is a ready-made shared-memory
file.  See docs/DMA.md ("Processes").
"""

from vcmm.proc.errors import BadFileDescriptorError, PermissionDeniedError
from vcmm.proc.file import File, OpenFile, VmaOps
from vcmm.proc.flags import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    O_RDONLY,
    O_RDWR,
    O_WRONLY,
    PROT_EXEC,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
    MapFlags,
    OpenMode,
    Prot,
)
from vcmm.proc.memfile import MemFile
from vcmm.proc.process import MMAP_WINDOW, Process
from vcmm.proc.table import ProcessTable
from vcmm.proc.usermap import UserPiece
from vcmm.proc.vma import Vma

__all__ = [
    "MAP_ANONYMOUS",
    "MAP_FIXED",
    "MAP_PRIVATE",
    "MAP_SHARED",
    "MMAP_WINDOW",
    "O_RDONLY",
    "O_RDWR",
    "O_WRONLY",
    "PROT_EXEC",
    "PROT_NONE",
    "PROT_READ",
    "PROT_WRITE",
    "BadFileDescriptorError",
    "File",
    "MapFlags",
    "MemFile",
    "OpenFile",
    "OpenMode",
    "PermissionDeniedError",
    "Process",
    "ProcessTable",
    "Prot",
    "UserPiece",
    "Vma",
    "VmaOps",
]
