"""Size constants and the "2M+4K" notation used throughout the seed documents.

The seed writes sizes as ``SZ_2M + SZ_4K``; users of vcmm type them on command lines
and in platform files, so one parser and one formatter serve every layer.
"""

from __future__ import annotations

import re

from vcmm.errors import InvalidArgumentError

SZ_1K = 1 << 10
SZ_4K = 1 << 12
SZ_8K = 1 << 13
SZ_16K = 1 << 14
SZ_64K = 1 << 16
SZ_256K = 1 << 18
SZ_1M = 1 << 20
SZ_2M = 1 << 21
SZ_4M = 1 << 22
SZ_16M = 1 << 24
SZ_32M = 1 << 25
SZ_64M = 1 << 26
SZ_256M = 1 << 28
SZ_1G = 1 << 30
SZ_2G = 1 << 31
SZ_4G = 1 << 32

#: The four block sizes of the seed's SMMU and block pools, largest first (000 L283-292).
SEED_BLOCK_SIZES: tuple[int, ...] = (SZ_16M, SZ_1M, SZ_64K, SZ_4K)

#: Binary units: the seed's bare K/M/G (``SZ_2M``) and their IEC names (``2MiB``).
_UNITS = {"": 1, "B": 1, "K": SZ_1K, "M": SZ_1M, "G": SZ_1G, "T": 1 << 40}
_TERM = re.compile(
    r"^(?:[sS][zZ]_)?(?P<number>0[xX][0-9a-fA-F]+|\d+)\s*(?P<unit>[KMGTkmgt](?:i[bB]|I[bB])?|[bB])?$"
)
#: "2MB", "2 GB", "64kb": units that read as powers of ten (SI), refused with a hint.
_SI_TERM = re.compile(
    r"^(?:[sS][zZ]_)?(?P<number>0[xX][0-9a-fA-F]+|\d+)\s*(?P<unit>[KMGTkmgt][bB])$"
)


def _term(text: str, term: str) -> int:
    cleaned = term.strip()
    match = _TERM.match(cleaned)
    if match is not None:
        unit = (match["unit"] or "")[:1].upper()
        return int(match["number"], 0) * _UNITS[unit]
    si = _SI_TERM.match(cleaned)
    if si is not None:
        letter = si["unit"][0].upper()
        value = int(si["number"], 0) * _UNITS[letter]
        raise InvalidArgumentError(
            f"size {text!r}: {si['unit']!r} reads as a power-of-ten (SI) unit but vcmm sizes "
            f"are binary, so write {si['number']}{letter} or {si['number']}{letter}iB "
            f"({value:,} bytes)"
        )
    raise InvalidArgumentError(
        f"size {text!r}: term {cleaned!r} is not a whole number with an optional binary unit "
        "(K, M, G, T, or KiB, MiB, GiB, TiB; SZ_4K as the seed writes it)"
    )


def parse_size(text: str | int) -> int:
    """Parse ``"2M+4K"``, ``"64K"``, ``"2MiB"``, ``"0x1000"`` or ``"SZ_1M + SZ_4K"`` into
    bytes.

    Units are binary, as in the seed: ``K``/``KiB`` is 1024.  ``"2MB"`` is refused
    rather than guessed: to a reader it says 2,000,000 bytes.
    """
    if isinstance(text, bool):
        raise InvalidArgumentError(f"size {text!r} is a bool, not a size")
    if isinstance(text, int):
        if text < 0:
            raise InvalidArgumentError(f"size {text} is negative")
        return text
    if not isinstance(text, str) or not text.strip():
        raise InvalidArgumentError(f"size {text!r} is not a size string such as '2M+4K'")
    return sum(_term(text, term) for term in text.split("+"))


def format_size(n: int) -> str:
    """Render a byte count the way the seed writes it: ``2M+4K``, ``16M``, ``0``."""
    if n < 0:
        raise InvalidArgumentError(f"size {n} is negative")
    if n == 0:
        return "0"
    parts = []
    for unit, scale in (("G", SZ_1G), ("M", SZ_1M), ("K", SZ_1K)):
        if n >= scale:
            parts.append(f"{n // scale}{unit}")
            n %= scale
    if n:
        parts.append(str(n))
    return "+".join(parts)


def is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def align_down(value: int, alignment: int) -> int:
    return value - value % alignment


def align_up(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


def is_aligned(value: int, alignment: int) -> bool:
    return value % alignment == 0


def roundup_pow_of_two(n: int) -> int:
    """Smallest power of two >= n (n >= 1), as the kernel's roundup_pow_of_two."""
    if n < 1:
        raise InvalidArgumentError(f"roundup_pow_of_two needs n >= 1, got {n}")
    return 1 << (n - 1).bit_length()
