"""A small, safe expression language that turns spec text into SymPy expressions.

Spec files write activations, losses and update rules as text, e.g.
``"z * sigmoid(z)"`` or ``"where(z > 0, z, 0.1*z)"``.  :func:`parse` reads such
text with :func:`ast.parse` (``mode="eval"``) and walks the tree against a strict
whitelist, building SymPy objects directly from already-built SymPy objects.

Guarantee: a spec expression can never execute code.  The text is never given to
``eval``, ``exec``, ``compile``, ``sympify``, ``parse_expr`` or ``lambdify``; only
the node types below are accepted, every name is looked up in a fixed table, and
input size, nesting, exponents, numbers and the size of the built expression are
bounded so that no input can hang or exhaust memory.  Anything else raises
:class:`~derive.errors.SpecError` naming the construct and its column.

Grammar (Python syntax, nothing more)::

    expr  := number | name | pi | e | ( expr )
           | expr (+ | - | * | / | **) expr | -expr | +expr
           | f(expr, ...)                  f in FUNCTIONS except `where`
           | where(cond, expr, expr)
    cond  := expr (< | <= | > | >=) expr [(< | <= | > | >=) expr ...]
           | cond and cond | cond or cond | not cond | ( cond )

* Names are the keys of ``variables`` (mapped to their SymPy symbols); they shadow
  the constants ``pi`` and ``e`` (Euler's number).
* Integer literals become :class:`sympy.Integer`.  Float literals become *exact*
  :class:`sympy.Rational` numbers read from the float's shortest round-trip decimal
  (``0.1`` -> ``1/10``, ``1e-3`` -> ``1/1000``), so that ``0.1*z`` differentiates
  to ``1/10`` rather than a binary float.  ``|literal| > 1e300`` is rejected.
* Constants other than rationals, ``pi`` and ``e`` (``sqrt(2)``, ``log(3)``,
  ``2*pi``) are evaluated at once to FLOAT_DIGITS-digit :class:`sympy.Float`:
  SymPy would otherwise decide their signs exactly, which for a sum of nested
  radicals takes hours, and constants above 1e300 (``exp(1e3)``) are rejected.
* ``sigmoid(x)`` -> ``1/(1 + exp(-x))``, ``softplus(x)`` -> ``log(1 + exp(x))``,
  ``log1p(x)`` -> ``log(1 + x)``; ``abs``, ``max``, ``min`` and ``where`` become
  :class:`sympy.Piecewise` (the differentiator and printers handle Piecewise, not
  Abs/Max/Min/Heaviside).
  Piecewise conditions never contain a Piecewise: one inside a condition (as in
  ``max(u, abs(g))``) is lifted out as ``ITE(c, ..., ...)``, so conditions are
  Relationals combined with And/Or/Not/ITE.  (SymPy would otherwise solve the
  inequalities with ``as_set``, which can run for hours; callers should not
  ``subs`` a Piecewise into a condition either.)
* Comparisons, ``and``, ``or`` and ``not`` are allowed only in the condition of
  ``where``; ``0 < z < 1`` means ``And(0 < z, z < 1)``.
* Bounds: text <= MAX_LENGTH characters, syntax tree <= MAX_DEPTH deep and
  <= MAX_NODES nodes (checked before any SymPy object is built); a numeric
  exponent ``|p| <= 100``; no constant above 1e300 or with more than MAX_BITS
  bits; the built expression <= MAX_EXPR_SIZE nodes and <= MAX_EXPR_DEPTH deep;
  undefined, infinite or complex constants (``1/0``, ``log(0)``, ``sqrt(-1)``)
  are rejected.  Any exception SymPy raises becomes a SpecError.
"""

from __future__ import annotations

import ast
import difflib
import io
import keyword
import math
import tokenize
import warnings
from collections.abc import Callable, Mapping

import sympy

from .errors import SpecError, suggest

MAX_LENGTH = 2000  # characters of text
MAX_DEPTH = 50  # nesting of the syntax tree
MAX_NODES = 500  # syntax-tree nodes (operators and contexts not counted)
MAX_EXPONENT = 100  # largest |exponent| when the exponent is a number
MAX_LITERAL = 1e300  # largest |numeric literal|
MAX_BITS = 4096  # largest numerator/denominator of any rational built (|any number| <= MAX_LITERAL)
FLOAT_DIGITS = 30  # precision of constants that are not rational, such as sqrt(2)
MAX_EXPR_SIZE = 5000  # nodes of the built SymPy expression, counted as a tree
MAX_EXPR_DEPTH = 64  # nesting of the built SymPy expression (sympy.diff recurses ~8 frames a level)
MAX_CASES = 64  # branches explored when lifting abs/max/min/where out of conditions


