"""ICL: seeded random demonstrations, reproducible, never the query itself, bad input as one line."""

from __future__ import annotations

import pytest

from codepeft.data.base import Example
from codepeft.errors import CodepeftError
from codepeft.methods.base import all_methods, get_method
from codepeft.methods.icl import REFERENCE_K, REFERENCE_SEED, seeds_summary

POOL = [Example(id=f"train-{i}", intent=f"task number {i}", reference=f"answer({i})") for i in range(40)]
QUERIES = [Example(id=f"test-{i}", intent=f"query {i}", reference=f"q({i})") for i in range(5)]


def _ids(selected):
    return [[d.id for d in demos] for demos in selected]


def _select(queries=QUERIES, pool=POOL, **overrides):
    icl = get_method("icl")
    return _ids(icl.select(queries, pool, icl.params(overrides)))


def test_defaults_follow_the_reference_study():
    params = get_method("icl").params()
    assert (params.k, params.seed, params.per_example_draw) == (REFERENCE_K, REFERENCE_SEED, False) == (3, 42, False)


def test_seeded_draw_is_reproducible_and_differs_across_seeds():
    first = _select(seed=0)
    assert first == _select(seed=0)
    assert first != _select(seed=1)
    assert all(len(demos) == 3 and len(set(demos)) == 3 for demos in first)


def test_one_fixed_set_for_the_whole_split():
    selected = _select(k=4, seed=7)
    assert all(demos == selected[0] for demos in selected)


def test_per_example_draw_is_fresh_per_query_and_independent_of_order():
    selected = _select(k=3, seed=7, per_example_draw=True)
    assert len({tuple(d) for d in selected}) > 1
    # Seeded by (seed, id): the same query gets the same demonstrations in any order or subset.
    assert _select(queries=QUERIES[::-1], k=3, seed=7, per_example_draw=True) == selected[::-1]
    assert _select(queries=QUERIES[2:3], k=3, seed=7, per_example_draw=True) == [selected[2]]
    assert _select(k=3, seed=8, per_example_draw=True) != selected


def test_query_never_sees_itself_or_its_duplicate():
    fixed = _select(queries=QUERIES[:1], k=3, seed=3)[0]
    inside = next(p for p in POOL if p.id == fixed[1])
    duplicate = Example(id="test-copy", intent=inside.intent, reference=inside.reference)
    selected = _select(queries=[inside, duplicate, QUERIES[0]], k=3, seed=3)
    for demos in selected[:2]:
        assert inside.id not in demos and len(demos) == 3
        # Only the leaking item is replaced; the rest of the fixed set stays.
        assert set(fixed) - set(demos) == {inside.id}
    assert selected[2] == fixed


def test_k_zero_is_zero_shot():
    assert _select(k=0) == [[] for _ in QUERIES]


def test_seeds_summary_mean_and_spread():
    mean, std = seeds_summary([0.2, 0.4, 0.6])
    assert mean == pytest.approx(0.4) and std == pytest.approx(0.2)
    assert seeds_summary([0.5]) == (0.5, 0.0)
    with pytest.raises(CodepeftError, match="at least one"):
        seeds_summary([])


def test_registered_beside_the_fine_tuning_arms():
    methods = all_methods()
    assert methods["icl"].kind == methods["rag"].kind == methods["zero-shot"].kind == "prompt"
    assert {"icl", "rag", "zero-shot"} <= set(methods)


@pytest.mark.parametrize(
    ("overrides", "pool", "message"),
    [
        ({"k": 41}, POOL, "k=41 is larger than the pool (40 examples)"),
        ({"k": -1}, POOL, "k: Input should be greater than or equal to 0"),
        ({"k": 2}, [], "pool is empty"),
        ({"shots": 2}, POOL, "shots: Extra inputs are not permitted"),
    ],
)
def test_bad_input_is_a_one_line_error(overrides, pool, message):
    with pytest.raises(CodepeftError) as err:
        _select(pool=pool, **overrides)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert "icl" in str(err.value)
