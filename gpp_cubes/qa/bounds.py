"""Sound bounds of a spectral-index formula over a box of inputs (:func:`formula_range`).

The range rule of every S2 index is derived from its spyndex formula rather than typed in:
the formula is parsed and bounded with the bands in [0, 1] (the band rule), kernels in
[0, 1] and the constants at the values :mod:`gpp_cubes.s2.indices` passes. A ratio of
linear forms is bounded exactly when its denominator is positive on the box of inputs (a
linear-fractional function is quasilinear, so its extremes lie at corners of the box), or,
when the denominator may vanish, as a weighted mean of coefficient ratios when every input
is non-negative and every denominator coefficient positive (this gives [-1, 1] for every
normalized difference); anything else is bounded by interval arithmetic, or not at all
(None: such an index only gets the outlier scan). Since the bounds follow from the band
rule, an index outside its bound with in-range bands means a broken index computation.

References
----------
Boyd, S., Vandenberghe, L. (2004). Convex Optimization, section 3.4.1 (quasilinear
    linear-fractional functions). Cambridge University Press.
"""

from __future__ import annotations

import ast
import itertools
import math
from collections.abc import Mapping

import numpy as np

__all__ = ["formula_range"]

_ONE = ""  # the constant term of a linear form


def formula_range(formula: str, domain: Mapping[str, tuple[float, float]],
                  constants: Mapping[str, float] | None = None
                  ) -> tuple[float, float, str] | None:
    """Bounds of a formula over a box of inputs, or None when the formula is unbounded.

    Parameters
    ----------
    formula : str
        Python arithmetic (``+ - * / **``, names, numbers), as in spyndex's ``formula``.
    domain : mapping
        Input symbol -> (low, high) [input units]; ``math.inf`` allowed.
    constants : mapping, optional
        Symbol -> fixed value.

    Returns
    -------
    (low, high, method) or None
        Sound bounds of the formula wherever it is defined; ``method`` names the argument
        used for the outermost division ("ratio of linear forms, extremes at the corners",
        "ratio of non-negative linear forms" or "interval arithmetic").

    Notes
    -----
    A quotient of two linear forms X / Y is bounded (1) exactly by its values at the
    corners of the box when Y > 0 on the whole box (quasilinearity, Boyd & Vandenberghe
    2004, 3.4.1), or (2) when every input is >= 0 and every coefficient of Y is > 0 (the
    constant term counting as an input fixed at 1), by the smallest and largest ratio of
    X's to Y's coefficients, since X / Y is then their weighted mean. Other expressions
    use interval arithmetic; a division by an interval containing 0, or an unknown
    symbol, makes the formula unbounded.

    Examples
    --------
    >>> formula_range("(N-R)/(N+R)", {"N": (0, 1), "R": (0, 1)})[:2]
    (-1.0, 1.0)
    """
    consts = dict(constants or {})
    try:
        tree = ast.parse(formula, mode="eval").body
    except SyntaxError:
        return None
    methods: list[str] = []

    def symbols(node: ast.AST) -> set[str]:
        return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and n.id not in consts}

    def linear(node: ast.AST) -> dict[str, float] | None:
        if not symbols(node):  # a constant sub-expression (e.g. 1+sla**2): fold it
            c = interval(node)
            return None if c is None or c[0] != c[1] else {_ONE: c[0]}
        if isinstance(node, ast.Name):
            if node.id in consts:
                return {_ONE: float(consts[node.id])}
            return {node.id: 1.0} if node.id in domain else None
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            f = linear(node.operand)
            sign = -1.0 if isinstance(node.op, ast.USub) else 1.0
            return None if f is None else {k: sign * v for k, v in f.items()}
        if isinstance(node, ast.BinOp):
            a, b = linear(node.left), linear(node.right)
            if a is None or b is None:
                return None
            if isinstance(node.op, ast.Add | ast.Sub):
                s = 1.0 if isinstance(node.op, ast.Add) else -1.0
                out = dict(a)
                for k, v in b.items():
                    out[k] = out.get(k, 0.0) + s * v
                return out
            const_a, const_b = set(a) <= {_ONE}, set(b) <= {_ONE}
            if isinstance(node.op, ast.Mult) and (const_a or const_b):
                c, f = (a.get(_ONE, 0.0), b) if const_a else (b.get(_ONE, 0.0), a)
                return {k: c * v for k, v in f.items()}
            if isinstance(node.op, ast.Div) and const_b and b.get(_ONE, 0.0) != 0:
                return {k: v / b[_ONE] for k, v in a.items()}
        return None

    def box(sym: str) -> tuple[float, float]:
        return (1.0, 1.0) if sym == _ONE else tuple(map(float, domain[sym]))  # type: ignore

    def ratio(num: ast.AST, den: ast.AST) -> tuple[float, float] | None:
        x, y = linear(num), linear(den)
        if x is None or y is None:
            return None
        x = {k: v for k, v in x.items() if v != 0}
        y = {k: v for k, v in y.items() if v != 0}
        syms = sorted(set(x) | set(y))
        if not y:
            return None
        bounds = [box(s) for s in syms]
        if all(math.isfinite(b) for lo_hi in bounds for b in lo_hi) and len(syms) <= 12:
            corners = np.array(list(itertools.product(*bounds)))
            xs = corners @ np.array([x.get(s, 0.0) for s in syms])
            ys = corners @ np.array([y.get(s, 0.0) for s in syms])
            if (ys > 0).all() or (ys < 0).all():
                methods.append("ratio of linear forms, extremes at the corners")
                return float((xs / ys).min()), float((xs / ys).max())
        if all(b[0] >= 0 for b in bounds) and all(y.get(s, 0.0) > 0 for s in syms):
            r = [x.get(s, 0.0) / y[s] for s in syms]
            methods.append("ratio of non-negative linear forms")
            return float(min(r)), float(max(r))
        return None

    def interval(node: ast.AST) -> tuple[float, float] | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value), float(node.value)
        if isinstance(node, ast.Name):
            if node.id in consts:
                return float(consts[node.id]), float(consts[node.id])
            if node.id in domain:
                lo, hi = map(float, domain[node.id])
                return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else None
            return None
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            a = interval(node.operand)
            if a is None:
                return None
            return (-a[1], -a[0]) if isinstance(node.op, ast.USub) else a
        if not isinstance(node, ast.BinOp):
            return None
        lin = linear(node) if symbols(node) else None
        if lin is not None and all(math.isfinite(b) for s in lin if s != _ONE
                                   for b in box(s)):
            # a linear form: exact, each input taken at the bound its coefficient favours
            lo = sum(v * (min if v > 0 else max)(box(s)) for s, v in lin.items())
            hi = sum(v * (max if v > 0 else min)(box(s)) for s, v in lin.items())
            methods.append("linear form")
            return lo, hi
        if isinstance(node.op, ast.Div):
            r = ratio(node.left, node.right)
            if r is not None:
                return r
        a, b = interval(node.left), interval(node.right)
        if a is None or b is None:
            return None
        if isinstance(node.op, ast.Add):
            return a[0] + b[0], a[1] + b[1]
        if isinstance(node.op, ast.Sub):
            return a[0] - b[1], a[1] - b[0]
        if isinstance(node.op, ast.Mult):
            p = [a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]]
            methods.append("interval arithmetic")
            return min(p), max(p)
        if isinstance(node.op, ast.Div):
            if b[0] > 0 or b[1] < 0:
                q = [a[0] / b[0], a[0] / b[1], a[1] / b[0], a[1] / b[1]]
                methods.append("interval arithmetic")
                return min(q), max(q)
            return None
        if isinstance(node.op, ast.Pow) and b[0] == b[1]:
            e = b[0]
            methods.append("interval arithmetic")
            if e == int(e) and e >= 0:
                lo, hi = a[0] ** e, a[1] ** e
                if int(e) % 2 == 0 and a[0] < 0 < a[1]:
                    return 0.0, max(lo, hi)
                return min(lo, hi), max(lo, hi)
            if a[0] >= 0 and (e > 0 or a[0] > 0):
                lo, hi = a[0] ** e, a[1] ** e
                return min(lo, hi), max(lo, hi)
        return None

    res = interval(tree)
    if res is None or not all(math.isfinite(v) for v in res):
        return None
    return res[0], res[1], (methods[-1] if methods else "linear form")
