"""Webster apportionment reproduces the reference's worked numbers
(reference/placement-scheduling.md §1.6, "Worked numbers")."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudcore.placement.apportion import fnv32a, names_descending_for, webster


@pytest.mark.parametrize(
    ("seats", "weights", "expected"),
    [
        # §1.6 table, Webster column.
        (9, {"A": 1, "B": 3}, {"A": 2, "B": 7}),
        (10, {"A": 1, "B": 2, "C": 3}, {"A": 2, "B": 3, "C": 5}),
        (4, {"a": 1, "b": 1, "c": 1}, {"a": 2, "b": 1, "c": 1}),
        (12, {"A": 6, "B": 12, "C": 18}, {"A": 2, "B": 4, "C": 6}),
    ],
)
def test_reference_table(seats: int, weights: dict[str, int], expected: dict[str, int]) -> None:
    assert webster(seats, weights) == expected


def test_descending_tie_break_gives_the_extra_seat_to_the_last_name() -> None:
    # §1.6: "4 | a:1, b:1, c:1 | a2 b1 c1 (or c2 with descending tie-break)".
    assert webster(4, {"a": 1, "b": 1, "c": 1}, names_descending=True) == {
        "a": 1, "b": 1, "c": 2}


def test_not_largest_remainder() -> None:
    # §1.6: the legacy rule gave A1 B3 C6 for 10 at 1:2:3; Webster gives A2 B3 C5.
    assert webster(10, {"A": 1, "B": 2, "C": 3}) != {"A": 1, "B": 3, "C": 6}


def test_sainte_lague_textbook_example() -> None:
    # The classic 8 seats among 100k/80k/30k/20k votes: 3/3/1/1.
    votes = {"A": 100_000, "B": 80_000, "C": 30_000, "D": 20_000}
    assert webster(8, votes) == {"A": 3, "B": 3, "C": 1, "D": 1}


def test_initial_seats_count_towards_priority() -> None:
    # With B already holding 3 seats, A (equal weight) gets the next two.
    assert webster(2, {"A": 1, "B": 1}, {"B": 3}) == {"A": 2, "B": 3}


def test_zero_weight_party_gets_nothing_while_others_have_weight() -> None:
    assert webster(5, {"A": 3, "B": 0}) == {"A": 5, "B": 0}


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError):
        webster(-1, {"A": 1})
    with pytest.raises(ValueError):
        webster(1, {"A": -1})
    with pytest.raises(ValueError):
        webster(1, {})
    assert webster(0, {}) == {}


@given(
    st.integers(min_value=0, max_value=200),
    st.dictionaries(st.sampled_from("abcdefgh"), st.integers(min_value=1, max_value=50),
                    min_size=1),
)
def test_every_seat_is_handed_out_and_heavier_never_gets_less(
    seats: int, weights: dict[str, int]
) -> None:
    result = webster(seats, weights)
    assert sum(result.values()) == seats
    for a in weights:
        for b in weights:
            if weights[a] > weights[b]:
                assert result[a] >= result[b]


@given(st.integers(min_value=0, max_value=60), st.integers(min_value=1, max_value=5))
def test_house_monotone(seats: int, parties: int) -> None:
    # One more replica never takes a replica away from any group.
    weights = {f"g{i}": i + 1 for i in range(parties)}
    before, after = webster(seats, weights), webster(seats + 1, weights)
    assert all(after[g] >= before[g] for g in weights)


def test_fnv32a_known_vectors() -> None:
    assert fnv32a("") == 0x811C9DC5
    assert fnv32a("a") == 0xE40C292C
    assert fnv32a("foobar") == 0xBF9CF968


def test_tie_break_direction_is_stable_per_uid_and_varies_across_uids() -> None:
    uids = [f"uid-{i}" for i in range(20)]
    directions = [names_descending_for(u) for u in uids]
    assert directions == [names_descending_for(u) for u in uids]
    assert True in directions and False in directions
