"""Errors of the process model that callers need to tell apart (errno-like).

Both derive from the project's hierarchy, so a generic ``except VcmmError`` still
catches them, and from the closest builtin.
"""

from __future__ import annotations

from vcmm.errors import NotFoundError, VcmmError


class PermissionDeniedError(VcmmError, PermissionError):
    """EACCES: the open mode or the file does not allow what was asked (e.g. a
    writable shared mapping through a read-only file descriptor)."""


class BadFileDescriptorError(NotFoundError):
    """EBADF: the number is not an open file descriptor of that process."""