_ONE = sympy.Integer(1)
# name -> (number of arguments, builder); `where` is handled separately.
_BUILDERS: dict[str, tuple[int, Callable[..., sympy.Expr]]] = {
    "atan": (1, sympy.atan),
    "cos": (1, sympy.cos),
    "erf": (1, sympy.erf),
    "exp": (1, sympy.exp),
    "log": (1, sympy.log),
    "log1p": (1, lambda x: sympy.log(sympy.Add(_ONE, x))),
    "sigmoid": (1, lambda x: sympy.Pow(sympy.Add(_ONE, sympy.exp(-x)), -1)),
    "sin": (1, sympy.sin),
    "softplus": (1, lambda x: sympy.log(sympy.Add(_ONE, sympy.exp(x)))),
    "sqrt": (1, sympy.sqrt),
    "tanh": (1, sympy.tanh),
}
# name -> (number of arguments, builder of (a, condition, b) for Piecewise((a, condition), (b, True)))
_BRANCHES: dict[str, tuple[int, Callable[..., tuple[sympy.Expr, sympy.Basic, sympy.Expr]]]] = {
    "abs": (1, lambda x: (x, sympy.Ge(x, 0), -x)),
    "max": (2, lambda a, b: (a, sympy.Ge(a, b), b)),
    "min": (2, lambda a, b: (a, sympy.Le(a, b), b)),
}
FUNCTIONS: tuple[str, ...] = tuple(sorted([*_BUILDERS, *_BRANCHES, "where"]))
_ARITY = {name: n for name, (n, _) in [*_BUILDERS.items(), *_BRANCHES.items()]} | {"where": 3}
_CONSTANTS: dict[str, sympy.Expr] = {"pi": sympy.pi, "e": sympy.E}

_BINARY: dict[type, Callable[[sympy.Expr, sympy.Expr], sympy.Expr]] = {
    ast.Add: lambda a, b: sympy.Add(a, b),
    ast.Sub: lambda a, b: sympy.Add(a, sympy.Mul(-1, b)),
    ast.Mult: lambda a, b: sympy.Mul(a, b),
    ast.Div: lambda a, b: sympy.Mul(a, sympy.Pow(b, -1)),
    ast.Pow: lambda a, b: sympy.Pow(a, b),
}
_COMPARE: dict[type, tuple[str, Callable[[sympy.Expr, sympy.Expr], sympy.Basic]]] = {
    ast.Lt: ("<", sympy.Lt),
    ast.LtE: ("<=", sympy.Le),
    ast.Gt: (">", sympy.Gt),
    ast.GtE: (">=", sympy.Ge),
}
_SYMBOLS = {
    ast.FloorDiv: "//", ast.Mod: "%", ast.MatMult: "@", ast.LShift: "<<",
    ast.RShift: ">>", ast.BitOr: "|", ast.BitXor: "^", ast.BitAnd: "&",
    ast.Invert: "~", ast.Not: "not", ast.And: "and", ast.Or: "or",
    ast.Eq: "==", ast.NotEq: "!=", ast.Is: "is", ast.IsNot: "is not",
    ast.In: "in", ast.NotIn: "not in", **{k: v for k, (v, _) in _COMPARE.items()},
}
_LABELS = {
    ast.Attribute: "attribute access", ast.Subscript: "subscript", ast.Slice: "slice",
    ast.Lambda: "lambda", ast.ListComp: "comprehension", ast.SetComp: "comprehension",
    ast.DictComp: "comprehension", ast.GeneratorExp: "comprehension",
    ast.NamedExpr: "assignment expression ':='", ast.JoinedStr: "f-string",
    ast.FormattedValue: "f-string", ast.Starred: "starred expression",
    ast.IfExp: "conditional expression", ast.Tuple: "tuple",
    ast.List: "list", ast.Set: "set", ast.Dict: "dict", ast.Await: "await",
    ast.Yield: "yield", ast.YieldFrom: "yield",
}
_IGNORED = (ast.expr_context, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)
_UNDEFINED = frozenset({sympy.nan, sympy.zoo, sympy.oo, -sympy.oo, sympy.I})
_EXACT = frozenset({sympy.pi, sympy.E})  # constants kept exact; others become Floats
_LARGEST = 10**300


