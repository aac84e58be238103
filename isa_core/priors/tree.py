"""L^p-nested trees: the structure of f(z) (paper Eqs. 6 and 9) and its textual spec.

A tree is an immutable, hashable value. Every inner node carries an exponent ``p`` and a
tuple of children; a child is either another node or an ``int`` K, meaning K leaves directly
under the node. Leaves are the coordinates of z, numbered left to right, so the leaves under
any node form a contiguous range.

Textual spec (``--tree``)::

    node  := P '(' child (',' child)* ')'
    child := node | K

ISA 5x4 with p0 = 2.1, p_i = 2.2 is ``2.1(2.2(4),2.2(4),2.2(4),2.2(4),2.2(4))``; the ICA prior
on 10 dimensions is ``1.5(10)``; Eq. 6 is ``p0(1,p1(2))``.

Limits. A tree has at most ``MAX_LEAVES`` leaves and ``MAX_DEPTH`` levels, so its tables fit
in memory and every recursive walk stays far from Python's recursion limit. Trees built from
user input (``parse``, ``isa``, ``gennorm``, ``normal``) take exponents in ``EXPONENT_RANGE``:
there sampling and the log-density are finite and accurate in float64 (below 0.05 the radius
overflows for moderate n; above 20 the Gamma and |g|^p draws of Algorithm 1 start to underflow
to 0, which gives inf/NaN samples); trees built in code need only positive finite exponents.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from isa_core.errors import IsaError, field_error

__all__ = ["EXPONENT_RANGE", "MAX_DEPTH", "MAX_LEAVES", "LpTree", "parse_layout"]

MAX_LEAVES = 100_000
MAX_DEPTH = 100
EXPONENT_RANGE = (0.05, 20.0)
_BYTES_PER_LEAF = 2048  # measured: the tree, its plan and tables take about 1.8 KB per leaf

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:inf|nan)", re.IGNORECASE)


def _check_exponent(p: float, where: str, supported: bool = False) -> float:
    """``p`` as a float; with ``supported``, also inside ``EXPONENT_RANGE``."""
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise IsaError(f"exponent {p!r} in {where} is not a number; use e.g. 2.2")
    if not math.isfinite(p) or p <= 0:
        raise IsaError(f"exponent {p!r} in {where} must be a positive finite number, e.g. 2.2")
    low, high = EXPONENT_RANGE
    if supported and not low <= p <= high:
        raise IsaError(
            f"exponent {p!r} in {where} is outside {low:g}..{high:g}, the range where sampling "
            "and the log-density stay finite and accurate in float64; use e.g. 2.2"
        )
    return float(p)


def _check_leaves(n: int, what: str) -> None:
    if n > MAX_LEAVES:
        gib = n * _BYTES_PER_LEAF / 2**30
        raise IsaError(
            f"{what} has n = {n:,} dimensions, about {gib:,.1f} GiB of per-dimension tables; "
            f"isa supports at most n = {MAX_LEAVES:,}; use a smaller layout or tree"
        )


@dataclass(frozen=True)
class LpTree:
    """An inner node of an L^p-nested function: exponent ``p`` over ``children``.

    Adjacent leaf counts are merged on construction (``2(3,1)`` is ``2(4)``), so equal
    functions compare equal.

    Example:
        >>> t = LpTree.parse("2.1(1,2.2(2))")
        >>> t.n, t.exponents, str(t)
        (3, (2.1, 2.2), '2.1(1,2.2(2))')
    """

    p: float
    children: tuple[LpTree | int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "p", _check_exponent(self.p, "an L^p-nested tree"))
        if not self.children:
            raise IsaError("an L^p-nested node needs at least one child; e.g. 2(4)")
        merged: list[LpTree | int] = []
        for child in self.children:
            if isinstance(child, LpTree):
                merged.append(child)
                continue
            if isinstance(child, bool) or not isinstance(child, int) or child < 1:
                raise IsaError(f"leaf count {child!r} must be a whole number >= 1; e.g. 2(4)")
            if merged and not isinstance(merged[-1], LpTree):
                merged[-1] += child
            else:
                merged.append(child)
        object.__setattr__(self, "children", tuple(merged))
        # Children are built first, so their n and depth are cached: these are cheap.
        _check_leaves(self.n, "the L^p-nested tree")
        if self.depth > MAX_DEPTH:
            raise IsaError(
                f"the L^p-nested tree is nested {self.depth} levels deep; isa supports at most "
                f"{MAX_DEPTH}"
            )

    # -- construction -------------------------------------------------------------------

    @classmethod
    def parse(cls, spec: str) -> LpTree:
        """Parse the textual spec ``P(child, ...)``; raises IsaError naming the position."""
        return _Parser(spec).parse()

    @classmethod
    def isa(cls, layout: Sequence[int], p0: float, p1: float | Sequence[float]) -> LpTree:
        """The ISA tree of Eq. 9: root exponent p0 over subspaces of sizes ``layout``."""
        sizes = list(layout)
        if not sizes:
            raise IsaError("the ISA layout is empty; give subspace sizes, e.g. 5x4 or 4,4,3")
        _check_leaves(sum(sizes), "the ISA layout")
        p_sub = [p1] * len(sizes) if isinstance(p1, (int, float)) else list(p1)
        if len(p_sub) != len(sizes):
            raise field_error(
                "p1",
                f"has {len(p_sub)} values but the layout has {len(sizes)} subspaces; "
                "give one value or one per subspace",
            )
        root = _check_exponent(p0, "p0", supported=True)
        sub = [_check_exponent(p, "p1", supported=True) for p in p_sub]
        return cls(root, tuple(cls(p, (k,)) for p, k in zip(sub, sizes, strict=True)))

    @classmethod
    def gennorm(cls, n: int, p: float) -> LpTree:
        """One node over n leaves: the p-generalized normal / ICA prior of Eq. 5."""
        return cls(_check_exponent(p, "the generalized normal", supported=True), (n,))

    @classmethod
    def normal(cls, n: int) -> LpTree:
        """The tree ``2(n)``; with scale s = 2 it is the standard normal N(0, I)."""
        return cls(2.0, (n,))

    def with_exponents(self, exponents: Sequence[float]) -> LpTree:
        """The same structure with new exponents, given in pre-order (root first)."""
        values = list(exponents)
        if len(values) != self.num_inner:
            raise IsaError(f"expected {self.num_inner} exponents for {self}, got {len(values)}")
        it = iter(values)

        def rebuild(node: LpTree) -> LpTree:
            p = next(it)
            return LpTree(
                p, tuple(rebuild(c) if isinstance(c, LpTree) else c for c in node.children)
            )

        return rebuild(self)

    # -- structure ----------------------------------------------------------------------

    @cached_property
    def n(self) -> int:
        """Number of leaves, the dimension of z."""
        return sum(c.n if isinstance(c, LpTree) else c for c in self.children)

    @cached_property
    def depth(self) -> int:
        """Levels of inner nodes: 1 for ``2(4)``, 2 for an ISA tree."""
        return 1 + max((c.depth for c in self.children if isinstance(c, LpTree)), default=0)

    @cached_property
    def inner_nodes(self) -> tuple[LpTree, ...]:
        """All inner nodes in pre-order (root first); exponents follow this order."""
        nodes: list[LpTree] = [self]
        for c in self.children:
            if isinstance(c, LpTree):
                nodes.extend(c.inner_nodes)
        return tuple(nodes)

    @property
    def num_inner(self) -> int:
        return len(self.inner_nodes)

    @property
    def exponents(self) -> tuple[float, ...]:
        """The exponents of the inner nodes in pre-order; ``exponents[0]`` is p0."""
        return tuple(node.p for node in self.inner_nodes)

    @property
    def p0(self) -> float:
        return self.p

    @cached_property
    def child_sizes(self) -> tuple[int, ...]:
        """n_{I,k}: leaves below each child, one entry per leaf child (size 1) or subtree."""
        sizes: list[int] = []
        for c in self.children:
            sizes.extend([c.n] if isinstance(c, LpTree) else [1] * c)
        return tuple(sizes)

    @cached_property
    def leaf_exponents(self) -> tuple[float, ...]:
        """The exponent of each leaf's parent node, in leaf order (z_0, z_1, ...)."""
        values: list[float] = []
        for c in self.children:
            values.extend(c.leaf_exponents if isinstance(c, LpTree) else [self.p] * c)
        return tuple(values)

    @cached_property
    def subspaces(self) -> tuple[range, ...]:
        """Leaf index ranges of the root's children: the independent subspaces V_i (Eq. 10).

        A leaf directly under the root is a subspace of its own, so the ICA tree ``p(n)`` has
        n one-dimensional subspaces.
        """
        ranges: list[range] = []
        start = 0
        for c in self.children:
            if isinstance(c, LpTree):
                ranges.append(range(start, start + c.n))
                start += c.n
            else:
                ranges.extend(range(j, j + 1) for j in range(start, start + c))
                start += c
        return tuple(ranges)

    @property
    def is_isa(self) -> bool:
        """True for depth-two trees whose root children are nodes over leaves only (Eq. 9)."""
        return all(
            isinstance(c, LpTree) and all(not isinstance(g, LpTree) for g in c.children)
            for c in self.children
        )

    # -- text ---------------------------------------------------------------------------

    def __str__(self) -> str:
        parts = [str(c) for c in self.children]
        return f"{_format_exponent(self.p)}({','.join(parts)})"

    @property
    def spec(self) -> str:
        """The canonical textual spec; ``LpTree.parse(t.spec) == t``."""
        return str(self)


