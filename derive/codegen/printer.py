"""A SymPy printer whose output Numba compiles: scalar ``math`` calls, conditional expressions
for Piecewise (never ``numpy.select``), float literals, overflow-free softplus and sigmoid.

exp, log, log1p, tanh and softplus print as the generated module's vectorisable ``_exp``, ``_log``,
``_log1p``, ``_tanh`` and ``_softplus`` (see ``derive/kernel_runtime.py``); :data:`VECTOR_MATH` maps them to
NumPy's for evaluating printed code in Python."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import sympy as sp
from sympy.printing.pycode import PythonCodePrinter

from ..symbolic import Sigmoid, Softplus

#: The generated modules' own element functions, and NumPy's equivalents (within 2 ulp).
VECTOR_MATH = {"_exp": np.exp, "_log": np.log, "_log1p": np.log1p, "_tanh": np.tanh,
               "_softplus": lambda x: np.logaddexp(0.0, x), "_mask": lambda x, c: x * c}


def _indicator(e) -> bool:
    """Piecewise((1, c), (0, True)): the ReLU derivative and other steps."""
    return isinstance(e, sp.Piecewise) and len(e.args) == 2 and e.args[0][0] == 1 and e.args[1] == (0, sp.true)


class KernelPrinter(PythonCodePrinter):
    """Prints scalar expressions for ``@numba.njit`` kernels."""

    def __init__(self, settings=None):
        super().__init__({"fully_qualified_modules": True, "standard": "python3", **(settings or {})})

    def _print_Integer(self, expr):
        return f"{int(expr)}.0"

    def _print_Rational(self, expr):
        return f"({int(expr.p)}.0/{int(expr.q)}.0)"

    def _print_Half(self, expr):
        return "0.5"

    def _print_Float(self, expr):
        return repr(float(expr))

    def _print_Pow(self, expr, rational=False):
        base, exp = expr.as_base_exp()
        if exp.is_Integer and 1 < abs(int(exp)) <= 8:
            s = f"{self.parenthesize(base, sp.printing.precedence.PRECEDENCE['Pow'])}**{int(exp)}"
            return s if exp > 0 else f"(1.0/{s})"
        if exp == -1:
            return f"(1.0/{self.parenthesize(base, sp.printing.precedence.PRECEDENCE['Mul'])})"
        return super()._print_Pow(expr, rational=rational)

    def _print_Mul(self, expr):
        # a product with an indicator: _mask(rest, c), which is rest * c computed as a select (see
        # _mask in derive/kernel_runtime.py: the small network's ReLU backward loop took 0.56 us
        # with the bool multiplying, 0.37 with the select)
        marks = [a for a in expr.args if _indicator(a)]
        if not marks:
            return super()._print_Mul(expr)
        out = self._print(sp.Mul(*[a for a in expr.args if not _indicator(a)]))
        for m in marks:
            out = f"_mask({out}, {self._print(m.args[0][1])})"
        return out

    def _print_Piecewise(self, expr):
        *branches, (last, cond) = expr.args
        if cond != sp.true:
            raise ValueError("a Piecewise must end with a True condition to be printed")
        if _indicator(expr):
            # an indicator outside a product (in one, _print_Mul writes _mask): the condition
            # itself, a bool that counts as 1 or 0 and keeps a float32 operand float32 (1.0 if c
            # else 0.0 made the float32 ReLU backward loop float64)
            return f"({self._print(branches[0][1])})"
        out = self._print(last)
        for e, c in reversed(branches):
            out = f"({self._print(e)} if {self._print(c)} else {out})"
        return out

    def _print_Relational(self, expr):
        op = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}[expr.rel_op]
        return f"({self._print(expr.lhs)} {op} {self._print(expr.rhs)})"

    def _print_And(self, expr):
        return "(" + " and ".join(self._print(a) for a in expr.args) + ")"

    def _print_Or(self, expr):
        return "(" + " or ".join(self._print(a) for a in expr.args) + ")"

    def _print_Not(self, expr):
        return f"(not {self._print(expr.args[0])})"

    def _print_Max(self, expr):
        return self._minmax("max", expr.args)

    def _print_Min(self, expr):
        return self._minmax("min", expr.args)

    def _minmax(self, name: str, args: Iterable[sp.Expr]) -> str:
        args = [self._print(a) for a in args]
        out = args[0]
        for arg in args[1:]:
            out = f"{name}({out}, {arg})"
        return out

    def _print_sign(self, expr):
        x = self._print(expr.args[0])
        return f"(1.0 if {x} > 0.0 else (-1.0 if {x} < 0.0 else 0.0))"

    def _print_Abs(self, expr):
        return f"abs({self._print(expr.args[0])})"

    def _print_exp(self, expr):
        return f"_exp({self._print(expr.args[0])})"

    def _print_log(self, expr):  # SymPy writes log(x, b) as log(x)/log(b): one argument
        return f"_log({self._print(expr.args[0])})"

    def _print_log1p(self, expr):
        return f"_log1p({self._print(expr.args[0])})"

    def _print_tanh(self, expr):
        return f"_tanh({self._print(expr.args[0])})"

    def _print_Softplus(self, expr):
        return f"_softplus({self._print(expr.args[0])})"

    def _print_Sigmoid(self, expr):
        return f"(1.0/(1.0 + _exp({self._print(-expr.args[0])})))"


def print_assignments(lhs: str, expr: sp.Expr, printer: KernelPrinter, tmp_prefix: str = "_t") -> list[str]:
    """Lines computing ``lhs = expr``, with common sub-expressions in numbered temporaries."""
    if isinstance(expr, (Softplus, Sigmoid)) or not isinstance(expr, sp.Expr):
        return [f"{lhs} = {printer.doprint(expr)}"]
    temps, (reduced,) = sp.cse(expr, symbols=sp.numbered_symbols(tmp_prefix))
    lines = [f"{t} = {printer.doprint(e)}" for t, e in temps]
    lines.append(f"{lhs} = {printer.doprint(reduced)}")
    return lines