def parse(text: str, variables: Mapping[str, sympy.Symbol], *, where: str = "expression") -> sympy.Expr:
    """Parse ``text`` into a SymPy expression over ``variables``; raise SpecError if invalid."""
    if not isinstance(text, str):
        raise SpecError(f"an expression must be a string, not {type(text).__name__}", where)
    if len(text) > MAX_LENGTH:
        raise SpecError(f"expression is too long ({len(text)} characters; the limit is {MAX_LENGTH})", where)
    if "#" in text:
        raise SpecError(f"'#' is not allowed at column {text.index('#') + 1}", where)
    flat = text.replace("\r", " ").replace("\n", " ")  # columns count characters of `text`
    body = flat.lstrip()
    lead = len(flat) - len(body)
    if not body.strip():
        raise SpecError("expression is empty", where)
    try:
        with warnings.catch_warnings():  # e.g. SyntaxWarning for '1 is 1', rejected below anyway
            warnings.simplefilter("ignore")
            tree = ast.parse(body, mode="eval")
    except SyntaxError as exc:
        raise SpecError(_syntax_message(exc, body, lead), where) from None
    except (RecursionError, MemoryError, ValueError):
        raise SpecError("expression is too complex to parse", where) from None
    _check_size(tree, where)
    return _Builder(body, lead, variables, where).expr(tree.body)


def _syntax_message(exc: SyntaxError, body: str, lead: int) -> str:
    try:  # name a Python keyword such as 'import' if one is present
        for tok in tokenize.generate_tokens(io.StringIO(body).readline):
            if tok.type == tokenize.NAME and keyword.iskeyword(tok.string) and tok.string not in ("and", "or", "not"):
                return f"{tok.string!r} is not allowed at column {lead + tok.start[1] + 1}"
    except (tokenize.TokenError, SyntaxError, ValueError):
        pass
    if isinstance(exc.offset, int) and exc.offset > 0:
        return f"syntax error at column {lead + exc.offset}: {exc.msg}"
    return f"syntax error{' at the end' if exc.offset == 0 else ''}: {exc.msg}"