def _format_exponent(p: float) -> str:
    text = repr(float(p))
    return text[:-2] if text.endswith(".0") else text


def parse_layout(layout: str) -> tuple[int, ...]:
    """Parse an ISA layout: ``5x4`` (5 subspaces of 4) or ``4,4,3`` (sizes listed)."""
    text = layout.strip().lower()
    try:
        if "x" in text:
            count, size = (int(part) for part in text.split("x"))
            sizes = None
        else:
            sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise IsaError(
            f"cannot parse layout {layout!r}; use COUNTxSIZE like 5x4 or sizes like 4,4,3"
        ) from None
    if sizes is None:
        if count >= 1 and size >= 1:  # bound the size before building the tuple
            _check_leaves(count * size, f"layout {layout!r}")
        sizes = (size,) * max(count, 0)
    if not sizes or any(k < 1 for k in sizes):
        raise IsaError(f"layout {layout!r} needs at least one subspace, each of size >= 1")
    _check_leaves(sum(sizes), f"layout {layout!r}")
    return sizes


class _Parser:
    """Recursive-descent parser for the tree grammar, with positions in its errors.

    Nesting is limited to ``MAX_DEPTH`` levels, checked before descending, so a deeply
    nested spec is refused with a message instead of exhausting the Python stack.
    """

    def __init__(self, spec: str) -> None:
        if not isinstance(spec, str):
            raise IsaError(f"a tree spec must be text like 2.1(2.2(4),2.2(4)), got {spec!r}")
        self.spec = spec
        self.pos = 0
        self.depth = 0

    def fail(self, expected: str) -> IsaError:
        found = repr(self.spec[self.pos]) if self.pos < len(self.spec) else "the end"
        return IsaError(
            f"malformed tree spec {_excerpt(self.spec)}: expected {expected} at position "
            f"{self.pos}, found {found}; write e.g. 2.1(2.2(4),2.2(4))"
        )

    def skip_space(self) -> None:
        while self.pos < len(self.spec) and self.spec[self.pos].isspace():
            self.pos += 1

    def parse(self) -> LpTree:
        self.skip_space()
        tree = self.node()
        self.skip_space()
        if self.pos != len(self.spec):
            raise self.fail("the end of the spec")
        return tree

    def number(self) -> tuple[str, int]:
        self.skip_space()
        match = _NUMBER.match(self.spec, self.pos)
        if not match:
            raise self.fail("a number")
        start = self.pos
        self.pos = match.end()
        return match.group(), start

    def node(self) -> LpTree:
        text, start = self.number()
        self.skip_space()
        if self.pos >= len(self.spec) or self.spec[self.pos] != "(":
            raise self.fail("'(' after the exponent")
        where = f"tree spec {_excerpt(self.spec)} (position {start})"
        p = _check_exponent(float(text), where, supported=True)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise IsaError(
                f"tree spec {_excerpt(self.spec)} is nested more than {MAX_DEPTH} levels deep "
                f"(at position {start}); isa supports at most {MAX_DEPTH}"
            )
        self.pos += 1
        children: list[LpTree | int] = [self.child()]
        while True:
            self.skip_space()
            if self.pos < len(self.spec) and self.spec[self.pos] == ",":
                self.pos += 1
                children.append(self.child())
            elif self.pos < len(self.spec) and self.spec[self.pos] == ")":
                self.pos += 1
                self.depth -= 1
                return LpTree(p, tuple(children))
            else:
                raise self.fail("',' or ')'")

    def child(self) -> LpTree | int:
        self.skip_space()
        save = self.pos
        text, start = self.number()
        self.skip_space()
        if self.pos < len(self.spec) and self.spec[self.pos] == "(":
            self.pos = save
            return self.node()
        if not text.isdigit() or not text.strip("0"):
            self.pos = start
            raise self.fail("a leaf count (a whole number >= 1) or a node P(...)")
        if len(text.lstrip("0")) > 18:  # far above MAX_LEAVES; int() of huge text is slow
            raise IsaError(
                f"leaf count {text[:20]}... in tree spec {_excerpt(self.spec)} is too large; "
                f"isa supports at most n = {MAX_LEAVES:,} dimensions"
            )
        return int(text)


def _excerpt(spec: str, limit: int = 60) -> str:
    """The spec quoted for a message, shortened when long."""
    return (
        repr(spec) if len(spec) <= limit else repr(spec[:limit]) + f"... ({len(spec)} characters)"
    )
