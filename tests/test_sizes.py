"""Sizes as people type them: the seed's notation and IEC units; SI units refused.

The seed writes ``SZ_2M + SZ_4K`` and means 2 MiB + 4 KiB; IEC 80000-13 spells the
same binary units KiB, MiB, GiB, TiB.  "2MB" reads as 2,000,000 bytes to many people
(and to disk vendors), so vcmm refuses to guess and names the binary spelling.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vcmm.errors import InvalidArgumentError
from vcmm.sizes import parse_size
from vcmm.workload.scenario import ScenarioError, load_scenario

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SZ_2M + SZ_4K", 2 * MiB + 4 * KiB),  # the seed (000 L335-373)
        ("SZ_1K", KiB),
        ("2M+4K", 2 * MiB + 4 * KiB),
        ("64k", 64 * KiB),
        ("2MiB", 2 * MiB),
        ("2 MiB", 2 * MiB),
        ("1GiB + 512KiB", GiB + 512 * KiB),
        ("1TiB", 1 << 40),
        ("4096B", 4096),
        ("4096", 4096),
        ("0x1000", 4096),
        ("0x10K", 16 * KiB),
    ],
)
def test_the_seed_notation_and_iec_units_are_accepted(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "spelling"),
    [
        ("2MB", "write 2M or 2MiB (2,097,152 bytes)"),
        ("2 GB", "write 2G or 2GiB (2,147,483,648 bytes)"),
        ("64kb", "write 64K or 64KiB (65,536 bytes)"),
        ("1M+4KB", "write 4K or 4KiB (4,096 bytes)"),
    ],
)
def test_si_looking_units_are_refused_with_the_iec_spelling(text: str, spelling: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        parse_size(text)
    message = str(info.value)
    assert message.startswith(f"size {text!r}: ") and "power-of-ten (SI)" in message
    assert spelling in message


@pytest.mark.parametrize("text", ["2.5M", "2Mi", "2 M B", "2XB", "M", "-4K"])
def test_other_malformed_sizes_name_the_units_allowed(text: str) -> None:
    with pytest.raises(InvalidArgumentError, match=r"KiB, MiB, GiB, TiB"):
        parse_size(text)


def test_a_scenario_buffer_of_2mb_is_refused_naming_file_key_and_spelling(tmp_path: Path) -> None:
    path = tmp_path / "si.toml"
    path.write_text(
        '[[buffers]]\nname = "b"\nsize = "2MB"\n'
        '[[steps]]\ndevice = "mdp"\nbuffer = "b"\naccess = "read"\n',
        encoding="utf-8",
    )
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert info.value.key == "buffers[0].size" and "write 2M or 2MiB" in info.value.problem
