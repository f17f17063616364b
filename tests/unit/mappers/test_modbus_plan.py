from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mappers.modbus.codec import RegisterKind
from mappers.modbus.plan import (
    MAX_BITS_PER_READ,
    MAX_REGISTERS_PER_READ,
    PlanError,
    Point,
    Read,
    plan_reads,
)

H, IN, C, D = (RegisterKind.HOLDING, RegisterKind.INPUT, RegisterKind.COIL,
              RegisterKind.DISCRETE_INPUT)


def spans(reads: list[Read]) -> list[tuple[RegisterKind, int, int]]:
    return [(r.kind, r.offset, r.count) for r in reads]


def test_contiguous_points_become_one_read() -> None:
    points = [Point("a", H, 0, 1), Point("b", H, 1, 2), Point("c", H, 3, 4)]
    assert spans(plan_reads(points)) == [(H, 0, 7)]


def test_small_gaps_are_read_through_and_large_gaps_split() -> None:
    points = [Point("a", H, 0, 1), Point("b", H, 9, 1), Point("c", H, 30, 1)]
    assert spans(plan_reads(points, max_gap=8)) == [(H, 0, 10), (H, 30, 1)]
    assert spans(plan_reads(points, max_gap=0)) == [(H, 0, 1), (H, 9, 1), (H, 30, 1)]


def test_tables_are_never_mixed() -> None:
    points = [Point("h", H, 0, 1), Point("i", IN, 1, 1), Point("c", C, 0, 1),
              Point("d", D, 0, 1)]
    assert spans(plan_reads(points)) == [(C, 0, 1), (D, 0, 1), (IN, 1, 1), (H, 0, 1)]


def test_reads_split_at_125_registers() -> None:
    points = [Point(f"r{i}", H, i, 1) for i in range(130)]
    reads = plan_reads(points)
    assert spans(reads) == [(H, 0, MAX_REGISTERS_PER_READ), (H, 125, 5)]
    assert sum(len(r.points) for r in reads) == 130


def test_a_multi_register_point_is_never_cut_across_reads() -> None:
    points = [Point("a", H, 0, 124), Point("b", H, 124, 2)]
    assert spans(plan_reads(points)) == [(H, 0, 124), (H, 124, 2)]


def test_coils_split_at_2000_bits() -> None:
    points = [Point(f"c{i}", C, i, 1) for i in range(2001)]
    assert spans(plan_reads(points)) == [(C, 0, MAX_BITS_PER_READ), (C, 2000, 1)]


def test_overlapping_points_share_a_read() -> None:
    points = [Point("word", H, 10, 2), Point("low", H, 11, 1), Point("inside", H, 10, 1)]
    [read] = plan_reads(points)
    assert (read.offset, read.count) == (10, 2)
    assert read.split([7, 8]) == {"word": [7, 8], "low": [8], "inside": [7]}


def test_replies_map_back_to_each_point() -> None:
    points = [Point("temp", IN, 0, 1), Point("f32", IN, 2, 2), Point("name", IN, 5, 3)]
    [read] = plan_reads(points)
    assert (read.offset, read.count) == (0, 8)
    assert read.split([10, 11, 12, 13, 14, 15, 16, 17]) == {
        "temp": [10], "f32": [12, 13], "name": [15, 16, 17]}
    with pytest.raises(PlanError):
        read.split([1, 2])


def test_singles_read_each_point_alone() -> None:
    [read] = plan_reads([Point("a", H, 0, 1), Point("b", H, 2, 2)])
    assert spans(read.singles()) == [(H, 0, 1), (H, 2, 2)]
    assert [r.points[0].key for r in read.singles()] == ["a", "b"]


def test_points_too_big_for_one_request_are_refused() -> None:
    with pytest.raises(PlanError, match=r"1\.\.125"):
        plan_reads([Point("x", H, 0, 126)])
    with pytest.raises(PlanError, match="outside"):
        plan_reads([Point("x", H, 65535, 2)])


point_lists = st.lists(
    st.builds(Point, key=st.uuids().map(str), kind=st.sampled_from(list(RegisterKind)),
              offset=st.integers(0, 400), count=st.integers(1, 40)),
    max_size=40, unique_by=lambda p: p.key)


@given(point_lists, st.integers(0, 20))
def test_every_point_is_read_exactly_once_within_the_limits(points: list[Point],
                                                            max_gap: int) -> None:
    reads = plan_reads(points, max_gap=max_gap)
    covered = [p for r in reads for p in r.points]
    assert sorted(p.key for p in covered) == sorted(p.key for p in points)
    memory = {kind: [hash((kind, a)) & 0xFFFF for a in range(500)] for kind in RegisterKind}
    for read in reads:
        assert 1 <= read.count <= (2000 if read.kind.is_bits else 125)
        assert all(p.kind is read.kind for p in read.points)
        reply = memory[read.kind][read.offset:read.offset + read.count]
        for key, values in read.split(reply).items():
            point = next(p for p in read.points if p.key == key)
            assert values == memory[point.kind][point.offset:point.offset + point.count]


@given(point_lists)
def test_contiguous_same_table_points_never_take_more_reads_than_needed(
        points: list[Point]) -> None:
    # With no gap allowed, two reads of one table are either far apart or would not fit
    # one request together.
    reads = plan_reads(points, max_gap=0)
    for a, b in itertools.pairwise(reads):
        if a.kind is b.kind:
            assert b.offset > a.offset + a.count or (b.offset + b.count) - a.offset > 125

