"""IntervalMap against a page-by-page reference model."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vcmm.trace.intervals import IntervalMap, holes

ops = st.lists(
    st.tuples(st.sampled_from(["assign", "remove", "fill"]), st.integers(0, 40), st.integers(1, 12),
              st.integers(0, 5)),
    max_size=40,
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(ops, st.sampled_from([2, 3, 512]))
def test_matches_a_page_model(steps: list[tuple[str, int, int, int]], chunk: int) -> None:
    """Chunks of 2 and 3 starts split and empty all the time; 512 is the default.
    ``fill`` inserts the holes of a range as one run (a splice when nothing lies
    between them, one insert each when something does)."""
    im: IntervalMap[int] = IntervalMap(chunk=chunk)
    pages: dict[int, int] = {}
    for op, start, length, value in steps:
        end = start + length
        if op == "assign":
            im.assign(start, end, value)
            pages.update({p: value for p in range(start, end)})
        elif op == "fill":  # the holes of [start, end) at once: one splice or one by one
            gaps = holes(start, end, im.overlapping(start, end))
            im.insert_run([(a, b, value) for a, b in gaps])
            pages.update({p: value for a, b in gaps for p in range(a, b)})
        else:
            removed = im.remove(start, end)
            assert sum(e - s for s, e, _ in removed) == sum(
                1 for p in range(start, end) if p in pages
            )
            for s, e, v in removed:
                assert all(pages[p] == v for p in range(s, e))
            for p in range(start, end):
                pages.pop(p, None)
        model = {p: v for s, e, v in im for p in range(s, e)}
        assert model == pages
        starts = [s for s, _, _ in im]
        assert starts == sorted(starts)
        _check_queries(im, pages)


def _check_queries(im: IntervalMap[int], pages: dict[int, int]) -> None:
    for p in range(56):
        hit = im.at(p)
        assert (hit is not None) == (p in pages)
        gaps = holes(p, p + 5, im.overlapping(p, p + 5))
        first = im.first(p, p + 5)
        covered = [q for q in range(p, p + 5) if q in pages]
        assert (first is None) == (not covered)
        assert first is None or first[0] <= covered[0] < first[1]
        assert {q for a, b in gaps for q in range(a, b)} == {
            q for q in range(p, p + 5) if q not in pages
        }


def test_chunk_must_hold_two_starts() -> None:
    import pytest

    from vcmm.trace import TraceError

    with pytest.raises(TraceError, match="chunk must be an int >= 2, got 1"):
        IntervalMap(chunk=1)