def _check_size(tree: ast.Expression, where: str) -> None:
    count, stack = 0, [(tree.body, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, _IGNORED):
            continue
        count += 1
        if depth > MAX_DEPTH:
            raise SpecError(f"expression is nested too deeply (the limit is {MAX_DEPTH} levels)", where)
        if count > MAX_NODES:
            raise SpecError(f"expression has too many parts (the limit is {MAX_NODES})", where)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


class _Builder:
    """Walks a size-checked syntax tree, building SymPy objects for whitelisted nodes only."""

    def __init__(self, body: str, lead: int, variables: Mapping[str, sympy.Symbol], where: str):
        self.body, self.lead, self.variables, self.where = body, lead, variables, where
        self.encoded = body.encode("utf-8")
        self.measures: dict[sympy.Basic, tuple[int, int, bool]] = {}
        self.cases = 0

    def fail(self, node: ast.AST, what: str, after: str = "") -> SpecError:
        offset = getattr(node, "col_offset", 0)
        column = self.lead + len(self.encoded[:offset].decode("utf-8", "ignore")) + 1
        return SpecError(f"{what} at column {column}{after}", self.where)

    def quote(self, node: ast.AST) -> str:
        segment = ast.get_source_segment(self.body, node) or type(node).__name__
        return repr(segment if len(segment) <= 40 else segment[:37] + "...")

    def expr(self, node: ast.expr) -> sympy.Expr:
        try:
            value = self._expr(node)
            if not isinstance(value, sympy.Expr):
                raise self.fail(node, f"{self.quote(node)} is not a numeric expression")
            size, depth, symbolic = self._measure(node, value)
            if not (symbolic or value.is_Rational or value.is_Float or value in _EXACT):
                # Evaluate constants such as sqrt(2) or log(3) now, so that SymPy never decides
                # their sign exactly (for a sum of radicals that can take hours).
                value = value.evalf(FLOAT_DIGITS)
                if not value.is_Float:
                    raise self.fail(node, f"{self.quote(node)} is not a finite real number ({value})")
                size, depth, _ = self._measure(node, value)
        except SpecError:
            raise
        except Exception as exc:  # SymPy and mpmath raise many kinds; none may escape
            raise self.fail(node, f"cannot build {self.quote(node)} ({type(exc).__name__}: {exc})") from None
        if size > MAX_EXPR_SIZE:
            raise self.fail(node, f"{self.quote(node)} expands to more than {MAX_EXPR_SIZE} terms")
        if depth > MAX_EXPR_DEPTH:
            what = f"{self.quote(node)} is nested too deeply once expanded"
            raise self.fail(node, what, f" (more than {MAX_EXPR_DEPTH} levels)")
        return value

    def _measure(self, node: ast.expr, value: sympy.Basic) -> tuple[int, int, bool]:
        """Tree size, depth and whether ``value`` has symbols, visiting each distinct subexpression once.

        Also rejects undefined, infinite or complex constants and oversized numbers.
        """
        known = self.measures.get(value)
        if known is not None:
            return known
        if value in _UNDEFINED:
            raise self.fail(node, f"{self.quote(node)} is undefined, infinite or complex ({value})")
        too_large = f"{self.quote(node)} produces a number that is too large"
        if isinstance(value, sympy.Rational) and abs(value.p) > _LARGEST * value.q:
            raise self.fail(node, too_large, f" (limit {MAX_LITERAL:g})")
        if isinstance(value, sympy.Rational) and max(value.p.bit_length(), value.q.bit_length()) > MAX_BITS:
            raise self.fail(node, f"{self.quote(node)} produces a number with too many digits")
        if isinstance(value, sympy.Float) and not (value.is_finite and abs(value) <= MAX_LITERAL):
            raise self.fail(node, too_large, f" (limit {MAX_LITERAL:g})")
        parts = [self._measure(node, arg) for arg in value.args]
        known = (1 + sum(part[0] for part in parts), 1 + max((part[1] for part in parts), default=0),
                 any(part[2] for part in parts) if parts else bool(getattr(value, "free_symbols", ())))
        self.measures[value] = known
        return known

    def _expr(self, node: ast.expr) -> sympy.Expr:
        if isinstance(node, ast.Constant):
            return self._literal(node)
        if isinstance(node, ast.Name):
            return self._name(node)
        if isinstance(node, ast.BinOp):
            if type(node.op) not in _BINARY:
                raise self.fail(node, f"operator {_SYMBOLS.get(type(node.op), '?')!r} is not allowed")
            left, right = self.expr(node.left), self.expr(node.right)
            if isinstance(node.op, ast.Pow) and right.is_Number and abs(right) > MAX_EXPONENT:
                raise self.fail(node.right, f"exponent {self.quote(node.right)} is too large (limit {MAX_EXPONENT})")
            return _BINARY[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub):
                return sympy.Mul(-1, self.expr(node.operand))
            if isinstance(node.op, ast.UAdd):
                return self.expr(node.operand)
            symbol = _SYMBOLS[type(node.op)]
            if isinstance(node.op, ast.Not):
                raise self.fail(node, "'not' is only allowed in where(...) conditions, found it")
            raise self.fail(node, f"operator {symbol!r} is not allowed")
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, (ast.Compare, ast.BoolOp)):
            op = node.ops[0] if isinstance(node, ast.Compare) else node.op
            symbol = _SYMBOLS.get(type(op), "?")
            raise self.fail(node, f"{symbol!r} is only allowed in the condition of where(cond, a, b), found it")
        label = _LABELS.get(type(node), type(node).__name__)
        hint = "; use where(cond, a, b)" if isinstance(node, ast.IfExp) else ""
        raise self.fail(node, f"{label} {self.quote(node)} is not allowed", hint)

    def _literal(self, node: ast.Constant) -> sympy.Expr:
        value = node.value
        if isinstance(value, bool) or value is None:
            raise self.fail(node, f"literal {value!r} is not allowed")
        if isinstance(value, int):
            if abs(value) > MAX_LITERAL:
                raise self.fail(node, f"number {self.quote(node)} is too large (limit 1e300)")
            return sympy.Integer(value)
        if isinstance(value, float):
            if not math.isfinite(value) or abs(value) > MAX_LITERAL:
                raise self.fail(node, f"number {self.quote(node)} is too large (limit 1e300)")
            return sympy.Rational(repr(value))  # exact: 0.1 -> 1/10
        kinds = {str: "string", bytes: "bytes", complex: "complex number"}
        kind = kinds.get(type(value), type(value).__name__)
        raise self.fail(node, f"{kind} literal {self.quote(node)} is not allowed")

    def _name(self, node: ast.Name) -> sympy.Expr:
        if node.id in self.variables:
            return self.variables[node.id]
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        if node.id in _ARITY:
            raise self.fail(node, f"function {node.id!r} must be called as {node.id}(...), found it")
        valid = {*self.variables, *_CONSTANTS}
        raise self.fail(node, f"unknown name {node.id!r}", suggest(node.id, valid))

    def _call(self, node: ast.Call) -> sympy.Expr:
        # a parenthesized name, as in '(f)(x)', starts after the call does
        if not isinstance(node.func, ast.Name) or node.func.col_offset != node.col_offset:
            callee = f"({node.func.id})" if isinstance(node.func, ast.Name) else self.quote(node.func)[1:-1]
            raise self.fail(node, f"calling {callee!r} is not allowed; only named functions can be called")
        name = node.func.id
        if name not in _ARITY:
            close = difflib.get_close_matches(name, FUNCTIONS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "."
            what = f"{name!r} is not a function" if name in self.variables else f"function {name!r} is not allowed"
            raise self.fail(node, what, f"{hint} Allowed functions: {', '.join(FUNCTIONS)}.")
        if node.keywords:
            kw = node.keywords[0]
            label = repr(f"{kw.arg}=" if kw.arg else "**")
            raise self.fail(kw, f"keyword argument {label} is not allowed in {name}(...)")
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise self.fail(arg, f"starred argument {self.quote(arg)} is not allowed")
        if len(node.args) != _ARITY[name]:
            raise self.fail(node, f"{name}(...) takes {_ARITY[name]} argument(s), got {len(node.args)}")
        if name == "where":
            cond = self.cond(node.args[0])
            return self.piecewise(node, self.expr(node.args[1]), cond, self.expr(node.args[2]))
        args = [self.expr(arg) for arg in node.args]
        if name in _BRANCHES:
            return self.piecewise(node, *_BRANCHES[name][1](*args))
        return _BUILDERS[name][1](*args)

    def piecewise(self, node: ast.expr, a: sympy.Expr, cond: sympy.Basic, b: sympy.Expr) -> sympy.Expr:
        if sum(self._measure(node, part)[0] for part in (a, cond, b)) > MAX_EXPR_SIZE:
            raise self.fail(node, f"{self.quote(node)} expands to more than {MAX_EXPR_SIZE} terms")
        return sympy.Piecewise((a, self.lift(node, cond)), (b, True))

    def lift(self, node: ast.expr, cond: sympy.Basic) -> sympy.Basic:
        """Rewrite a condition containing Piecewise as ITE(c, ...) over Piecewise-free ones.

        SymPy would otherwise rewrite it with ``as_set``, i.e. solve inequalities, which
        can run for hours (e.g. ``where(abs(z**100 - 3*z**37) > 1, z, 0)``).
        """
        pieces = cond.atoms(sympy.Piecewise)
        if not pieces:
            self.cases += 1
            if self.cases > MAX_CASES:
                what = f"{self.quote(node)} nests abs/max/min/where too deeply in conditions"
                raise self.fail(node, what, f" (more than {MAX_CASES} cases)")
            return cond
        # outermost first (the largest), so that nested Piecewise vanish without being rebuilt
        piece = min(pieces, key=lambda p: (-self._measure(node, p)[0], sympy.default_sort_key(p)))
        result: sympy.Basic = sympy.false  # Piecewise without a True branch is undefined
        for expr, c in reversed(piece.args):
            result = sympy.ITE(c, self.lift(node, cond.xreplace({piece: expr})), result)
        return result

    def cond(self, node: ast.expr) -> sympy.Basic:
        """The condition of where(...): comparisons joined by and/or/not."""
        try:
            return self._cond(node)
        except SpecError:
            raise
        except Exception as exc:  # as in expr()
            raise self.fail(node, f"cannot build condition {self.quote(node)} ({type(exc).__name__}: {exc})") from None

    def _cond(self, node: ast.expr) -> sympy.Basic:
        if isinstance(node, ast.BoolOp):
            parts = [self.cond(value) for value in node.values]
            return sympy.And(*parts) if isinstance(node.op, ast.And) else sympy.Or(*parts)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return sympy.Not(self.cond(node.operand))
        if not isinstance(node, ast.Compare):
            raise self.fail(node, f"the condition of where(...) must be a comparison such as 'z > 0', "
                            f"not {self.quote(node)},")
        for op in node.ops:
            if type(op) not in _COMPARE:
                raise self.fail(node, f"comparison {_SYMBOLS.get(type(op), '?')!r} is not allowed "
                                "(use <, <=, >, >=)")
        operands = [self.expr(node.left), *(self.expr(c) for c in node.comparators)]
        return sympy.And(*(_COMPARE[type(op)][1](a, b) for op, a, b in zip(node.ops, operands, operands[1:])))
