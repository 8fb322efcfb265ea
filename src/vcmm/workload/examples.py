"""The examples shipped inside the package, and which file a name on a command line means.

``vcmm run video_1080p`` may mean a file the user has (``./video_1080p.toml``) or the
packaged example of that name.  A file that exists always wins: a user who copied
and edited an example must get their copy, not silently the original.  The packaged
files can be listed (with their paths) and printed, so they can be copied.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Final

from vcmm.errors import NotFoundError
from vcmm.platform.toml_table import suggest

#: Folders inside the ``vcmm`` package holding the examples, by kind.
FOLDERS: Final = {"scenario": "scenarios", "platform": "platforms"}


@dataclass(frozen=True)
class Example:
    """One packaged scenario or platform file."""

    kind: str
    name: str
    description: str
    resource: Traversable

    @property
    def path(self) -> str:
        """Where the file is installed (for people to find and copy it)."""
        return str(self.resource)

    def text(self) -> str:
        return self.resource.read_text(encoding="utf-8")


def examples(kind: str | None = None) -> list[Example]:
    """Packaged examples of ``kind`` (``scenario``, ``platform``, or both), by name."""
    out: list[Example] = []
    for what, folder_name in FOLDERS.items():
        if kind is not None and what != kind:
            continue
        folder = resources.files("vcmm").joinpath(folder_name)
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".toml"):
                data = tomllib.loads(entry.read_text("utf-8"))
                description = " ".join(str(data.get("description", "")).split())
                out.append(Example(what, entry.name.removesuffix(".toml"), description, entry))
    return out


def example(name: str, kind: str | None = None) -> Example:
    """The packaged example called ``name``; a :class:`NotFoundError` lists them."""
    found = examples(kind)
    for item in found:
        if item.name == name:
            return item
    names = [item.name for item in found]
    raise NotFoundError(
        f"no packaged {kind or 'scenario or platform'} named {name!r}{suggest(name, names)}; "
        f"packaged: {', '.join(names) or 'none'}"
    )


def local_file(name: str, base_dir: Path | None = None) -> Path | None:
    """The existing file ``name`` means, if any: the path as given, or for a bare name
    (no extension) that name plus ``.toml``; relative paths start at ``base_dir``."""
    path = Path(name)
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    if path.is_file():
        return path
    with_suffix = path.with_name(path.name + ".toml")
    if not path.suffix and with_suffix.is_file():
        return with_suffix
    return None
