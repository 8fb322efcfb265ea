"""Folding rules of buffer collections, each against a reference that enumerates what
a participant accepts and intersects the sets, plus the algebra (commutative,
associative, identity) and the refusals naming the participant that broke a set."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vcmm.errors import ConstraintError, InvalidArgumentError
from vcmm.share.constraints import ALL_DOMAINS, Constraints, Domain, ImageConstraints
from vcmm.share.folding import conflicts, fold, fold_all, fold_participants

#: The universe the reference enumerates: counts, sizes and row lengths up to this.
UNIVERSE = range(0, 65)
TARGETS = ("ebi", "blocks", "contig", "smi")
FORMATS = (("nv12", "linear"), ("nv12", "tile-64x32"), ("yuyv", "linear"), ("rgba8888", "linear"))


def optional(strategy: st.SearchStrategy[int]) -> st.SearchStrategy[int | None]:
    return st.none() | strategy


images = st.builds(
    ImageConstraints,
    formats=st.frozensets(st.sampled_from(FORMATS), min_size=1),
    min_width=st.integers(1, 64),
    min_height=st.integers(1, 64),
    max_width=optional(st.integers(1, 64)),
    max_height=optional(st.integers(1, 64)),
    min_bytes_per_row=st.integers(0, 64),
    bytes_per_row_divisor=st.sampled_from([1, 2, 3, 4, 6, 16, 64]),
)
statements = st.builds(
    Constraints,
    min_buffers=st.integers(0, 8),
    max_buffers=optional(st.integers(0, 8)),
    camping=st.integers(0, 4),
    min_size=st.integers(0, 64),
    max_size=optional(st.integers(0, 64)),
    size_alignment=st.sampled_from([1, 2, 4, 4096]),
    contiguous=st.booleans(),
    secure=st.booleans(),
    domains=st.frozensets(st.sampled_from(list(Domain))),
    targets=st.none() | st.frozensets(st.sampled_from(TARGETS)),
    image=st.none() | images,
    page_sizes=st.none() | st.frozensets(st.sampled_from([4096, 65536, 1 << 20, 1 << 21])),
)


# -- a reference: what each statement accepts, as sets, intersected ---------------------------


def accepted_sizes(c: Constraints) -> set[int]:
    return {s for s in UNIVERSE if s >= c.min_size and (c.max_size is None or s <= c.max_size)}


def accepted_rows(image: ImageConstraints) -> set[int]:
    """Row lengths (bytes per row) the image constraints accept, within the universe."""
    return {
        r for r in UNIVERSE if r >= image.min_bytes_per_row and r % image.bytes_per_row_divisor == 0
    }


@settings(max_examples=60, deadline=None)
@given(st.lists(statements, min_size=1, max_size=4))
def test_sizes_counts_and_rows_fold_as_the_intersection_of_what_each_accepts(
    items: list[Constraints],
) -> None:
    total = fold_all(items)
    sizes = set.intersection(*(accepted_sizes(c) for c in items))
    if sizes:
        assert total.min_size == min(sizes)
        assert total.max_size is None or total.max_size == max(sizes)
    else:
        assert total.max_size is not None and total.min_size > total.max_size
    counts = set.intersection(
        *(
            {
                n
                for n in UNIVERSE
                if n >= c.min_buffers and (c.max_buffers is None or n <= c.max_buffers)
            }
            for c in items
        )
    )
    if counts:
        assert total.min_buffers == min(counts)
    assert total.camping == sum(c.camping for c in items)
    images_ = [c.image for c in items if c.image is not None]
    if images_:
        assert total.image is not None
        rows = set.intersection(*(accepted_rows(i) for i in images_))
        assert rows == accepted_rows(total.image)
        assert total.image.formats == frozenset.intersection(*(i.formats for i in images_))
        assert total.image.bytes_per_row_divisor == math.lcm(
            *(i.bytes_per_row_divisor for i in images_)
        )
    else:
        assert total.image is None


@settings(max_examples=60, deadline=None)
@given(st.lists(statements, min_size=1, max_size=4))
def test_flags_domains_targets_and_pages_fold_as_sysmem_says(items: list[Constraints]) -> None:
    total = fold_all(items)
    assert total.contiguous == any(c.contiguous for c in items)
    assert total.secure == any(c.secure for c in items)
    assert total.domains == frozenset.intersection(*(c.domains for c in items))
    restricted = [c.targets for c in items if c.targets is not None]
    assert total.targets == (frozenset.intersection(*restricted) if restricted else None)
    assert total.size_alignment == max(c.size_alignment for c in items)
    iommu = [c.page_sizes for c in items if c.page_sizes is not None]
    assert total.page_sizes == (frozenset.intersection(*iommu) if iommu else None)


@settings(max_examples=50, deadline=None)
@given(statements, statements, statements)
def test_fold_is_commutative_associative_with_an_identity(
    a: Constraints, b: Constraints, c: Constraints
) -> None:
    assert fold(a, b) == fold(b, a)
    assert fold(a, fold(b, c)) == fold(fold(a, b), c)
    assert fold(a, Constraints()) == a == fold(Constraints(), a)


@settings(max_examples=50, deadline=None)
@given(st.lists(statements, min_size=1, max_size=4), st.randoms())
def test_whether_a_collection_is_refused_does_not_depend_on_the_join_order(
    items: list[Constraints], rnd: object
) -> None:
    named = [(f"p{i}", c) for i, c in enumerate(items)]
    shuffled = list(named)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert bool(conflicts(named)) == bool(conflicts(shuffled))


# -- refusals --------------------------------------------------------------------------------


def refusal(named: list[tuple[str, Constraints]]) -> ConstraintError:
    with pytest.raises(ConstraintError) as info:
        fold_participants("frames", named)
    return info.value


def test_an_empty_size_range_names_the_participant_and_both_sides() -> None:
    err = refusal(
        [
            ("camera", Constraints(min_size=3 << 20)),
            ("vcodec", Constraints()),
            ("mdp", Constraints(max_size=2 << 20)),
        ]
    )
    assert (err.participant, err.constraint) == ("mdp", "size")
    assert "'camera' need at least 3M" in str(err) and "'mdp' allow at most 2M" in str(err)


def test_camping_adds_up_past_the_maximum() -> None:
    err = refusal(
        [
            ("display", Constraints(camping=2, max_buffers=3)),
            ("codec", Constraints(camping=2)),
        ]
    )
    assert (err.participant, err.constraint) == ("codec", "buffer count")
    assert "4 buffers are needed" in str(err) and "'display' 2, 'codec' 2" in str(err)


def test_no_common_domain_lists_who_lacks_each() -> None:
    err = refusal(
        [
            ("cpu", Constraints(domains=frozenset({Domain.CPU}))),
            ("gpu", Constraints(domains=frozenset({Domain.RAM, Domain.INACCESSIBLE}))),
        ]
    )
    assert (err.participant, err.constraint) == ("gpu", "coherency domains")
    assert "cpu: not 'gpu'" in str(err) and "ram: not 'cpu'" in str(err)


def test_secure_needs_the_inaccessible_domain() -> None:
    err = refusal(
        [("cpu", Constraints(domains=frozenset({Domain.CPU}))), ("tz", Constraints(secure=True))]
    )
    assert (err.participant, err.constraint) == ("tz", "secure")


def test_disjoint_targets_and_formats_and_widths() -> None:
    err = refusal([("a", Constraints(targets={"ebi"})), ("b", Constraints(targets={"contig"}))])
    assert (err.participant, err.constraint) == ("b", "memory targets")
    assert "'a': ebi; 'b': contig" in str(err)
    nv12 = ImageConstraints({"nv12"}, min_width=1920)
    err = refusal(
        [
            ("cam", Constraints(image=nv12)),
            ("gpu", Constraints(image=ImageConstraints({"rgba8888"}))),
        ]
    )
    assert (err.participant, err.constraint) == ("gpu", "image formats")
    narrow = ImageConstraints({"nv12"}, max_width=1280)
    err = refusal([("cam", Constraints(image=nv12)), ("disp", Constraints(image=narrow))])
    assert (err.participant, err.constraint) == ("disp", "image width")
    assert "'cam' need at least 1920 but 'disp' allow at most 1280" in str(err)


def test_agreeing_statements_fold_without_refusal() -> None:
    total = fold_participants(
        "frames",
        [("a", Constraints(min_size=100, camping=1)), ("b", Constraints(max_size=200, camping=2))],
    )
    assert (total.min_size, total.max_size, total.buffers_needed) == (100, 200, 3)
    assert total.domains == ALL_DOMAINS


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_size": -1},
        {"max_buffers": "2"},
        {"size_alignment": 3},
        {"contiguous": 1},
        {"domains": {"gpu"}},
        {"domains": "cpu"},
        {"targets": "ebi"},
        {"targets": {""}},
        {"image": "nv12"},
        {"page_sizes": {3000}},
    ],
)
def test_bad_statements_are_refused_naming_the_field(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidArgumentError, match=next(iter(kwargs))):
        Constraints(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"formats": {"nv13"}}, "unknown pixel format"),
        ({"formats": {("yuyv", "tile-64x32")}}, "cannot be laid out"),
        ({"formats": {("nv12",)}}, "format"),
        ({"formats": {"nv12"}, "bytes_per_row_divisor": 0}, "bytes_per_row_divisor"),
        ({"formats": {"nv12"}, "max_width": 0}, "max_width"),
    ],
)
def test_bad_image_constraints_are_refused(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(InvalidArgumentError, match=words):
        ImageConstraints(**kwargs)  # type: ignore[arg-type]


def test_a_refusal_survives_pickling_with_its_names() -> None:
    """Sweeps carry errors across processes."""
    import pickle

    err = refusal([("a", Constraints(min_size=9)), ("b", Constraints(max_size=8))])
    back = pickle.loads(pickle.dumps(err))
    assert (str(back), back.participant, back.constraint) == (str(err), "b", "size")
