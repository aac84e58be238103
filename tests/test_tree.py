"""The tree type: spec parsing and formatting, ISA layouts, structure, validation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isa_core.errors import IsaError
from isa_core.priors import LpTree, parse_layout

exponents = st.floats(min_value=0.05, max_value=20, allow_nan=False, allow_infinity=False)


def trees(depth: int = 3) -> st.SearchStrategy[LpTree]:
    leaf = st.integers(min_value=1, max_value=6)
    if depth == 0:
        children = st.lists(leaf, min_size=1, max_size=4)
    else:
        children = st.lists(st.one_of(leaf, trees(depth - 1)), min_size=1, max_size=4)
    return st.builds(lambda p, c: LpTree(p, tuple(c)), exponents, children)


@settings(deadline=None, derandomize=True, max_examples=300)
@given(trees())
def test_spec_round_trip(tree: LpTree) -> None:
    assert LpTree.parse(tree.spec) == tree
    assert LpTree.parse(str(tree)).spec == tree.spec


@settings(deadline=None, derandomize=True, max_examples=100)
@given(trees())
def test_structure_is_consistent(tree: LpTree) -> None:
    assert sum(len(s) for s in tree.subspaces) == tree.n
    assert len(tree.exponents) == tree.num_inner
    assert tree.exponents[0] == tree.p0
    assert tree.with_exponents(tree.exponents) == tree


def test_examples_from_design() -> None:
    isa = LpTree.parse("2.1(2.2(4),2.2(4),2.2(4),2.2(4),2.2(4))")
    assert isa == LpTree.isa(parse_layout("5x4"), 2.1, 2.2)
    assert isa.n == 20 and isa.is_isa
    assert [list(s) for s in isa.subspaces][:2] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert isa.exponents == (2.1,) + (2.2,) * 5
    ica = LpTree.parse("1.5(10)")
    assert ica.n == 10 and len(ica.subspaces) == 10 and not ica.is_isa
    eq6 = LpTree.parse(" 2.1 ( 1 , 2.2( 2 ) ) ")
    assert eq6.n == 3 and eq6.child_sizes == (1, 2) and str(eq6) == "2.1(1,2.2(2))"


def test_adjacent_leaf_counts_merge() -> None:
    assert LpTree.parse("2(3,1)") == LpTree.parse("2(4)")
    assert LpTree.parse("2(1,1,2.5(2),1)").spec == "2(2,2.5(2),1)"


def test_layouts() -> None:
    assert parse_layout("5x4") == (4, 4, 4, 4, 4)
    assert parse_layout("4,4,3") == (4, 4, 3)
    tree = LpTree.isa((4, 4, 3), 2.1, [2.2, 1.9, 2.0])
    assert tree.exponents == (2.1, 2.2, 1.9, 2.0)
    assert tree.spec == "2.1(2.2(4),1.9(4),2(3))"


@pytest.mark.parametrize("layout", ["", "5x", "x4", "4,,3", "0x4", "4,0", "a,b", "5x4x2"])
def test_bad_layouts(layout: str) -> None:
    with pytest.raises(IsaError, match="layout"):
        parse_layout(layout)


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "2",
        "2()",
        "2(3",
        "2(3))",
        "(3)",
        "2(0)",
        "2(-1)",
        "2(1.5)",
        "2(3,)",
        "abc",
        "0(2)",
        "-1(2)",
        "inf(2)",
        "nan(2)",
        "2(1(2)",
        "2(2)x",
    ],
)
def test_bad_specs(spec: str) -> None:
    with pytest.raises(IsaError) as info:
        LpTree.parse(spec)
    assert "\n" not in str(info.value)


def test_bad_exponents_in_code() -> None:
    with pytest.raises(IsaError, match="positive"):
        LpTree(0.0, (2,))
    with pytest.raises(IsaError, match="positive"):
        LpTree.isa((2, 2), 2.1, [2.0, -1.0])
    with pytest.raises(IsaError, match="one per subspace"):
        LpTree.isa((2, 2), 2.1, [2.0, 2.0, 2.0])
